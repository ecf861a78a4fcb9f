"""The report's figures as PNG files, drawn on matplotlib's Agg canvas (no display, no pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metricls.report.analysis import Groups

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # lazy: matplotlib is the `plots` extra

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png", dpi=DPI)  # a bare Figure renders with the Agg canvas


def plot_curves(path: Path, ks: list[int], precision: list[float], recall: list[float]) -> None:
    """P@k and R@k against k, one panel each."""
    fig = _figure(6.0, 3.0)
    for ax, values, name, colour in zip(fig.subplots(1, 2), (precision, recall), ("P@k", "R@k"),
                                        PALETTE):
        ax.plot(ks, values, marker="o", color=colour)
        for k, v in zip(ks, values):
            if k in (1, 5, 10):
                ax.annotate(f"{v:.3f}", (k, v), textcoords="offset points", xytext=(0, 7),
                            ha="right" if k == ks[-1] else "center", fontsize=8)
        ax.set(xlabel="k", ylabel=name, title=f"{name} against k", xticks=ks, ylim=(0, 1.12))
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_buckets(path: Path, buckets: list[dict]) -> None:
    """Micro and macro recall@10 per label-frequency bucket, as grouped bars."""
    fig = _figure(6.0, 3.0)
    ax = fig.subplots()
    x = np.arange(len(buckets))
    for shift, key, colour, name in ((-0.2, "micro_recall", PALETTE[0], "micro (assignments)"),
                                     (0.2, "macro_recall", PALETTE[1], "macro (labels)")):
        bars = ax.bar(x + shift, [b[key] for b in buckets], width=0.4, color=colour, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, [f"{b['bucket']}\n{b['labels']} labels, train "
                      f"{b['train_items_min']}-{b['train_items_max']}" for b in buckets],
                  fontsize=8)
    ax.set(ylabel="recall@10", ylim=(0, 1.3), title="recall@10 by label frequency")
    ax.legend(loc="upper center", ncols=2, fontsize=8)
    _save(fig, path)


def plot_swaps(path: Path, heatmap: dict) -> None:
    """Heatmap of items where a true label (row) was missed and a wrong one (column) shown."""
    counts = np.asarray(heatmap["items"], dtype=float).reshape(len(heatmap["missed"]),
                                                               len(heatmap["predicted"]))
    fig = _figure(6.0, 6.0)
    ax = fig.subplots()
    if counts.size == 0:
        ax.text(0.5, 0.5, "no swapped labels", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            dark = n > counts.max() / 2
            ax.text(j, i, f"{n:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(counts.shape[1]), heatmap["predicted"], rotation=50, ha="right",
                  rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(counts.shape[0]), heatmap["missed"], fontsize=8)
    ax.set(xlabel="wrongly predicted label", ylabel="missed true label")
    fig.colorbar(image, ax=ax, shrink=0.6, label="items")
    _save(fig, path)


def plot_map(path: Path, points: np.ndarray, groups: Groups, protos: np.ndarray,
             proto_names: list[str], shares: list[float]) -> None:
    """Test items in the first two principal axes coloured by group; prototypes as stars.

    Args:
        points: (n, 2) item coordinates; `groups.of_item` gives each one's group (-1: none).
        protos: (m, 2) prototype coordinates; `proto_names` their labels (all vocabulary).
    """
    fig = _figure(7.5, 7.0)
    ax = fig.subplots()
    rest = groups.of_item < 0
    ax.scatter(points[rest, 0], points[rest, 1], s=4, color="#c8c8c8", label="other",
               rasterized=True)
    ax.scatter(protos[:, 0], protos[:, 1], s=8, marker="x", color="#555555", linewidths=0.6,
               label="label prototypes")
    where = {name: i for i, name in enumerate(proto_names)}
    for g, name in enumerate(groups.names):
        colour = PALETTE[g % len(PALETTE)]
        mine = groups.of_item == g
        ax.scatter(points[mine, 0], points[mine, 1], s=6, color=colour, alpha=0.7,
                   label=f"{name} ({int(mine.sum())})", rasterized=True)
        if name in where:
            x, y = protos[where[name]]
            ax.scatter([x], [y], s=220, marker="*", color=colour, edgecolors="black",
                       linewidths=0.8, zorder=5)
    ax.set(xlabel=f"PC 1 ({shares[0]:.1%} of variance)",
           ylabel=f"PC 2 ({shares[1]:.1%} of variance)",
           title=f"items by {groups.title}; stars: those labels' prototypes")
    ax.legend(fontsize=7, markerscale=2, loc="upper center", bbox_to_anchor=(0.5, -0.1),
              ncols=3)
    _save(fig, path)
