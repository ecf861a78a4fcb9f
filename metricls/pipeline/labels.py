"""Living labels: add, update and remove the labels of a built tagger, as functions of its state.

A label is a prototype (one row of `prototypes`, one vector of the prototype index) plus a
column of the item-label matrix behind the neighbour vote (and, for a reranker that reads
TF-IDF, a row of the TF-IDF prototypes, made from the same texts). Adding a label appends the
normalised mean of its embeddings (its examples', or zero-shot its own text's) as the
prototype, at id L. Removing one deletes its row and column everywhere and shifts the later
ids down by one; the prototype index is rebuilt with the same parameters, since HNSW and ScaNN
cannot remove vectors and a flat index that removes would keep the old ids. Examples that a
label brought into the item index leave it with the label; training items stay.

Each function takes a `TaggerState` and returns a new one, and never changes its input: every
index it adds to is copied first. `Tagger.add_label`, `update_label` and `remove_label` embed
the examples and swap the result in. No module here imports `Tagger`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from metricls.ann import AnnIndex, make_index
from metricls.config import DataConfig
from metricls.data.dataset import read_config_items
from metricls.data.items import Items, read_texts
from metricls.data.labels import LabelVocab
from metricls.errors import ArtifactError, InputError
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tfidf import TfidfPrototypes
from metricls.prototypes import normalize_rows
from metricls.validation import check_texts, describe

MODES = ("replace", "merge")


def check_name(name: Any) -> str:
    """A label name: a non-empty string, no surrounding spaces, valid Unicode (no lone
    surrogates, which no file can hold)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"name: expected a non-empty label name without surrounding spaces, "
                         f"got {describe(name)}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"name: {name!r} is not valid Unicode (a lone surrogate); "
                         "expected a label name that can be written as UTF-8") from None
    return name


def add_label(state: TaggerState, name: str, label_emb: np.ndarray, example_emb: np.ndarray,
              texts: list[str], *, add_items: bool,
              description: str | None = None) -> TaggerState:
    """`state` with label `name` added as the new last id.

    Args:
        state: the tagger's state.
        name: a new label name.
        label_emb: (m, d) embeddings whose normalised mean is the prototype (the examples',
            and the label's own text's when it has one).
        example_emb: (m', d) the examples' embeddings alone (m' may be 0).
        texts: the texts among the examples and the label text (its TF-IDF prototype).
        add_items: also add the examples to the item index, carrying only this label, so the
            neighbour vote can return it.
        description: the label's description, kept in `state.descriptions` (None: as it is).

    Raises:
        InputError: a name that exists or is not a valid name.
    """
    name = check_name(name)
    if name in state.vocab:
        raise InputError(f"label {name!r} already exists (id {state.vocab.index(name)}); use "
                         "update_label to change it")
    L = len(state.vocab)
    Y = sp.hstack([state.item_labels, sp.csr_matrix((state.item_labels.shape[0], 1))],
                  format="csr", dtype=np.float32)
    prototypes = np.vstack([state.prototypes, _mean(label_emb)])
    return _commit(state, state.vocab.with_label(name, len(example_emb)), prototypes, Y,
                   _marked(_label_lists(state, append=True), L, L + 1),
                   new_items=example_emb if add_items else None, label=L, appended=True,
                   tfidf=_tfidf(state, texts), described=(name, description))


def update_label(state: TaggerState, name: str, label_emb: np.ndarray, example_emb: np.ndarray,
                 texts: list[str], *, mode: str, add_items: bool,
                 description: str | None = None) -> tuple[TaggerState, int]:
    """`state` with label `name`'s prototype re-made, and its id.

    Args:
        state, label_emb, example_emb, texts, add_items, description: as in `add_label`
            (`name` must exist).
        mode: "replace": the label is defined by the new examples alone (prototype = their
            normalised mean, no item carries it any more unless `add_items` adds the examples,
            so examples it brought before leave the item index, and its tuned threshold falls
            back to the global one); "merge": the old prototype counts as its `count` examples
            (prototype = normalise(count * old + sum of the new embeddings)), the rest stays.
    """
    check_mode(mode)
    i = state.vocab.index(check_name(name))
    prototypes, counts = state.prototypes.copy(), state.vocab.counts.copy()
    tfidf = _tfidf(state, texts, row=i, old_weight=0 if mode == "replace" else counts[i])
    Y, per_label = state.item_labels, _label_lists(state)
    if mode == "replace":
        prototypes[i], counts[i] = _mean(label_emb)[0], len(example_emb)
        keep = np.ones(Y.shape[1], dtype=np.float32)
        keep[i] = 0.0
        Y = sp.csr_matrix(Y @ sp.diags(keep))
        Y.eliminate_zeros()
        per_label = _label_lists(state, reset=i)
    else:
        prototypes[i] = _mean(counts[i] * prototypes[i][None]
                              + label_emb.sum(axis=0, keepdims=True))[0]
        counts[i] += len(example_emb)
    vocab = LabelVocab(state.vocab.names, counts, state.vocab.n_items)
    return _commit(state, vocab, prototypes, Y, _marked(per_label, i, len(prototypes)),
                   new_items=example_emb if add_items else None, label=i, appended=False,
                   tfidf=tfidf, described=(name, description)), i


