"""write_report: evaluate a tagger folder on labelled items and write an HTML report folder."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from metricls.artifacts import read_json, write_json
from metricls.config import dump_config
from metricls.data.items import Items, shown_path
from metricls.evaluation import Tagged, evaluate_tagged, ranking_metrics
from metricls.manifest import MANIFEST
from metricls.metrics import label_recall_at_k
from metricls.outputs import check_output
from metricls.progress import progress
from metricls.report import analysis, plots
from metricls.report.html import render_html
from metricls.runner import load_for_evaluation
from metricls.staging import staged_dir
from metricls.tagger import Tagger
from metricls.validation import check_k

KS = tuple(range(1, 11))
DEPTH = 10  # ranking depth of every table and figure (recall@10)
MAP_POINTS = 5000  # items drawn on the 2-D map at most (a fixed random sample beyond that)
FIGURES = {"curves": "curves.png", "buckets": "buckets.png", "swaps": "swaps.png",
           "map": "map.png"}


def write_report(tagger_dir: str | Path, *, data: str | None = None, split: str = "test",
                 out: str | Path | None = None, min_support: int = 10,
                 facet: str | None = None, overwrite: bool = False) -> Path:
    """Evaluate a tagger folder and write ``index.html``, its PNG figures and ``report.json``.

    The folder is staged beside `out` and swapped in only when complete. Its metrics are those
    of `metricls.runner.evaluate_folder` on the same data and split.

    Args:
        tagger_dir: a built tagger folder.
        data: a labelled file with the tagger's column mapping, or "debtags" (default: the
            tagger's training data).
        split: "test", "valid", "train" or "all".
        out: the report folder (default ``<tagger_dir>-report``); an existing folder is
            replaced only if it holds a previous report, and only with `overwrite`.
        min_support: test items a label needs to enter the worst / best label tables.
        facet: the `facet::value` facet colouring the embedding map (default: the most
            informative one; the most frequent labels when labels have no facets).

    Returns:
        The report folder.

    Example:
        >>> write_report("index/debtags", data="debtags", split="test", out="docs/report")
    """
    tagger_dir, name = Path(tagger_dir), Path(tagger_dir).resolve().name
    out = Path(out) if out is not None else tagger_dir.resolve().with_name(f"{name}-report")
    min_support = check_k(min_support, "min_support")
    check_output(out, "report", overwrite=overwrite, inputs=(tagger_dir,))
    tagger, items = load_for_evaluation(tagger_dir, data=data, split=split)
    groups = analysis.colour_groups(items.labels, facet=facet)  # a bad --facet fails fast
    metrics, tagged = evaluate_tagged(tagger, items, k=DEPTH, keep_embeddings=True)
    metrics["split"] = split
    content = _content(tagger, items, tagged, metrics, min_support)
    content |= {"title": f"metricls report: {name} on {Path(items.source).name}, "
                         f"{split} split",
                "tagger": str(tagger_dir), "manifest": _manifest_summary(tagger_dir)}
    draw = _drawings(tagger, tagged, items.labels, groups, content)
    with staged_dir(out, lambda: check_output(out, "report", overwrite=overwrite,
                                              inputs=(tagger_dir,))) as tmp:
        for file, plot in progress(draw, desc="report", total=len(draw)):
            plot(tmp / file)
        write_json(tmp / "report.json", content)
        page = render_html(content, tmp, dump_config(tagger.config))
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out


def _content(tagger: Tagger, items: Items, tagged: Tagged, metrics: dict,
             min_support: int) -> dict:
    """The report.json body (without the tagger path and manifest)."""
    vocab = tagger.vocab
    Y, unknown = vocab.to_csr(items.labels, extend_unknown=True)
    names = [*vocab.names, *unknown]
    support, found = label_recall_at_k(tagged.ids, Y, DEPTH)
    curves = ranking_metrics(tagged.ids, items.labels, vocab, ks=KS)
    rows = analysis.label_rows(names, support, found, vocab.counts)
    worst, best = analysis.worst_and_best(rows, min_support=min_support, top=15)
    return {
        "data": shown_path(items.source), "split": metrics["split"],
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "metrics": metrics,
        "curves": {"k": list(KS), "P@k": [curves[f"P@{k}"] for k in KS],
                   "R@k": [curves[f"R@{k}"] for k in KS]},
        "buckets": analysis.frequency_buckets(vocab.counts, support, found),
        "labels": {"k": DEPTH, "min_support": min_support, "n_with_test_items": len(rows),
                   "n_eligible": sum(r["test_items"] >= min_support for r in rows),
                   "worst": worst, "best": best},
        "swaps": analysis.swapped_pairs(tagged.ids, Y, names),
        "figures": dict(FIGURES)}


def _drawings(tagger: Tagger, tagged: Tagged, labels: list[list[str]], groups: analysis.Groups,
              content: dict) -> list[tuple[str, Callable[[Path], None]]]:
    """(file name, draw) per figure; also records the map's description in `content`."""
    points, protos, shares = analysis.pca_2d(tagged.embeddings, tagger.prototypes)
    n = len(points)
    pick = np.arange(n) if n <= MAP_POINTS else np.sort(
        np.random.default_rng(0).choice(n, MAP_POINTS, replace=False))
    shown = analysis.Groups(groups.title, groups.names, groups.of_item[pick])
    content["map"] = {"colour_by": groups.title, "n_items": n, "n_points": len(pick),
                      "explained_variance": shares,
                      "groups": [{"name": g, "items": sum(g in row for row in labels),
                                  "coloured": int((groups.of_item == i).sum())}
                                 for i, g in enumerate(groups.names)]}
    curves, names = content["curves"], list(tagger.vocab.names)
    return [
        (FIGURES["curves"], lambda p: plots.plot_curves(p, curves["k"], curves["P@k"],
                                                        curves["R@k"])),
        (FIGURES["buckets"], lambda p: plots.plot_buckets(p, content["buckets"])),
        (FIGURES["swaps"], lambda p: plots.plot_swaps(p, content["swaps"]["heatmap"])),
        (FIGURES["map"], lambda p: plots.plot_map(p, points[pick], shown, protos, names,
                                                  shares))]


def _manifest_summary(folder: Path) -> dict[str, str]:
    """The tagger manifest's main facts, one line each."""
    manifest = read_json(folder / MANIFEST)
    data, build = manifest.get("data", {}), manifest.get("build", {})
    return {"format": manifest.get("format", "?"), "created": manifest.get("created", "?"),
            "versions": _brief(manifest.get("versions", {})), "data": _brief(data),
            "backend": _brief({k: v for k, v in build.items() if k in ("backend", "prototypes")}),
            **{f"ANN {name}": _brief(info) for name, info in build.get("ann", {}).items()},
            "scoring": _brief(build.get("scoring", {})),
            "valid metrics": _brief(manifest.get("metrics", {}).get("valid", {}))}


def _brief(d: dict[str, Any]) -> str:
    """`key value, ...` with nested dicts flattened and floats at 4 digits."""
    parts = []
    for key, value in d.items():
        if isinstance(value, dict):
            parts.append(_brief({f"{key}.{k}": v for k, v in value.items()}))
        else:
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)
