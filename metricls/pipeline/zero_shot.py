"""A label from its text alone: the training items the text finds stand in for its examples.

The trained embedding space was shaped by the training labels; a label it never saw has no
region of its own, and the embedding of its name and description lands where short texts
about it lie, not among its items. A frozen text encoder (MiniLM) was never trained on the
labels, so it relates a label's text to the items' texts as well for a new label as for a
trained one. So zero-shot, the `index.zero_shot_examples` (10) training items nearest the
label's text in the frozen encoder's space (`TaggerState.item_frozen`) stand in for examples:
the prototype is the normalised mean of their trained embeddings plus `TEXT_WEIGHT` times the
label text's own.
The label's TF-IDF prototype stays that of its text, and the items get no label.

Debtags, 50 labels held out of training and added back from name and description
(benchmarks/fewshot, the default config): held-out R@10 on valid 0.39 from the text's
embedding alone, 0.56 with 10 pseudo-examples at weight 0.5 (P@5 over all labels 0.4570 and
0.4551, as with the labels left out); test 0.41 -> 0.58. On valid, weight 1 gave R@10 0.54,
20 pseudo-examples 0.53, the trained space's nearest items 0.44 (36% of its 5 nearest carry
the label, against 46% in MiniLM's); pseudo-examples' texts as the TF-IDF prototype 0.59 but
P@5 0.4529, and the folder does not keep the training texts.
"""

from __future__ import annotations

import numpy as np

from metricls.pipeline.state import TaggerState
from metricls.prototypes import normalize_rows

TEXT_WEIGHT = 0.5  # the label text's embedding against the pseudo-examples' mean (norm <= 1)


def pseudo_examples(item_frozen: np.ndarray, text_frozen: np.ndarray, m: int) -> np.ndarray:
    """Row numbers of the `m` items of `item_frozen` (n, f) nearest `text_frozen` (f,), by
    cosine (both unit rows), best first."""
    sims = np.asarray(item_frozen @ np.asarray(text_frozen, dtype=item_frozen.dtype), np.float32)
    m = min(m, len(sims))
    if m <= 0:
        return np.zeros(0, np.int64)
    best = np.argpartition(-sims, m - 1)[:m]
    return best[np.argsort(-sims[best], kind="stable")]


def prototype(example_vectors: np.ndarray, text_emb: np.ndarray,
              text_weight: float = TEXT_WEIGHT) -> np.ndarray:
    """(d,) unit prototype: the mean of the pseudo-examples' embeddings plus `text_weight`
    times the label text's embedding (the text's alone when there are none)."""
    if len(example_vectors) == 0:
        return normalize_rows(np.asarray(text_emb, dtype=np.float32)[None, :])[0]
    mean = np.asarray(example_vectors, dtype=np.float32).mean(axis=0)
    return normalize_rows((mean + text_weight * text_emb)[None, :].astype(np.float32))[0]


def from_text(state: TaggerState, text_frozen: np.ndarray, text_emb: np.ndarray,
              m: int) -> tuple[np.ndarray, list[str]]:
    """(d,) the prototype of a label made from its text alone (`prototype` of the `m` trained
    items nearest the text in `state.item_frozen`), and the ids of those items (their data
    ids; "#row" for a folder without them).

    Args:
        text_frozen: (f,) the label text in the frozen encoder's space.
        text_emb: (d,) the label text's trained embedding.
    """
    rows = pseudo_examples(state.item_frozen, text_frozen, m)
    ids = [state.item_ids[r] if state.item_ids is not None else f"#{r}" for r in rows]
    return prototype(state.item_index.reconstruct_rows(rows), text_emb), ids
