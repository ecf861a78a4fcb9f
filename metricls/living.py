"""Living labels: add, update and remove labels of a built tagger in memory, then save it.

A label is a prototype (one row of `prototypes`, one vector of the prototype index) plus a
column of the item-label matrix behind the neighbour vote (and, for a reranker that reads
TF-IDF, a row of the TF-IDF prototypes, made from the same texts). Adding a label embeds its
examples (texts, feature rows or Items) and appends their normalised mean as the prototype, at id L;
zero-shot, the label's own text (a description, else its name as words) is embedded instead.
Removing one deletes its row and column everywhere and shifts the later ids down by one; the
prototype index is rebuilt with the same parameters, since HNSW and ScaNN cannot remove vectors
and a flat index that removes would keep the old ids. Training items stay in the item index.

The `Tagger` methods `add_label`, `update_label`, `remove_label` and `save` call these.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from metricls.ann import AnnIndex, make_index
from metricls.artifacts import read_json, save_tensors, staged_dir, write_manifest
from metricls.data.dataset import read_config_items
from metricls.data.items import Items, read_texts
from metricls.data.labels import LabelVocab
from metricls.errors import ArtifactError, InputError
from metricls.formats import LABEL_VECTORS_FORMAT
from metricls.prototypes import normalize_rows, read_label_vectors
from metricls.tfidf import TfidfPrototypes
from metricls.validation import check_texts, describe

if TYPE_CHECKING:
    from metricls.tagger import Tagger

log = logging.getLogger(__name__)
MODES = ("replace", "merge")
# manifest keys write_manifest sets itself
_MANIFEST_OWN = ("format", "created", "versions", "data", "metrics", "files", "manifest_sha256")


def label_text(name: str) -> str:
    """A label name as words for zero-shot embedding: "works-with::image" -> "works with image"."""
    return " ".join(re.sub(r"[:_\-/]+", " ", name).split())


def add_label(tagger: Tagger, name: str, examples: Any = None, *, description: str | None = None,
              add_items: bool = True) -> int:
    """Add label `name` to `tagger` (in memory) and return its id (the new last id).

    Args:
        tagger: the tagger to change.
        name: a new label name.
        examples: texts (list of str), an (n, d) array for a features backbone, or Items;
            None for a zero-shot label.
        description: a text for the label, embedded as one more example; without examples
            it alone makes the (zero-shot) prototype, and without either the name is used
            (`label_text`). Needs a text backbone.
        add_items: also add the examples to the item index, carrying only this label, so the
            neighbour vote can return it (the default: a prototype alone gets only the
            `blend` share of the score; on debtags, `metricls bench fewshot` measured held-out
            R@10 +0.000 at 1 shot, +0.000/+0.006 at 5, +0.013/+0.009 at 20, default/lexical).

    Raises:
        InputError: a name that exists or is not a non-empty string, an empty or malformed
            `examples`, a description a features-only tagger cannot embed.
    """
    name = _check_name(name)
    if name in tagger.vocab:
        raise InputError(f"label {name!r} already exists (id {tagger.vocab.index(name)}); use "
                         "update_label to change it")
    emb, example_emb, texts = _embed(tagger, name, examples, description)
    L = len(tagger.vocab)
    Y = sp.hstack([tagger.item_labels, sp.csr_matrix((tagger.item_labels.shape[0], 1))],
                  format="csr", dtype=np.float32)
    _commit(tagger, tagger.vocab.with_label(name, len(example_emb)),
            np.vstack([tagger.prototypes, _mean(emb)]), Y, _label_lists(tagger, append=True),
            new_items=example_emb if add_items else None, label=L, appended=True,
            tfidf=_tfidf(tagger, texts))
    tagger.label_changes.append(_change("add", name, example_emb, description, add_items))
    return L


def update_label(tagger: Tagger, name: str, examples: Any = None, *,
                 description: str | None = None, mode: str = "replace",
                 add_items: bool = True) -> int:
    """Change the prototype of label `name` (in memory) from new examples; return its id.

    Args:
        tagger, name, examples, description, add_items: as in `add_label` (`name` must exist).
        mode: "replace": the label is defined by the new examples alone (prototype = their
            normalised mean, no training item carries it any more unless `add_items` adds
            the examples, and its tuned threshold falls back to the global one); "merge": the
            old prototype counts as its `count` examples (prototype = normalise(count * old +
            sum of the new embeddings)) and everything else stays.
    """
    if mode not in MODES:
        raise InputError(f"mode: expected one of {list(MODES)}, got {describe(mode)}")
    i = tagger.vocab.index(_check_name(name))
    emb, example_emb, texts = _embed(tagger, name, examples, description)
    prototypes, counts = tagger.prototypes.copy(), tagger.vocab.counts.copy()
    tfidf = _tfidf(tagger, texts, row=i, old_weight=0 if mode == "replace" else counts[i])
    Y, per_label = tagger.item_labels, _label_lists(tagger)
    if mode == "replace":
        prototypes[i], counts[i] = _mean(emb)[0], len(example_emb)
        keep = np.ones(Y.shape[1], dtype=np.float32)
        keep[i] = 0.0
        Y = sp.csr_matrix(Y @ sp.diags(keep))
        Y.eliminate_zeros()
        per_label = _label_lists(tagger, reset=i)
    else:
        prototypes[i] = _mean(counts[i] * prototypes[i][None] + emb.sum(axis=0, keepdims=True))[0]
        counts[i] += len(example_emb)
    vocab = LabelVocab(tagger.vocab.names, counts, tagger.vocab.n_items)
    _commit(tagger, vocab, prototypes, Y, per_label,
            new_items=example_emb if add_items else None, label=i, appended=False, tfidf=tfidf)
    tagger.label_changes.append(_change(f"update:{mode}", name, example_emb, description,
                                        add_items))
    return i


def remove_label(tagger: Tagger, name: str) -> int:
    """Remove label `name` (in memory) and return the id it had; later ids shift down by one.

    Its prototype, column of the item-label matrix, per-label threshold and learned bias,
    and vocabulary entry go; the prototype index is rebuilt with the same parameters.
    Training items stay indexed.
    """
    name = _check_name(name)
    if len(tagger.vocab) == 1 and name in tagger.vocab:
        raise InputError(f"label {name!r} is the tagger's only label; a tagger needs at least one")
    vocab, i = tagger.vocab.without_label(name)
    keep = np.arange(len(tagger.vocab)) != i
    tfidf = None if tagger.tfidf is None else dataclasses.replace(
        tagger.tfidf, centroids=tagger.tfidf.centroids[keep])
    _commit(tagger, vocab, tagger.prototypes[keep], tagger.item_labels[:, keep],
            _label_lists(tagger, drop=i), new_items=None, label=None, appended=False, tfidf=tfidf)
    tagger.label_changes.append({"op": "remove", "label": name})
    return i


def read_examples(tagger: Tagger, path: str | Path) -> list[str] | Items:
    """Examples for `tagger` from a file: texts (`read_texts`: one per line, or a table's
    ``text`` field, else the tagger's text columns), or for a tagger reading feature vectors,
    the items of a table with the tagger's column mapping."""
    if tagger.model.needs == {"texts"}:
        return read_texts(path, tagger.config.data.text_columns)
    return read_config_items(tagger.config.data, path, require_labels=False)


def save_tagger(tagger: Tagger, folder: str | Path) -> Path:
    """Write `tagger` as a whole tagger folder atomically (temp folder, manifest last, swap).

    From the folder it was loaded from (`tagger.origin`, when it still exists) it carries the
    manifest's data summary and build report, ``training.json``, the model card and the
    learned label vectors (rows kept by name; a label added since gets its prototype); the
    manifest's ``label_changes`` lists every change made since the build.
    """
    folder = Path(folder)
    origin = tagger.origin if tagger.origin is not None and tagger.origin.is_dir() else None
    old = read_json(origin / "manifest.json") if origin else {}
    changes = [*old.get("label_changes", []), *tagger.label_changes]
    extra = {k: v for k, v in old.items() if k not in _MANIFEST_OWN} | {"label_changes": changes}
    with staged_dir(folder) as tmp:
        tagger.write(tmp)
        if origin and (origin / "training.json").is_file():
            shutil.copy2(origin / "training.json", tmp / "training.json")
        if origin and (origin / "label_vectors.safetensors").is_file():
            tensors = {"label_vectors": _label_vectors(tagger, origin)}
            if tagger.scoring.label_bias:
                tensors["label_bias"] = tagger.scoring.bias_array
            save_tensors(tmp / "label_vectors.safetensors", tensors,
                         {"format": LABEL_VECTORS_FORMAT})
        card = (origin / "README.md").read_text() if origin and (origin / "README.md").is_file() \
            else f"# metricls tagger `{tagger.config.name}`\n"
        (tmp / "README.md").write_text(_card(card, changes))
        write_manifest(tmp, data=old.get("data", {}), metrics=tagger.metrics, extra=extra)
    tagger.origin, tagger.label_changes = folder, []
    return folder


# ---- helpers ----------------------------------------------------------------------------------
def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"name: expected a non-empty label name without surrounding spaces, "
                         f"got {describe(name)}")
    return name


