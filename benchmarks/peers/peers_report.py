"""The peers benchmark's markdown table and plot, from its JSON result."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from metricls.artifacts import write_bytes

# (column title, row -> value, higher is better, format)
COLUMNS: list[tuple[str, Any, bool, str]] = [
    *[(key.replace("_", " "), lambda r, key=key: r["metrics"][key], True, "{:.4f}")
      for key in ("P@1", "P@3", "P@5", "R@10", "nDCG@5", "PSP@5", "macro_R@10")],
    ("train s", lambda r: r["train_s"], False, "{:,.1f}"),
    ("items/s", lambda r: r["items_per_s"], True, "{:,.0f}"),
    ("items/s from features", lambda r: r["items_per_s_from_features"], True, "{:,.0f}"),
]


def markdown_table(result: dict[str, Any]) -> str:
    """One row per method, the best value of each column in bold, then notes."""
    rows = result["rows"]
    best = [(max if higher else min)(get(r) for r in rows) for _, get, higher, _ in COLUMNS]
    lines = ["| method | " + " | ".join(column[0] for column in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for r in rows:
        cells = [f"**{fmt.format(get(r))}**" if get(r) == top else fmt.format(get(r))
                 for (_, get, _, fmt), top in zip(COLUMNS, best)]
        lines.append(f"| {r['description']} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *_notes(result)])


def _notes(result: dict[str, Any]) -> list[str]:
    data, machine = result["data"], result["machine"]
    notes = [f"Test split of `{data['source']}`: {data['n_test']:,} items, {data['n_labels']} "
             f"labels (train {data['n_train']:,}, valid {data['n_valid']:,})"
             f"{', quick subset' if data['quick'] else ''}; {machine['cpus']} CPUs, "
             f"{machine['platform']}. Every method's top-{result['k']} ids are scored by "
             "`metricls.evaluation.ranking_metrics`.",
             "items/s: from raw texts to top-10 labels (TF-IDF transform or encoding "
             "included); from features: from TF-IDF rows or embeddings (prediction, or search "
             "and scoring, only). train s: fitting on train, choosing on valid not included "
             "(TF-IDF fit included; a reused metricls tagger: its recorded training, index "
             "building not included)."]
    encoded = [r for r in result["rows"] if r["settings"].get("backbone", {}).get("name")
               == "minilm"]
    if encoded:
        rate = result["data"]["n_test"] / encoded[0]["featurize_s"]
        notes.append(f"Frozen MiniLM embeddings of train and valid come from metricls's on-disk "
                     f"cache and are not in train s; MiniLM encodes {rate:,.0f} texts/s here.")
    for r in result["rows"]:
        chosen = r["settings"].get("chosen")
        if chosen is not None:
            notes.append(f"{r['name']}: chosen on valid {_short(chosen)} from "
                         f"{len(r['settings']['grid'])} settings.")
    return [f"- {n}" for n in notes]


def _short(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in setting.items())


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """The table and notes as a markdown file (atomically)."""
    write_bytes(path, (markdown_table(result) + "\n").encode("utf-8"))


def write_plot(result: dict[str, Any], path: Path) -> None:
    """P@5 and PSP@5 bars per method, and P@5 against end-to-end items/s (log x)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = result["rows"]
    names = [r["name"] for r in rows]
    fig, (bars, speed) = plt.subplots(1, 2, figsize=(12, 4.5))
    y = range(len(rows))
    for offset, key in ((-0.2, "P@5"), (0.2, "PSP@5")):
        bars.barh([i + offset for i in y], [r["metrics"][key] for r in rows], height=0.4,
                  label=key)
    bars.set(yticks=list(y), yticklabels=names, xlabel="test score", xlim=(0, 1))
    bars.invert_yaxis()
    bars.legend(loc="lower right")
    for r in rows:
        speed.scatter(r["items_per_s"], r["metrics"]["P@5"])
        speed.annotate(r["name"], (r["items_per_s"], r["metrics"]["P@5"]), fontsize=8,
                       xytext=(4, 4), textcoords="offset points")
    speed.set(xscale="log", xlabel="items/s, texts to labels", ylabel="P@5")
    speed.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
