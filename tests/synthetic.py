"""Generated multi-label data for tests: texts whose words reveal their labels, plus vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_items(n_items: int = 600, n_labels: int = 20, dim: int = 8, seed: int = 0) -> list[dict]:
    """Items with 1-3 labels each (power-law label frequencies), a text and a vector.

    Each label owns 4 words; an item's text mixes words of its labels with shared noise
    words, and its vector is the sum of its labels' random centres plus noise.
    """
    rng = np.random.default_rng(seed)
    words = [[f"w{label}x{j}" for j in range(4)] for label in range(n_labels)]
    noise = [f"noise{j}" for j in range(30)]
    centres = rng.normal(size=(n_labels, dim))
    freq = 1.0 / np.arange(1, n_labels + 1) ** 0.8
    freq /= freq.sum()
    items = []
    for i in range(n_items):
        labels = sorted(set(rng.choice(n_labels, size=rng.integers(1, 4), p=freq).tolist()))
        text = [w for label in labels for w in rng.choice(words[label], 2, replace=False)]
        text += rng.choice(noise, 4).tolist()
        rng.shuffle(text)
        vec = centres[labels].sum(axis=0) + 0.3 * rng.normal(size=dim)
        items.append({"id": f"item{i}", "text": " ".join(text),
                      "labels": [f"facet{label % 3}::tag{label}" for label in labels],
                      "vec": [round(float(v), 5) for v in vec]})
    return items


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path
