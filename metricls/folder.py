"""The tagger folder: which files it holds, what is in each, and how it is written and read.

This module alone knows the layout; training, build-index, label edits and `Tagger.save` /
`Tagger.load` go through it. A tagger is a folder (like a sentence-transformers model):

    manifest.json              written last: versions, data summary, metrics, sha256 of every file
    config.json                the resolved config
    labels.json                label names and training counts (label id = position)
    encoder/                   the embedding model (EmbeddingModel: config + weights)
    label_vectors.safetensors  the learned label vectors (and biases)   } written by training,
    training.json              the training history                      } kept by the build
    prototypes.safetensors     (L, d) prototypes, one per label
    item_labels.safetensors    (n_items, L) CSR labels of the indexed items
    ann/prototypes/, ann/items/  the two ANN indexes (backend.json + the backend's files)
    scoring.json               the scoring tuned on valid
    reranker.safetensors       the reranker's trees (when build-index kept one)
    added_reranker.safetensors the few-shot reranker's trees (for labels added later)
    tfidf.safetensors          the TF-IDF label prototypes (text taggers)
    item_ids.json              {"ids": the id of each indexed item (row of item_labels)}
    descriptions.json          {label: description} from the label table and label edits
    item_frozen.safetensors    the trained items in the frozen text encoder's space (float16),
                               where zero-shot labels find their pseudo-examples
    README.md                  the model card

Every safetensors file carries a format tag (`metricls.formats`), checked at load with every
shape, index and value (`read_tagger`). Writes are atomic and hold the folder's lock
(`staging.staged_dir`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metricls.ann import load_index
from metricls.artifacts import read_json, save_tensors, write_json
from metricls.config import Config, from_dict, to_dict
from metricls.data.labels import LabelVocab
from metricls.encoders.model import EmbeddingModel
from metricls.errors import ArtifactError, NotFittedError
from metricls.formats import (
    CSR_FORMAT,
    FROZEN_ITEMS_FORMAT,
    LABEL_VECTORS_FORMAT,
    PROTOTYPES_FORMAT,
    RERANKER_FORMAT,
    TFIDF_FORMAT,
    check_array,
    check_csr,
    read_tensors,
    read_tensors_and_meta,
    remedy,
)
from metricls.manifest import check_folder, write_manifest
from metricls.outputs import check_output
from metricls.pipeline.rerank import FEATURES, Reranker
from metricls.pipeline.scoring import Scoring
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tfidf import TfidfPrototypes
from metricls.prototypes import read_label_vectors, read_prototypes
from metricls.staging import staged_dir

CONFIG, LABELS, ENCODER, CARD = "config.json", "labels.json", "encoder", "README.md"
LABEL_VECTORS, TRAINING = "label_vectors.safetensors", "training.json"
PROTOTYPES, ITEM_LABELS, SCORING = ("prototypes.safetensors", "item_labels.safetensors",
                                    "scoring.json")
RERANKER, TFIDF = "reranker.safetensors", "tfidf.safetensors"
ADDED_RERANKER = "added_reranker.safetensors"
ITEM_IDS, DESCRIPTIONS = "item_ids.json", "descriptions.json"
ITEM_FROZEN = "item_frozen.safetensors"
PROTO_INDEX, ITEM_INDEX = "ann/prototypes", "ann/items"
FROM_TRAINING = (LABEL_VECTORS, TRAINING)  # what build-index keeps of the trained folder
# manifest keys write_manifest sets itself
_MANIFEST_OWN = ("format", "created", "versions", "data", "metrics", "files", "manifest_sha256")


# ---- writing ------------------------------------------------------------------------------------
def write_trained(folder: Path, *, config: Config, vocab: LabelVocab, model: EmbeddingModel,
                  label_vectors: np.ndarray, label_bias: np.ndarray | None, training: dict,
                  data: dict, metrics: dict, check: Callable[[], object] | None = None) -> None:
    """Write what training made (config, labels, encoder, label vectors, history) as a tagger
    folder that build-index then completes; atomically, `check` run first under its lock."""
    with staged_dir(folder, check) as tmp:
        write_json(tmp / CONFIG, to_dict(config))
        write_json(tmp / LABELS, vocab.to_dict())
        model.save(tmp / ENCODER)
        tensors = {"label_vectors": label_vectors}
        if label_bias is not None:
            tensors["label_bias"] = label_bias
        save_tensors(tmp / LABEL_VECTORS, tensors, {"format": LABEL_VECTORS_FORMAT})
        write_json(tmp / TRAINING, training)
        write_manifest(tmp, data=data, metrics=metrics)


def write_built(folder: Path, *, config: Config, model: EmbeddingModel, state: TaggerState,
                data: dict, metrics: dict, report: dict, card: str) -> None:
    """Write a built tagger over its trained `folder`, keeping what training wrote there
    (`FROM_TRAINING`); atomically."""
    with staged_dir(folder, lambda: check_output(folder, "tagger", in_place=True)) as tmp:
        for name in FROM_TRAINING:
            if (folder / name).exists():
                shutil.copy2(folder / name, tmp / name)
        write_parts(tmp, config=config, model=model, state=state)
        (tmp / CARD).write_text(card)
        write_manifest(tmp, data=data, metrics=metrics, extra={"build": report})


def write_edited(folder: Path, *, config: Config, model: EmbeddingModel, state: TaggerState,
                 metrics: dict, origin: Path | None, changes: list[dict]) -> dict:
    """Write a tagger whose labels were edited since it was loaded from `origin` (None: made in
    memory); atomically. From the origin it carries the manifest's data summary and build
    report, the training history, the model card and the learned label vectors (rows kept by
    name; a label added since gets its prototype); the manifest's ``label_changes`` lists
    every edit since the build (`changes`: those made since `origin` was written). Returns
    the new manifest."""
    old = read_json(origin / "manifest.json") if origin else {}
    changes = [*old.get("label_changes", []), *changes]
    extra = {k: v for k, v in old.items() if k not in _MANIFEST_OWN}
    with staged_dir(folder) as tmp:
        write_parts(tmp, config=config, model=model, state=state)
        if origin and (origin / TRAINING).is_file():
            shutil.copy2(origin / TRAINING, tmp / TRAINING)
        if origin and (origin / LABEL_VECTORS).is_file():
            tensors = {"label_vectors": _label_vectors(origin, state)}
            if state.scoring.label_bias:
                tensors["label_bias"] = state.scoring.bias_array
            save_tensors(tmp / LABEL_VECTORS, tensors, {"format": LABEL_VECTORS_FORMAT})
        card = (origin / CARD).read_text() if origin and (origin / CARD).is_file() \
            else f"# metricls tagger `{config.name}`\n"
        (tmp / CARD).write_text(card_with_changes(card, changes))
        return write_manifest(tmp, data=old.get("data", {}), metrics=metrics,
                              extra=extra | {"label_changes": changes})


def write_parts(folder: Path, *, config: Config, model: EmbeddingModel,
                state: TaggerState) -> None:
    """Every file of a built tagger but the manifest, the card and what training wrote."""
    write_json(folder / CONFIG, to_dict(config))
    write_json(folder / LABELS, state.vocab.to_dict())
    model.save(folder / ENCODER)
    save_tensors(folder / PROTOTYPES, {"prototypes": state.prototypes,
                                       "counts": state.vocab.counts.astype(np.int64)},
                 {"format": PROTOTYPES_FORMAT})
    Y = state.item_labels
    save_tensors(folder / ITEM_LABELS,
                 {"indptr": Y.indptr.astype(np.int64), "indices": Y.indices.astype(np.int64),
                  "shape": np.array(Y.shape, dtype=np.int64)},
                 {"format": CSR_FORMAT, "trained_rows": str(state.trained_items)})
    state.proto_index.save(folder / PROTO_INDEX)
    state.item_index.save(folder / ITEM_INDEX)
    write_json(folder / SCORING, state.scoring.to_dict())
    for name, trees in ((RERANKER, state.reranker), (ADDED_RERANKER, state.added_reranker)):
        if trees is not None:
            save_tensors(folder / name, trees.to_tensors(),
                         {"format": RERANKER_FORMAT, "features": ",".join(FEATURES)})
    if state.tfidf is not None:
        save_tensors(folder / TFIDF, state.tfidf.to_tensors(), {"format": TFIDF_FORMAT})
    if state.item_ids is not None:
        write_json(folder / ITEM_IDS, {"ids": list(state.item_ids)})
    if state.descriptions:
        write_json(folder / DESCRIPTIONS, dict(state.descriptions))
    if state.item_frozen is not None:
        save_tensors(folder / ITEM_FROZEN, {"vectors": state.item_frozen},
                     {"format": FROZEN_ITEMS_FORMAT})


def model_card(config: Config, dim: int, data: dict, report: dict, metrics: dict) -> str:
    """The folder's README.md at build time: data, config and valid metrics."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.get("valid", {}).items())
    return (f"# metricls tagger `{config.name}`\n\n"
            f"Data: `{data['source']}` (sha256 {data['sha256'][:12]}…), {data['n_train']} train / "
            f"{data['n_valid']} valid / {data['n_test']} test items, {data['n_labels']} "
            "labels.\n\n"
            f"Encoder: backbones {list(config.encoder.backbones)}, dimension {dim}; loss "
            f"`{config.loss.name}`.\n\n"
            f"Index: `{report['backend']}` over {report['prototypes']} prototypes; "
            f"scoring {report['scoring']}; reranker {report.get('rerank', 'none')}.\n\n"
            f"| valid metric | value |\n|---|---|\n{rows}\n\n"
            "Load it with `metricls.Tagger.load(path)`; check it with `metricls verify PATH`.\n")