def _embed(tagger: Tagger, name: str, examples: Any,
           description: str | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(m, d) embeddings of the examples and the label text, those of the examples alone, and
    the texts among them (for the TF-IDF prototypes)."""
    d = tagger.model.out_dim
    example_emb = np.zeros((0, d), dtype=np.float32)
    texts: list[str] = []
    if examples is not None:
        try:
            found = _check_examples(examples)
            example_emb = tagger.embed(found)
            texts = list(tagger._inputs(found)[0] or [])  # none for feature rows
        except InputError as exc:  # the tagger names its argument "inputs"
            raise InputError("examples" + str(exc).removeprefix("inputs")) from None
    if description is None and examples is not None:
        return example_emb, example_emb, texts
    text = label_text(name) if description is None else description
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"description: expected a non-empty text, got {describe(text)}")
    if tagger.model.needs != {"texts"}:
        raise InputError("description: this tagger reads feature vectors and cannot embed a "
                         "label text; give examples as an (n, d) array")
    log.info("label %r: embedding the text %r", name, text)
    return np.vstack([example_emb, tagger.embed([text])]), example_emb, [*texts, text]


def _tfidf(tagger: Tagger, texts: list[str], *, row: int | None = None,
           old_weight: int = 0) -> TfidfPrototypes | None:
    """The tagger's TF-IDF prototypes with `texts` making a new last row (`row` None) or row
    `row`, where the old row counts as `old_weight` texts (0: replaced), as `_mean` does."""
    if tagger.tfidf is None:
        return None
    C = tagger.tfidf.centroids
    new = tagger.tfidf.prototype(texts)  # a zero row without texts
    if row is None:
        return tagger.tfidf.with_centroids(sp.vstack([C, new]))
    new = new + old_weight * C[row]
    return tagger.tfidf.with_centroids(sp.vstack([C[:row], new, C[row + 1:]]))


def _mean(emb: np.ndarray) -> np.ndarray:
    """(1, d) normalised mean of (m, d) embeddings: a prototype."""
    return normalize_rows(emb.mean(axis=0, keepdims=True))


def _check_examples(examples: Any) -> Items | np.ndarray | list[str]:
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


def _fallback_threshold(tagger: Tagger) -> float:
    """The threshold of a label without tuned data: the global one (else the median)."""
    s = tagger.scoring
    return float(s.threshold if s.threshold is not None else np.median(s.label_thresholds))


def _fallback_bias(tagger: Tagger) -> float:
    """The learned bias of a label made from examples: the median of the trained ones."""
    return float(np.median(tagger.scoring.label_bias))


# The Scoring fields holding one value per label, and the value a label without its own gets.
_PER_LABEL_FALLBACKS = {"label_thresholds": _fallback_threshold, "label_bias": _fallback_bias}


def _label_lists(tagger: Tagger, *, append: bool = False, reset: int | None = None,
                 drop: int | None = None) -> dict[str, list[float]]:
    """Copies of the scoring's per-label lists (tuned thresholds, learned biases) with a new
    last label's fallback appended, label `reset` set back to its fallback, or label `drop`
    removed; a list that is empty (never tuned, never learned) stays empty."""
    lists = {}
    for key, fallback in _PER_LABEL_FALLBACKS.items():
        values = list(getattr(tagger.scoring, key))
        if values:
            if append:
                values.append(fallback(tagger))
            if reset is not None:
                values[reset] = fallback(tagger)
            if drop is not None:
                del values[drop]
        lists[key] = values
    return lists


def _commit(tagger: Tagger, vocab: LabelVocab, prototypes: np.ndarray,
            item_labels: sp.csr_matrix, per_label: dict[str, list[float]], *,
            new_items: np.ndarray | None, label: int | None, appended: bool,
            tfidf: TfidfPrototypes | None) -> None:
    """Swap the new label state into `tagger`: every check on user input has passed by now.

    `per_label` replaces the scoring's per-label lists (see `_label_lists`); `new_items`
    (m, d) join the item index carrying only `label`; `appended`: the only new prototype is the
    last row (added to the index), else the prototype index is rebuilt; `tfidf` replaces the
    TF-IDF prototypes.
    """
    if new_items is not None and len(new_items):
        rows = sp.csr_matrix((np.ones(len(new_items), np.float32),
                              (np.arange(len(new_items)), np.full(len(new_items), label))),
                             shape=(len(new_items), len(vocab)))
        item_labels = sp.vstack([item_labels, rows], format="csr", dtype=np.float32)
        _append(tagger.item_index, new_items, "items")
        vocab = LabelVocab(vocab.names, vocab.counts, vocab.n_items + len(new_items))
    if appended:
        _append(tagger.proto_index, prototypes[-1:], "prototypes")
    else:
        tagger.proto_index = _rebuilt(tagger.proto_index, prototypes)
    tagger.vocab = vocab
    tagger.prototypes = np.ascontiguousarray(prototypes, dtype=np.float32)
    tagger.item_labels = sp.csr_matrix(item_labels, dtype=np.float32)
    tagger.scoring = dataclasses.replace(tagger.scoring, **per_label)
    tagger.tfidf = tfidf


def _append(index: AnnIndex, vectors: np.ndarray, what: str) -> None:
    """Add rows whose ids must continue the row positions (the tagger's id invariant)."""
    start = index.ntotal
    ids = index.add(vectors)
    if not np.array_equal(ids, np.arange(start, start + len(vectors))):
        raise ArtifactError(f"the {what} index numbers new vectors {ids[:3].tolist()}..., not "
                            f"from {start}: its ids are not row positions; rebuild the tagger")


def _rebuilt(index: AnnIndex, vectors: np.ndarray) -> AnnIndex:
    """A new index of the same backend and parameters over `vectors` (ids = positions)."""
    fresh = make_index(index.backend, index.dim, **index.params)
    fresh.build(vectors)
    return fresh


def _label_vectors(tagger: Tagger, origin: Path) -> np.ndarray:
    """The origin's learned label vectors by name; a label added since gets its prototype."""
    learned, _ = read_label_vectors(origin / "label_vectors.safetensors", None,
                                    tagger.model.out_dim)
    names = read_json(origin / "labels.json").get("labels", [])
    row = {n: j for j, n in enumerate(names) if j < len(learned)}
    return np.stack([learned[row[n]] if n in row else tagger.prototypes[i]
                     for i, n in enumerate(tagger.vocab.names)]).astype(np.float32)


def _change(op: str, name: str, example_emb: np.ndarray, description: str | None,
            add_items: bool) -> dict:
    """The manifest record of an add or update."""
    n = len(example_emb)
    return {"op": op, "label": name, "source": "examples" if n else "zero-shot",
            "examples": n, "description": description, "add_items": bool(add_items and n)}


def _card(card: str, changes: list[dict]) -> str:
    """The model card with its label-change section (re)written at the end."""
    head = card.split("\n## Label changes\n")[0].rstrip("\n")
    if not changes:
        return head + "\n"
    rows = "\n".join(f"- {c['op']} `{c['label']}`" + ("" if "source" not in c else
                                                       f" ({c['examples']} examples)"
                                                       if c["examples"] else " (zero-shot)")
                     for c in changes)
    return f"{head}\n\n## Label changes\n\nMade after the build, in order:\n\n{rows}\n"
