"""build_index: prototypes and item embeddings into ANN indexes, scoring tuned on valid."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from metricls.ann import AnnIndex, choose_backend, make_index, tune_index
from metricls.ann.sharded import SHARDABLE
from metricls.artifacts import (
    check_output,
    folder_lock,
    read_json,
    scratch_dir,
    staged_dir,
    write_manifest,
    write_npy,
)
from metricls.config import Config, from_dict, to_dict
from metricls.data.dataset import Dataset
from metricls.data.items import Items
from metricls.encoders.model import EmbeddingModel, build_model
from metricls.errors import ConfigError, InputError, NotFittedError
from metricls.evaluation import ranking_metrics, summarize
from metricls.metrics import precision_at_k, psp_at_k
from metricls.progress import progress
from metricls.prototypes import mean_prototypes, read_label_vectors
from metricls.rerank import DEPTH, MIN_ITEMS, Neighbours, Reranker, fit_trees, pick, ranked
from metricls.scoring import PER_LABEL, Scoring, tune_global_threshold, tune_label_thresholds
from metricls.tagger import Tagger
from metricls.tfidf import TfidfPrototypes

log = logging.getLogger(__name__)
TRAINED_FILES = ("label_vectors.safetensors", "training.json")
MEMMAP_BYTES = 1 << 28  # embeddings larger than this go to a memory-mapped file in `scratch`
TUNE_QUERIES = 10_000  # validation items the scoring grid search uses at most
PQ_MIN_VECTORS = 10_000  # index.pq_m compresses ivf indexes of at least this many vectors
BIAS_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # tried on valid when the labels have learned biases


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
    tagger = Tagger(model=model, vocab=data.vocab, prototypes=prototypes,
                    proto_index=proto_index, item_index=item_index, item_labels=y_train,
                    scoring=Scoring(knn=cfg.index.knn, candidates=cfg.index.candidates,
                                    label_bias=bias),
                    config=cfg, tfidf=tfidf)
    if len(emb_valid):
        with timed(seconds, "scoring"):
            tagger.scoring, tagger.reranker, report["rerank"] = tune_scoring(
                tagger, emb_valid, data.labels("valid"), rerank=cfg.index.rerank,
                seed=cfg.train.seed, texts=data.valid.texts)
        if tagger.reranker is None:
            tagger.tfidf = None  # only the reranker reads it
            report.pop("tfidf", None)
        with timed(seconds, "valid_metrics"):
            _, ids = tagger.score_embeddings(emb_valid, 10, data.valid.texts)
        tagger.metrics = {"valid": summarize(ranking_metrics(ids, data.valid.labels, data.vocab))}
    report["scoring"] = {k: v for k, v in tagger.scoring.to_dict().items()
                         if k not in PER_LABEL}
    return tagger, report


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
    params = {}
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


def objective(ids: np.ndarray, Y: sp.csr_matrix, props: np.ndarray) -> float:
    """What scoring is tuned for on valid: P@1 + P@5 + PSP@5."""
    return precision_at_k(ids, Y, 1) + precision_at_k(ids, Y, 5) + psp_at_k(ids, Y, 5, props)


def tune_scoring(tagger: Tagger, emb: np.ndarray, Y: sp.csr_matrix, *, rerank: bool = False,
                 seed: int = 0, texts: list[str] | None = None
                 ) -> tuple[Scoring, Reranker | None, dict | str]:
    """Tune how a tagger scores on valid (at most `TUNE_QUERIES` items, evenly spaced).

    Grid-searches blend, k, temperature and (with learned label biases) the bias weight for the
    best `objective`; with `rerank`, then fits a reranker (`tune_reranker`) and keeps it when
    it scores better out of fold. Thresholds are tuned last, on the scores the tagger will give
    (the reranker's out-of-fold probabilities when it has one).

    `texts` (one per row of `emb`) feed the TF-IDF prototypes' features, when the tagger has
    them.

    Returns:
        The scoring, the reranker or None, and what happened to the reranker (a report).
    """
    step = max(1, -(-len(emb) // TUNE_QUERIES))
    emb, Y = emb[::step], sp.csr_matrix(Y)[::step]
    texts = texts[::step] if texts is not None else None
    base = tagger.scoring
    props = tagger.vocab.propensities()
    best, best_score = base, -1.0
    found = tagger.search(emb, candidates=max(base.candidates, DEPTH), knn=50,  # once, then slice
                          texts=texts)
    weights = BIAS_WEIGHTS if base.label_bias else (base.bias_weight,)
    grid = list(itertools.product((10, 25, 50), (0.02, 0.05, 0.1), weights))
    for knn, temp, weight in progress(grid, desc="tune scoring"):
        for blend in np.linspace(0.0, 1.0, 11):
            trial = dataclasses.replace(base, knn=knn, temperature=temp, blend=float(blend),
                                        bias_weight=weight)
            score = objective(tagger.combine(found, 5, trial)[1], Y, props)
            if score > best_score:
                best, best_score = trial, score
    log.info("scoring tuned on valid: %s", best)
    reranker, scores_ids, report = None, None, "off (index.rerank: false)"
    if rerank:
        reranker, scores_ids, report = tune_reranker(tagger, found, best, Y, best_score, seed)
    scores, ids = scores_ids if scores_ids is not None else tagger.combine(found, 20, best)
    threshold = tune_global_threshold(scores, ids, Y)
    per_label = tune_label_thresholds(scores, ids, Y, fallback=threshold)
    return dataclasses.replace(best, threshold=threshold, label_thresholds=per_label), reranker, \
        report


def tune_reranker(tagger: Tagger, found: Neighbours, scoring: Scoring, Y: sp.csr_matrix,
                  plain: float, seed: int) -> tuple[Reranker | None, tuple | None, dict | str]:
    """Fit a reranker on the validation queries `found` (labels `Y`).

    It is scored out of fold (two folds of the queries, by position) and kept, refitted on all
    of them, when its out-of-fold `objective` beats `plain` (the scoring's own). Returns the
    reranker or None, its out-of-fold (scores, ids), and a report.
    """
    n = len(found.proto_ids)
    if n < MIN_ITEMS:
        return None, None, f"skipped: {n} validation items, {MIN_ITEMS} needed"
    cand = tagger.candidates(found, scoring, DEPTH)
    real = cand.ids >= 0
    y = (pick(Y, np.maximum(cand.ids, 0)) > 0) & real
    fold = np.arange(n) % 2
    if any(len(np.unique(y[(fold == f)[:, None] & real])) < 2 for f in (0, 1)):
        return None, None, "skipped: a validation fold has no true (or no false) candidate"
    oof = np.zeros(cand.ids.shape, np.float32)
    for f in (0, 1):
        fit = (fold != f)[:, None] & real
        oof[fold == f] = Reranker(fit_trees(cand.features[fit], y[fit], seed)).score(
            cand.features[fold == f])
    scores, ids = ranked(oof, cand.ids, 20)
    score = objective(ids, Y, tagger.vocab.propensities())
    report = {"kept": score > plain, "out_of_fold": round(score, 4), "plain": round(plain, 4)}
    if score <= plain:
        return None, None, report
    return Reranker(fit_trees(cand.features[real], y[real], seed)), (scores, ids), report


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
    if not (folder / "encoder" / "config.json").exists():
        raise NotFittedError(f"{folder}: no trained encoder here; run `metricls train` first")
    check_output(folder, "tagger", in_place=True)  # nothing of the user's inside
    with folder_lock(folder):  # one writer at a time, from reading the folder to the swap
        return _build_in_place(folder, backend, prototypes, target_recall, data)


def _build_in_place(folder: Path, backend: str | None, prototypes: str | None,
                    target_recall: float | None, data: Dataset | None = None) -> Tagger:
    raw = read_json(folder / "config.json")
    overrides = {"backend": backend, "prototypes": prototypes, "target_recall": target_recall}
    raw.setdefault("index", {}).update({k: v for k, v in overrides.items() if v is not None})
    given = {f"index.{k}": f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()
             if v is not None}  # errors about these name the argument, not config.json
    cfg = from_dict(raw, source=str(folder / "config.json"), origins=given)
    model = EmbeddingModel.load(folder / "encoder")
    data = data if data is not None else Dataset.load(cfg.data)
    trained_labels = read_json(folder / "labels.json")["labels"]
    if list(data.vocab.names) != trained_labels:
        raise InputError(f"{cfg.data.path}: its training labels differ from {folder}/labels.json; "
                         "the data changed since training: retrain")
    vectors, bias = read_label_vectors(folder / "label_vectors.safetensors",
                                       len(trained_labels), model.out_dim)
    with scratch_dir(folder) as scratch:
        tagger, report = assemble_tagger(cfg, model, data, vectors, label_bias=bias,
                                         scratch=scratch)
        write_tagger(tagger, folder, data, report, keep_from=folder)
    del tagger  # its indexes: free them before loading the written copy
    return Tagger.load(folder)


def write_tagger(tagger: Tagger, folder: Path, data: Dataset, report: dict,
                 keep_from: Path | None = None) -> None:
    """Write a whole tagger folder atomically (temp folder, manifest last, then swap)."""
    with staged_dir(folder) as tmp:
        for name in TRAINED_FILES:
            if keep_from is not None and (keep_from / name).exists():
                shutil.copy2(keep_from / name, tmp / name)
        tagger.write(tmp)
        (tmp / "README.md").write_text(model_card(tagger, data, report))
        write_manifest(tmp, data=data.summary(), metrics=tagger.metrics, extra={"build": report})


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


def model_card(tagger: Tagger, data: Dataset, report: dict) -> str:
    """The folder's README.md: data, config and metrics at build time."""
    valid = tagger.metrics.get("valid", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in valid.items())
    return (f"# metricls tagger `{tagger.config.name}`\n\n"
            f"Data: `{data.source}` (sha256 {data.sha256[:12]}…), {len(data.train)} train / "
            f"{len(data.valid)} valid / {len(data.test)} test items, {len(data.vocab)} labels.\n\n"
            f"Encoder: backbones {list(tagger.config.encoder.backbones)}, "
            f"dimension {tagger.model.out_dim}; loss `{tagger.config.loss.name}`.\n\n"
            f"Index: `{report['backend']}` over {report['prototypes']} prototypes; "
            f"scoring {report['scoring']}; reranker {report.get('rerank', 'none')}.\n\n"
            f"| valid metric | value |\n|---|---|\n{rows}\n\n"
            "Load it with `metricls.Tagger.load(path)`; check it with `metricls verify PATH`.\n")