def card_with_changes(card: str, changes: list[dict]) -> str:
    """The model card with its label-change section (re)written at the end."""
    head = card.split("\n## Label changes\n")[0].rstrip("\n")
    if not changes:
        return head + "\n"
    rows = "\n".join(f"- {c['op']} `{c['label']}`" + ("" if "source" not in c else
                                                       f" ({c['examples']} examples)"
                                                       if c["examples"] else " (zero-shot)")
                     for c in changes)
    return f"{head}\n\n## Label changes\n\nMade after the build, in order:\n\n{rows}\n"


def _label_vectors(origin: Path, state: TaggerState) -> np.ndarray:
    """The learned label vectors of `origin` by name for the labels of `state`; a label added
    since training gets its prototype."""
    learned, _ = read_label_vectors(origin / LABEL_VECTORS, None, state.prototypes.shape[1])
    trained = read_json(origin / LABELS).get("labels", [])
    row = {n: j for j, n in enumerate(trained) if j < len(learned)}
    return np.stack([learned[row[n]] if n in row else state.prototypes[i]
                     for i, n in enumerate(state.vocab.names)]).astype(np.float32)


# ---- reading ------------------------------------------------------------------------------------
def read_trained(folder: Path, source: dict[str, str] | None = None,
                 overrides: dict[str, Any] | None = None) -> tuple[Config, EmbeddingModel]:
    """The config (with `overrides` of its ``index`` section, blamed on `source`) and the
    encoder of a trained folder."""
    check_trained(folder)
    raw = read_json(folder / CONFIG)
    raw.setdefault("index", {}).update(overrides or {})
    config = from_dict(raw, source=str(folder / CONFIG), origins=source)
    return config, EmbeddingModel.load(folder / ENCODER)


