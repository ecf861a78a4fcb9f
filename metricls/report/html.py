"""index.html of an evaluation report: one self-contained page (inline CSS, relative PNG links,
no script), rendered from the report's JSON content."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from metricls.evaluation import REPORT_KEYS
from metricls.report.plots import PALETTE

CSS = """
body { margin: 0; background: #f5f6f8; color: #1d2329;
       font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 0 0 6px; }
.sub { color: #58626d; margin: 0 0 6px; }
section { background: #fff; border: 1px solid #dfe2e6; border-radius: 6px;
          padding: 14px 18px; margin: 14px 0; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; align-items: start; }
.map { grid-template-columns: 3fr 2fr; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption, .note { font-size: 12.5px; color: #58626d; margin-top: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eceef1; text-align: right; }
th { background: #f0f2f5; }
th:first-child, td:first-child, th.name { text-align: left; }
td.name { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; text-align: left;
          word-break: break-all; }
.metrics td, .metrics th { font-size: 14px; }
.metrics td { font-weight: 600; }
.facts td { text-align: left; font-size: 12px; }
.swatch { display: inline-block; width: 11px; height: 11px; margin-right: 6px;
          vertical-align: -1px; border-radius: 2px; }
pre { font-size: 11.5px; background: #f3f4f6; padding: 8px 10px; margin: 0; overflow: auto;
      columns: 3; }
"""


def render_html(report: dict, folder: Path, config_text: str) -> str:
    """The page for `report` (the report.json content) whose PNGs are already in `folder`."""
    m = report["metrics"]
    labels, swaps, group_map = report["labels"], report["swaps"], report["map"]
    fig = {key: (folder, name) for key, name in report["figures"].items()}
    heads = [*REPORT_KEYS, "items", "items/s"]
    values = [f"{m[key]:.4f}" for key in REPORT_KEYS] + [
        str(m["n_items"]), f"{m['timings']['items_per_s']:.1f}"]
    unknown = (f"{m['n_unknown_labels']} labels ({m['n_unknown_assignments']} assignments) of "
               f"these items are unknown to the tagger and count as misses."
               if m["n_unknown_labels"] else "Every label of these items is known to the tagger.")
    body = f"""
<h1>{escape(report["title"])}</h1>
<p class="sub">Tagger <code>{escape(report["tagger"])}</code> on
<code>{escape(report["data"])}</code>, split <b>{escape(report["split"])}</b>
({m["n_items"]} items), written {escape(report["created"])}.</p>
<section><h2>Metrics</h2>
<table class="metrics">{_rows([heads], [values])}</table>
<p class="note">Ranking metrics of the top-10 tags; macro_R@10 is the mean over labels of
their recall@10. {escape(unknown)}</p></section>
<section class="grid">
{_figure(*fig["curves"], "P@k and R@k against k",
          "Precision and recall of the top k tags, k = 1..10.")}
{_figure(*fig["buckets"], "recall@10 by label frequency bucket",
          "Labels ranked by training items and cut into thirds (head, torso, tail); micro: "
          "share of the true (item, label) pairs found in the top 10; macro: mean of the "
          "labels' recall@10.")}
</section>
<section class="grid">
<div><h3>Worst labels: lowest recall@10</h3>{_label_table(labels["worst"])}</div>
<div><h3>Best labels: highest recall@10</h3>{_label_table(labels["best"])}</div>
<p class="note">Among the {labels["n_eligible"]} labels with at least
{labels["min_support"]} test items (of {labels["n_with_test_items"]} with any).</p>
</section>
<section><h2>Often swapped labels</h2><div class="grid">
<div>{_swap_table(swaps["pairs"])}<p class="note">Items where the true label on the left was
missed while the label on the right was shown in its place: each item's first n tags are read,
n = its number of true labels (at most 10).</p></div>
{_figure(*fig["swaps"], "heatmap of swapped labels",
          "The same counts for the most often missed (rows) and wrongly shown (columns) "
          "labels.")}</div></section>
<section><h2>Embedding space</h2><div class="grid map">
{_figure(*fig["map"], "2-D map of the embedding space",
          f"{group_map['n_points']} of {group_map['n_items']} items in the first two principal "
          f"axes of their embeddings (PCA by SVD), coloured by {group_map['colour_by']}; "
          "crosses: every label prototype, projected on the same axes; stars: the prototypes "
          "of the coloured labels.")}
<div>{_group_table(group_map["groups"])}</div></div></section>
<section class="grid"><div><h2>Time per stage</h2>{_timings(m["timings"], m["n_items"])}</div>
<div><h2>Tagger</h2>{_manifest_table(report["manifest"])}</div></section>
<section><h2>Config</h2><pre>{escape(config_text)}</pre></section>
"""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<title>{escape(report["title"])}</title>\n<style>{CSS}</style></head>\n'
            f"<body><main>{body}</main></body></html>\n")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, read from its IHDR chunk."""
    head = path.read_bytes()[:24]
    return struct.unpack(">II", head[16:24])


def _figure(folder: Path, name: str, alt: str, caption: str) -> str:
    """A <figure> of the PNG `name` in `folder`, with its pixel size and a caption."""
    width, height = png_size(folder / name)
    return (f'<figure><img src="{escape(name)}" alt="{escape(alt)}" width="{width}" '
            f'height="{height}"><figcaption>{escape(caption)}</figcaption></figure>')


def _rows(heads: Sequence[Sequence[str]], rows: Sequence[Sequence[Any]], names: int = 0) -> str:
    """Table rows: header rows, then body rows whose first `names` cells are label names."""
    head = "".join("<tr>" + "".join(f'<th class="name">{escape(str(h))}</th>' if i < names
                                    else f"<th>{escape(str(h))}</th>" for i, h in enumerate(row))
                   + "</tr>" for row in heads)
    body = "".join(
        "<tr>" + "".join((f'<td class="name">{escape(str(v))}</td>' if i < names
                          else f"<td>{escape(str(v))}</td>") for i, v in enumerate(row))
        + "</tr>" for row in rows)
    return head + body


def _label_table(rows: list[dict]) -> str:
    table = [[r["label"], r["test_items"], r["train_items"], f"{r['recall']:.3f}"] for r in rows]
    return f"<table>{_rows([['label', 'test items', 'train items', 'R@10']], table, 1)}</table>"


def _swap_table(pairs: list[dict]) -> str:
    table = [[p["missed"], p["predicted"], p["items"]] for p in pairs]
    heads = [["missed true label", "shown instead", "items"]]
    return f"<table>{_rows(heads, table, 2)}</table>"


def _group_table(groups: list[dict]) -> str:
    rows = "".join(f'<tr><td class="name"><span class="swatch" style="background:'
                   f'{PALETTE[i % len(PALETTE)]}"></span>{escape(g["name"])}</td>'
                   f'<td>{g["items"]}</td><td>{g["coloured"]}</td></tr>'
                   for i, g in enumerate(groups))
    heads = [["colour group", "items with it", "coloured so"]]
    return (f"<table>{_rows(heads, [], 1)}{rows}</table><p class='note'>An item with several "
            "of these labels takes the colour of the most common one.</p>")


def _timings(t: dict, n_items: int) -> str:
    rows = [["embed (encoding included)", f"{t['embed_s']:.3f}"],
            ["search and score (both indexes, top 10)", f"{t['search_score_s']:.3f}"],
            ["total", f"{t['total_s']:.3f}"]]
    note = (f"{n_items} items, {t['items_per_s']:.1f} items/s end to end"
            + (" (cached frozen encodings)" if t.get("cached_encoding") else ""))
    return f"<table>{_rows([['stage', 'seconds']], rows)}</table><p class='note'>{note}</p>"


def _manifest_table(summary: dict) -> str:
    rows = [[key, value] for key, value in summary.items()]
    return f"<table class='facts'>{_rows([['manifest', '']], rows)}</table>"
