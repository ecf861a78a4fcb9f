"""build_index: prototypes and item embeddings into ANN indexes, scoring tuned on valid.

The steps, in order: embed the train and valid items (`embed_items`), make the prototypes
(learned label vectors, or mean embeddings), index both and tune their search for a target
recall (`index_vectors`), fit the TF-IDF prototypes, tune the scoring and the reranker on
valid (`metricls.pipeline.fit`), then write the folder (`metricls.folder`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from metricls.ann import AnnIndex, auto_params, choose_backend, make_index, tune_index
from metricls.ann.sharded import SHARDABLE
from metricls.artifacts import read_json, write_npy
from metricls.config import Config, from_dict, to_dict
from metricls.data.dataset import Dataset
from metricls.data.descriptions import label_text
from metricls.data.items import Items
from metricls.encoders.model import EmbeddingModel, build_model
from metricls.errors import ConfigError, InputError
from metricls.evaluation import ranking_metrics, summarize
from metricls.folder import (
    LABELS,
    check_trained,
    model_card,
    read_learned,
    read_trained,
    write_built,
)
from metricls.manifest import MANIFEST
from metricls.outputs import check_output
from metricls.pipeline.fit import fit_added_reranker, tune_scoring
from metricls.pipeline.rerank import Reranker
from metricls.pipeline.scoring import PER_LABEL, Scoring
from metricls.pipeline.state import TaggerState
from metricls.pipeline.tag import score
from metricls.pipeline.tfidf import TfidfPrototypes
from metricls.prototypes import mean_prototypes
from metricls.staging import folder_lock, scratch_dir
from metricls.tagger import Tagger

log = logging.getLogger(__name__)
MEMMAP_BYTES = 1 << 28  # embeddings larger than this go to a memory-mapped file in `scratch`
PQ_MIN_VECTORS = 10_000  # index.pq_m compresses ivf indexes of at least this many vectors


def build_index(tagger_dir: str | Path, *, backend: str | None = None,
                prototypes: str | None = None, target_recall: float | None = None,
                data: Dataset | None = None) -> Tagger:
    """Build the ANN indexes of a trained tagger folder and write it back atomically.

    Args:
        tagger_dir: a folder written by `train_embedder`.
        backend: "hnsw", "flat", "ivf", "scann", or "auto" (exact below
            `index.exact_below` vectors, else HNSW); default: the config's.
        prototypes: "learned" (the trained label vectors) or "mean" (mean item embeddings).
        target_recall: recall@10 against exact search that the prototype index is tuned for
            (the item index: `index.item_target_recall`).
        data: the folder's training data (`Dataset.load` of its `data` config) when the
            caller has already loaded it; default: read it again.

    Returns:
        The loaded `Tagger`.

    Example:
        >>> tagger = build_index("index/debtags", backend="hnsw")
    """
    folder = Path(tagger_dir)
    check_trained(folder)  # a trained folder, else NotFittedError before anything else
    check_output(folder, "tagger", in_place=True)  # nothing of the user's inside
    with folder_lock(folder):  # one writer at a time, from reading the folder to the swap
        return _build_in_place(folder, backend, prototypes, target_recall, data)


def _build_in_place(folder: Path, backend: str | None, prototypes: str | None,
                    target_recall: float | None, data: Dataset | None) -> Tagger:
    overrides = {"backend": backend, "prototypes": prototypes, "target_recall": target_recall}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    given = {f"index.{k}": f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()}
    cfg, model = read_trained(folder, given, overrides)  # errors name the argument given
    data = data if data is not None else Dataset.load(cfg.data)
    trained_labels = read_json(folder / LABELS)["labels"]
    if list(data.vocab.names) != trained_labels:
        if read_json(folder / MANIFEST).get("label_changes"):
            raise InputError(f"{folder}: its labels were edited since the build (`metricls "
                             "labels`), and build-index rebuilds from the data, which would drop "
                             "those edits; keep the folder as it is, or retrain")
        raise InputError(f"{cfg.data.path}: its training labels differ from {folder}/labels.json; "
                         "the data changed since training: retrain")
    vectors, bias = read_learned(folder, len(trained_labels), model.out_dim)
    with scratch_dir(folder) as scratch:
        tagger, report = assemble_tagger(cfg, model, data, vectors, label_bias=bias,
                                         scratch=scratch)
        summary = data.summary()
        write_built(folder, config=cfg, model=model, state=tagger.state, data=summary,
                    metrics=tagger.metrics, report=report,
                    card=model_card(cfg, model.out_dim, summary, report, tagger.metrics))
    del tagger  # its indexes: free them before loading the written copy
    return Tagger.load(folder)


def assemble_tagger(cfg: Config, model: EmbeddingModel, data: Dataset,
                    label_vectors: np.ndarray | None = None, *,
                    label_bias: np.ndarray | None = None,
                    scratch: Path | None = None) -> tuple[Tagger, dict]:
    """Index a trained (or untrained) model in memory and tune its scoring on `data.valid`.

    Args:
        label_bias: (L,) learned per-label offsets (``train.label_bias``); used with the
            learned prototypes only.
        scratch: a folder for large embeddings, memory-mapped (see `embed_items`).

    Returns:
        The tagger and a build report (ANN tuning, chosen scoring, valid metrics).
    """
    y_train, seconds = data.labels("train"), {}
    with timed(seconds, "embed"):
        emb_train = embed_items(model, data.train, scratch, "train")
        emb_valid = embed_items(model, data.valid, scratch, "valid")
    bias: list[float] = []
    with timed(seconds, "prototypes"):
        if cfg.index.prototypes == "learned" and label_vectors is not None:
            prototypes = np.asarray(label_vectors, dtype=np.float32)
            if label_bias is not None:
                bias = np.asarray(label_bias, dtype=np.float32).tolist()
        else:
            prototypes, _ = mean_prototypes(emb_train, y_train)
    with timed(seconds, "indexes"):  # built and tuned
        proto_index, proto_info = index_vectors(prototypes, emb_valid, cfg, k=10,
                                                target_recall=cfg.index.target_recall)
        item_index, item_info = index_vectors(emb_train, emb_valid, cfg,
                                              k=min(cfg.index.knn, 50),
                                              target_recall=cfg.index.item_target_recall)
    tfidf = None
    if cfg.index.tfidf and cfg.index.rerank and model.needs == {"texts"}:
        with timed(seconds, "tfidf"):
            tfidf = TfidfPrototypes.fit(data.train.texts, y_train)
    report: dict = {"backend": cfg.index.backend, "prototypes": cfg.index.prototypes,
                    "ann": {"prototypes": proto_info, "items": item_info}, "seconds": seconds}
    if tfidf is not None:
        report["tfidf"] = {"terms": len(tfidf.terms), "nonzeros": int(tfidf.centroids.nnz)}
    item_frozen = None
    if cfg.index.zero_shot_examples and model.frozen_dim and model.needs == {"texts"}:
        with timed(seconds, "frozen"):  # cached since training
            item_frozen = frozen_items(model, data.train.texts)
    state = TaggerState(vocab=data.vocab, prototypes=prototypes, proto_index=proto_index,
                        item_index=item_index, item_labels=y_train,
                        scoring=Scoring(knn=cfg.index.knn, candidates=cfg.index.candidates,
                                        label_bias=bias, tail_weight=cfg.index.tail_weight),
                        tfidf=tfidf, item_ids=data.train.ids, descriptions=data.descriptions,
                        item_frozen=item_frozen)
    metrics = {}
    if len(emb_valid):
        with timed(seconds, "scoring"):
            scoring, reranker, report["rerank"] = tune_scoring(
                state, emb_valid, data.labels("valid"), rerank=cfg.index.rerank,
                seed=cfg.train.seed, texts=data.valid.texts)
        state = state.replace(scoring=scoring, reranker=reranker)  # TF-IDF: also explanations
        if reranker is not None:
            with timed(seconds, "added_reranker"):
                added, report["added_reranker"] = _added_reranker(state, model, data, emb_valid,
                                                                  cfg.train.seed)
            state = state.replace(added_reranker=added)
        with timed(seconds, "valid_metrics"):
            _, ids = score(state, emb_valid, 10, data.valid.texts)
        metrics = {"valid": summarize(ranking_metrics(ids, data.valid.labels, data.vocab))}
    report["scoring"] = {k: v for k, v in state.scoring.to_dict().items() if k not in PER_LABEL}
    return Tagger(model=model, state=state, config=cfg, metrics=metrics), report


def frozen_items(model: EmbeddingModel, texts: list[str],
                 chunk: int = 65_536) -> np.ndarray:
    """(n, frozen_dim) float16 unit rows of `texts` in the frozen encoder's space, computed
    `chunk` texts at a time (the zero-shot pseudo-examples' space, `pipeline.zero_shot`)."""
    out = np.zeros((len(texts), model.frozen_dim), np.float16)
    for start in range(0, len(texts), chunk):
        out[start:start + chunk] = model.frozen_text(texts[start:start + chunk], cache=True)
    return out


def _added_reranker(state: TaggerState, model: EmbeddingModel, data: Dataset,
                    emb_valid: np.ndarray, seed: int) -> tuple[Reranker | None, dict | str]:
    """The few-shot reranker (`fit.fit_added_reranker`), zero-shot draws from each label's
    name and description when the tagger reads texts. Their prototype is the text's
    embedding, even where `Tagger.add_label` adds pseudo-examples (`pipeline.zero_shot`): on
    debtags valid, simulating those too lowered every added label's recall (zero-shot R@10
    0.538 against 0.560, 1-shot 0.487 against 0.522)."""
    texts = None
    if model.needs == {"texts"}:
        texts = [label_text(name, data.descriptions.get(name)) for name in data.vocab.names]
    return fit_added_reranker(
        state, emb_valid, data.labels("valid"), data.valid.texts, train_texts=data.train.texts,
        label_emb=model.embed(texts) if texts else None, label_texts=texts, seed=seed)


def untrained_baseline(cfg: Config, data: Dataset) -> tuple[Tagger, dict]:
    """Frozen MiniLM embeddings, mean prototypes blended with the neighbour vote, no training.

    It searches exactly (flat): the baseline measures the embeddings, not an ANN index.
    """
    index = {**to_dict(cfg.index), "prototypes": "mean", "backend": "flat", "rerank": False,
             "tfidf": False}
    base_cfg = from_dict(to_dict(cfg) | {"index": index})
    encoder = dataclasses.replace(base_cfg.encoder, backbones=("minilm",))
    model = build_model(encoder, head=False)
    return assemble_tagger(dataclasses.replace(base_cfg, encoder=encoder), model, data)


def embed_items(model: EmbeddingModel, items: Items, scratch: Path | None,
                name: str) -> np.ndarray:
    """(n, d) float32 embeddings of `items`; above `MEMMAP_BYTES`, with a `scratch` folder, they
    are computed in chunks into ``scratch/NAME.npy`` and returned memory-mapped."""
    n, d = len(items), model.out_dim
    if scratch is None or n * d * 4 <= MEMMAP_BYTES:
        return model.embed(items.texts, items.features, cache=True)
    prepared = model.prepare(items.texts, items.features, cache=True)
    return write_npy(scratch / f"{name}.npy", (n, d), np.float32,
                     lambda out: model.embed_prepared(prepared, n, out=out))


@contextlib.contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block took as `seconds[name]`."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 2)


def index_vectors(vectors: np.ndarray, queries: np.ndarray, cfg: Config, k: int,
                  target_recall: float) -> tuple[AnnIndex, dict]:
    """An index of the config's backend over `vectors`, its search tuned on `queries` for
    `target_recall` at `k`."""
    backend = choose_backend(cfg.index.backend, len(vectors), cfg.index.exact_below)
    shards = min(cfg.index.shards, len(vectors))
    if shards > 1 and backend not in SHARDABLE:
        raise ConfigError(f"index.shards={cfg.index.shards} needs a FAISS backend "
                          f"{list(SHARDABLE)}, got index.backend={backend!r}")
    # re-scoring reads one index's float vectors: sharded indexes get the plain parameters
    auto = cfg.index.backend == "auto" and shards == 1
    params = auto_params(backend, len(vectors)) if auto else {}
    if cfg.index.pq_m is not None:
        if backend != "ivf":
            raise ConfigError(f"index.pq_m={cfg.index.pq_m} compresses ivf indexes only, got "
                              f"index.backend={backend!r}")
        if vectors.shape[1] % cfg.index.pq_m:
            raise ConfigError(f"index.pq_m={cfg.index.pq_m} must divide the embedding "
                              f"dimension {vectors.shape[1]}")
        if len(vectors) >= PQ_MIN_VECTORS:  # fewer: too few to train codebooks, small anyway
            params = {"pq_m": cfg.index.pq_m}
    index = make_index(backend, vectors.shape[1], **params) if shards == 1 else \
        make_index("sharded", vectors.shape[1], base=backend, shards=shards, base_params=params)
    index.build(vectors)
    info: dict = {"backend": backend} | ({"shards": shards} if shards > 1 else {}) | params
    if backend != "flat" and len(queries):
        info.update(tune_index(index, queries, k=k, vectors=vectors,
                               target_recall=target_recall))
    return index, info