def check_trained(folder: Path) -> None:
    """NotFittedError unless `folder` holds a trained encoder (cheap: nothing is loaded)."""
    if not (folder / ENCODER / "config.json").exists():
        raise NotFittedError(f"{folder}: no trained encoder here; run `metricls train` first")


def read_learned(folder: Path, n_labels: int, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The learned (L, d) label vectors and (L,) biases (None) of a trained folder."""
    return read_label_vectors(folder / LABEL_VECTORS, n_labels, dim)


def read_tagger(folder: Path) -> tuple[Config, EmbeddingModel, TaggerState, dict]:
    """(config, encoder, state, manifest) of a built tagger folder, every checksum verified,
    every file's format tag, shapes, dtypes and indices checked, and the parts agreeing."""
    if not (folder / SCORING).exists() and (folder / ENCODER).exists():
        raise NotFittedError(f"{folder}: trained but not indexed; run "
                             f"`metricls build-index {folder}`")
    manifest = check_folder(folder)
    config = from_dict(read_json(folder / CONFIG), source=str(folder / CONFIG))
    vocab = LabelVocab.from_dict(read_json(folder / LABELS))
    model = EmbeddingModel.load(folder / ENCODER)
    L = len(vocab)
    item_index = load_index(folder / ITEM_INDEX)
    path = folder / ITEM_LABELS
    csr, csr_meta = read_tensors_and_meta(path, CSR_FORMAT)
    item_labels = check_csr(path, csr, (item_index.ntotal, L), data=False,
                            source="ann/items and labels.json")
    trained_items = _trained_rows(csr_meta, item_labels.shape[0], folder)
    state = TaggerState(
        vocab=vocab, prototypes=read_prototypes(folder / PROTOTYPES, L, model.out_dim),
        proto_index=load_index(folder / PROTO_INDEX), item_index=item_index,
        item_labels=item_labels,
        scoring=Scoring.from_dict(read_json(folder / SCORING), n_labels=L,
                                  source=str(folder / SCORING)),
        tfidf=TfidfPrototypes.load(folder / TFIDF, L) if (folder / TFIDF).exists() else None,
        reranker=Reranker.load(folder / RERANKER) if (folder / RERANKER).exists() else None,
        added_reranker=Reranker.load(folder / ADDED_RERANKER)
        if (folder / ADDED_RERANKER).exists() else None,
        trained_items=trained_items,
        item_ids=_item_ids(folder / ITEM_IDS, item_labels.shape[0]),
        descriptions=_descriptions(folder / DESCRIPTIONS),
        item_frozen=_item_frozen(folder / ITEM_FROZEN, trained_items, model.frozen_dim))
    _check_consistent(folder, state, model.out_dim)
    return config, model, state, manifest


def _item_ids(path: Path, n_rows: int) -> tuple[str, ...] | None:
    """The ids of the indexed items (None for a folder written without them)."""
    if not path.exists():
        return None
    ids = read_json(path).get("ids")
    if not isinstance(ids, list) or len(ids) != n_rows or \
            not all(isinstance(i, str) for i in ids):
        raise ArtifactError(f"{path}: expected a list of {n_rows} item id strings, one per row "
                            f"of {ITEM_LABELS}; {remedy(path)}")
    return tuple(ids)


def _item_frozen(path: Path, n_rows: int, dim: int) -> np.ndarray | None:
    """The trained items' frozen-encoder vectors (None for a folder without them)."""
    if not path.exists():
        return None
    if dim == 0:
        raise ArtifactError(f"{path}: this tagger's encoder has no frozen text encoder, so it "
                            f"has no frozen item vectors; {remedy(path)}")
    return check_array(path, read_tensors(path, FROZEN_ITEMS_FORMAT), "vectors", "f2",
                       (n_rows, dim), finite=True,
                       source="the trained rows of item_labels and encoder/config.json")


def _descriptions(path: Path) -> dict[str, str]:
    """The label descriptions ({} for a folder without them)."""
    if not path.exists():
        return {}
    found = read_json(path)
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in found.items()):
        raise ArtifactError(f"{path}: expected a JSON object of label -> description strings; "
                            f"{remedy(path)}")
    return found