def remove_label(state: TaggerState, name: str) -> tuple[TaggerState, int]:
    """`state` without label `name`, and the id it had; later ids shift down by one.

    Its prototype, column of the item-label matrix, per-label threshold and learned bias, and
    vocabulary entry go; the prototype index is rebuilt with the same parameters. The
    examples it brought into the item index go too; training items stay.
    """
    name = check_name(name)
    if len(state.vocab) == 1 and name in state.vocab:
        raise InputError(f"label {name!r} is the tagger's only label; a tagger needs at least one")
    vocab, i = state.vocab.without_label(name)
    keep = np.arange(len(state.vocab)) != i
    tfidf = None if state.tfidf is None else dataclasses.replace(
        state.tfidf, centroids=state.tfidf.centroids[keep])
    return _commit(state, vocab, state.prototypes[keep], state.item_labels[:, keep],
                   _label_lists(state, drop=i), new_items=None, label=None, appended=False,
                   tfidf=tfidf), i


def check_mode(mode: Any) -> str:
    """An update mode: "replace" or "merge"."""
    if mode not in MODES:
        raise InputError(f"mode: expected one of {list(MODES)}, got {describe(mode)}")
    return mode


def read_examples(path: str | Path, data: DataConfig, *, texts_only: bool) -> list[str] | Items:
    """Examples from a file: texts (`read_texts`: one per line, or a table's ``text`` field,
    else the `data` text columns) for a tagger that reads texts alone, else the items of a
    table read with the `data` column mapping."""
    if texts_only:
        return read_texts(path, data.text_columns)
    return read_config_items(data, path, require_labels=False)


# ---- helpers ----------------------------------------------------------------------------------
def _tfidf(state: TaggerState, texts: list[str], *, row: int | None = None,
           old_weight: int = 0) -> TfidfPrototypes | None:
    """The TF-IDF prototypes with `texts` making a new last row (`row` None) or row `row`,
    where the old row counts as `old_weight` texts (0: replaced), as `_mean` does."""
    if state.tfidf is None:
        return None
    C = state.tfidf.centroids
    new = state.tfidf.prototype(texts)  # a zero row without texts
    if row is None:
        return state.tfidf.with_centroids(sp.vstack([C, new]))
    new = new + old_weight * C[row]
    return state.tfidf.with_centroids(sp.vstack([C[:row], new, C[row + 1:]]))


def _mean(emb: np.ndarray) -> np.ndarray:
    """(1, d) normalised mean of (m, d) embeddings: a prototype."""
    return normalize_rows(emb.mean(axis=0, keepdims=True))


def check_examples(examples: Any) -> Items | np.ndarray | list[str]:
    """Examples as given: Items, an array, or a checked non-empty list of texts."""
    if isinstance(examples, (Items, np.ndarray)):
        found = examples
    elif isinstance(examples, (str, bytes)):
        raise InputError(f"examples: pass a list of texts, e.g. [text], got a bare "
                         f"{type(examples).__name__}")
    else:
        found = check_texts(examples, name="examples")
    if len(found) == 0:
        raise InputError("examples: expected at least one example, got none (pass "
                         "examples=None for a zero-shot label)")
    return found


def _fallback_threshold(state: TaggerState) -> float:
    """The threshold of a label without tuned data: the global one (else the median)."""
    s = state.scoring
    return float(s.threshold if s.threshold is not None else np.median(s.label_thresholds))


def _fallback_bias(state: TaggerState) -> float:
    """The learned bias of a label made from examples: the median of the trained ones."""
    return float(np.median(state.scoring.label_bias))


# The Scoring fields holding one value per label, and the value a label without its own gets
# (a label made after training is then marked by `_marked`).
_PER_LABEL_FALLBACKS = {"label_thresholds": _fallback_threshold, "label_bias": _fallback_bias,
                        "label_added": lambda state: 0.0}

def _marked(per_label: dict[str, list[float]], label: int,
            n_labels: int) -> dict[str, list[float]]:
    """`per_label` with `label` marked as made after training (`Scoring.label_added`)."""
    added = list(per_label["label_added"]) or [0.0] * n_labels
    added[label] = 1.0
    return per_label | {"label_added": added}


def _label_lists(state: TaggerState, *, append: bool = False, reset: int | None = None,
                 drop: int | None = None) -> dict[str, list[float]]:
    """Copies of the scoring's per-label lists (tuned thresholds, learned biases) with a new
    last label's fallback appended, label `reset` set back to its fallback, or label `drop`
    removed; a list that is empty (never tuned, never learned) stays empty."""
    lists = {}
    for key, fallback in _PER_LABEL_FALLBACKS.items():
        values = list(getattr(state.scoring, key))
        if values:
            if append:
                values.append(fallback(state))
            if reset is not None:
                values[reset] = fallback(state)
            if drop is not None:
                del values[drop]
        lists[key] = values
    return lists


def _commit(state: TaggerState, vocab: LabelVocab, prototypes: np.ndarray,
            item_labels: sp.csr_matrix, per_label: dict[str, list[float]], *,
            new_items: np.ndarray | None, label: int | None, appended: bool,
            tfidf: TfidfPrototypes | None,
            described: tuple[str, str | None] | None = None) -> TaggerState:
    """The new state: every check on user input has passed by now.

    `per_label` replaces the scoring's per-label lists (see `_label_lists`); `new_items`
    (m, d) join the item index carrying only `label`; examples left without a label leave it;
    `appended`: the only new prototype is the last row (added to a copy of the index), else
    the prototype index is rebuilt; `tfidf` replaces the TF-IDF prototypes; `described`:
    (label, description) to record (a None description leaves the known one).
    """
    item_index, item_labels, item_ids = _without_orphans(state, sp.csr_matrix(item_labels))
    if new_items is not None and len(new_items):
        rows = sp.csr_matrix((np.ones(len(new_items), np.float32),
                              (np.arange(len(new_items)), np.full(len(new_items), label))),
                             shape=(len(new_items), len(vocab)))
        if item_ids is not None:
            item_ids = (*item_ids, *_example_ids(item_ids, vocab.names[label], len(new_items)))
        item_labels = sp.vstack([item_labels, rows], format="csr", dtype=np.float32)
        item_index = _appended(item_index, new_items, "items")
    descriptions = dict(state.descriptions)
    if described is not None and described[1] is not None:
        descriptions[described[0]] = described[1]
    n_items = vocab.n_items + item_labels.shape[0] - state.item_labels.shape[0]
    return state.replace(
        vocab=LabelVocab(vocab.names, vocab.counts, n_items), prototypes=prototypes,
        proto_index=(_appended(state.proto_index, prototypes[-1:], "prototypes") if appended
                     else _rebuilt(state.proto_index, prototypes)),
        item_index=item_index, item_labels=item_labels, tfidf=tfidf,
        scoring=dataclasses.replace(state.scoring, **per_label), item_ids=item_ids,
        descriptions=descriptions)


def _example_ids(ids: tuple[str, ...], name: str, n: int) -> list[str]:
    """Ids for `n` new examples of label `name`: "NAME#example-N", numbered on from the
    label's examples already indexed."""
    prefix = f"{name}#example-"
    taken = [int(i[len(prefix):]) for i in ids if i.startswith(prefix)
             and i[len(prefix):].isdigit()]
    start = max(taken, default=-1) + 1
    return [f"{prefix}{start + j}" for j in range(n)]


def _without_orphans(state: TaggerState, item_labels: sp.csr_matrix
                     ) -> tuple[AnnIndex, sp.csr_matrix, tuple[str, ...] | None]:
    """The item index, labels and ids without the examples (rows past `trained_items`) that
    carry no label any more; the index is rebuilt only when some go."""
    added = np.arange(item_labels.shape[0]) >= state.trained_items
    orphans = added & (np.diff(item_labels.indptr) == 0)
    if not orphans.any():
        return state.item_index, item_labels, state.item_ids
    keep = np.flatnonzero(~orphans)
    ids = None if state.item_ids is None else tuple(state.item_ids[i] for i in keep)
    return (_rebuilt(state.item_index, state.item_index.reconstruct()[keep]), item_labels[keep],
            ids)


def _appended(index: AnnIndex, vectors: np.ndarray, what: str) -> AnnIndex:
    """A copy of `index` with rows added, whose ids must continue the row positions (the
    tagger's id invariant); `index` itself is left as it was."""
    index = index.copy()
    start = index.ntotal
    ids = index.add(vectors)
    if not np.array_equal(ids, np.arange(start, start + len(vectors))):
        raise ArtifactError(f"the {what} index numbers new vectors {ids[:3].tolist()}..., not "
                            f"from {start}: its ids are not row positions; rebuild the tagger")
    return index


def _rebuilt(index: AnnIndex, vectors: np.ndarray) -> AnnIndex:
    """A new index of the same backend and parameters over `vectors` (ids = positions)."""
    fresh = make_index(index.backend, index.dim, **index.params)
    fresh.build(vectors)
    return fresh


def change_record(op: str, name: str, n_examples: int, description: str | None,
                  add_items: bool, started_from: list[str] | None = None) -> dict:
    """The manifest record of an add or update (`started_from`: the ids of the training items
    a zero-shot label started from, when any)."""
    record = {"op": op, "label": name, "source": "examples" if n_examples else "zero-shot",
              "examples": n_examples, "description": description,
              "add_items": bool(add_items and n_examples)}
    return record | ({"started_from": list(started_from)} if started_from else {})