def _trained_rows(meta: dict[str, str], n_rows: int, folder: Path) -> int:
    """The rows of item_labels.safetensors from the build (all of them when not recorded)."""
    text = meta.get("trained_rows", str(n_rows))
    if not text.isdigit() or int(text) > n_rows:
        raise ArtifactError(f"{folder / ITEM_LABELS}: trained_rows must be an int from 0 to "
                            f"{n_rows}, got {text!r}; rebuild with `metricls build-index "
                            f"{folder}`")
    return int(text)


def _check_consistent(folder: Path, state: TaggerState, d: int) -> None:
    L = len(state.vocab)
    checks: list[tuple[Any, Any, str]] = [
        (state.prototypes.shape, (L, d), PROTOTYPES),
        (state.proto_index.dim, d, f"{PROTO_INDEX}/backend.json"),
        (state.proto_index.ntotal, L, PROTO_INDEX),
        (state.item_index.dim, d, f"{ITEM_INDEX}/backend.json"),
        (state.item_index.ntotal, state.item_labels.shape[0], ITEM_INDEX),
        (state.item_labels.shape[1], L, ITEM_LABELS)]
    if state.tfidf is not None:
        checks.append((state.tfidf.centroids.shape[0], L, TFIDF))
    for found, expected, name in checks:
        if found != expected:
            raise ArtifactError(f"{folder / name}: expected {expected} (from labels.json and "
                                f"encoder/config.json), found {found}; rebuild with "
                                f"`metricls build-index {folder}`")
    for name, index in ((PROTO_INDEX, state.proto_index), (ITEM_INDEX, state.item_index)):
        if not index.ids_are_positions:  # they index the labels and item_labels' rows
            raise ArtifactError(f"{folder / name}: its ids are not the row positions "
                                f"0..{index.ntotal - 1} (vectors were removed); rebuild with "
                                f"`metricls build-index {folder}`")
