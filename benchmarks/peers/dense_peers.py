"""Embedding methods of the peers benchmark: a frozen backbone's kNN vote and mean prototypes,
and metricls itself, trained from a config or reused from its tagger folder."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from benchmarks.peers.peer_run import K, PeerRun, Trial, best_trial
from metricls import Tagger
from metricls.ann import make_index
from metricls.artifacts import read_json
from metricls.build import assemble_tagger  # internal, see `_trained`
from metricls.config import Config, from_dict, to_dict
from metricls.data.dataset import Dataset
from metricls.encoders.model import build_model
from metricls.errors import MetriclsError
from metricls.evaluation import evaluate_tagged
from metricls.pipeline.scoring import top_k, vote_matrix
from metricls.prototypes import mean_prototypes
from metricls.training.trainer import fit  # internal, see `_trained`

log = logging.getLogger("benchmarks.peers")
# metricls's scoring grid (build.tune_scoring) widened: on debtags, frozen MiniLM's vote is best
# near-uniform (valid score flat from temperature 0.5 up)
KNN_GRID = [{"knn": k, "temperature": t} for k, t in
            itertools.product((10, 25, 50, 100), (0.02, 0.05, 0.1, 0.2, 0.5, 1.0))]


class FrozenEmbeddings(NamedTuple):
    """L2-normalised embeddings of each split by an untrained backbone, and its settings."""

    train: np.ndarray  # (n_train, d) float32
    valid: np.ndarray
    test: np.ndarray
    encode_test_s: float  # encoding the test split, model already loaded, no cache
    backbone: dict[str, Any]


def frozen_embeddings(cfg: Config, data: Dataset, backbone: str) -> FrozenEmbeddings:
    """Embed every split with `backbone` ("minilm" or "features") alone, with no head.

    MiniLM uses `cfg.encoder.minilm` (its max_seq_length); train and valid come from the
    on-disk embedding cache, the test split is encoded afresh and timed.
    """
    encoder = dataclasses.replace(cfg.encoder, backbones=(backbone,))
    features = data.train.features
    model = build_model(encoder, head=False,
                        feature_dim=features.shape[1] if features is not None else None)
    train = model.embed(data.train.texts, data.train.features, cache=True)
    valid = model.embed(data.valid.texts, data.valid.features, cache=True)
    warm = data.test.subset(np.arange(min(1, len(data.test))))
    model.embed(warm.texts, warm.features)  # load the encoder before the clock starts
    start = time.perf_counter()
    test = model.embed(data.test.texts, data.test.features)
    settings = {"name": backbone} | (to_dict(cfg.encoder.minilm) if backbone == "minilm" else {})
    return FrozenEmbeddings(train, valid, test, time.perf_counter() - start, settings)


def run_knn(emb: FrozenEmbeddings, data: Dataset) -> PeerRun:
    """Similarity-weighted vote of the nearest training items (exact search), k and
    temperature chosen on valid from `KNN_GRID`."""
    start = time.perf_counter()
    index = make_index("flat", emb.train.shape[1])
    index.build(emb.train)
    train_s = time.perf_counter() - start
    Y = data.labels("train")
    depth = min(max(s["knn"] for s in KNN_GRID), len(emb.train))
    valid_found = index.search(emb.valid, depth)
    start = time.perf_counter()
    test_found = index.search(emb.test, depth)
    search_s = time.perf_counter() - start
    trials = []
    for setting in KNN_GRID:
        def vote(found: tuple[np.ndarray, np.ndarray], s: dict = setting) -> np.ndarray:
            scores, ids = (part[:, :s["knn"]] for part in found)
            return top_k(vote_matrix(scores, ids, Y, s["temperature"]), K)[1]

        start = time.perf_counter()
        test_ids = vote(test_found)
        vote_s = time.perf_counter() - start
        trials.append(Trial(setting, vote(valid_found), test_ids, train_s, search_s + vote_s))
    best, search = best_trial(trials, data)
    return PeerRun("knn", f"{_title(emb)} kNN vote (frozen, exact search)", best.test_ids,
                   best.train_s, emb.encode_test_s, best.predict_s,
                   {"backbone": emb.backbone, **search})


def run_prototypes(emb: FrozenEmbeddings, data: Dataset) -> PeerRun:
    """Cosine similarity to each label's normalised mean train embedding (exact search)."""
    start = time.perf_counter()
    prototypes, _ = mean_prototypes(emb.train, data.labels("train"))
    index = make_index("flat", prototypes.shape[1])
    index.build(prototypes)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    _, ids = index.search(emb.test, min(K, len(prototypes)))
    return PeerRun("prototypes", f"{_title(emb)} mean prototypes (frozen, exact search)",
                   ids, train_s, emb.encode_test_s, time.perf_counter() - start,
                   {"backbone": emb.backbone})


def _title(emb: FrozenEmbeddings) -> str:
    return {"minilm": "MiniLM"}.get(emb.backbone["name"], emb.backbone["name"])


def run_metricls(cfg: Config, data: Dataset, *, reuse: Path | None = None) -> PeerRun:
    """metricls with `cfg`: the tagger folder `reuse` when it was built from the same config
    and data, else trained and indexed here, in memory (no folder is written).

    Training time of a reused folder is its recorded training (index building not included).
    """
    tagger = reusable_tagger(reuse, cfg, data) if reuse is not None else None
    if tagger is not None:
        training = read_json(reuse / "training.json")
        train_s = float(training["seconds"])
        settings = {"source": str(reuse), "best_epoch": training["best_epoch"]}
    else:
        tagger, train_s, settings = _trained(cfg, data)
    warm = data.test.subset(np.arange(min(1, len(data.test))))
    tagger.embed(warm)  # load the frozen encoder before the clock starts
    report, tagged = evaluate_tagged(tagger, data.test, k=K)
    scoring = {key: len(value) if isinstance(value, list) else value  # per-label lists:
               for key, value in tagger.state.scoring.to_dict().items()}  # their count is enough
    settings |= {"config": to_dict(cfg), "scoring": scoring}
    description = f"metricls `{cfg.name}` ({' + '.join(cfg.encoder.backbones)}, {cfg.loss.name})"
    return PeerRun(f"metricls:{cfg.name}", description, tagged.ids, train_s,
                   report["timings"]["embed_s"], report["timings"]["search_score_s"], settings)


def _trained(cfg: Config, data: Dataset) -> tuple[Tagger, float, dict[str, Any]]:
    """Train and index `cfg` on `data` in memory: the tagger, its seconds, what happened.

    `fit` and `assemble_tagger` are what `train_embedder` and `build_index` run, on the Dataset
    given (the --quick subset too) rather than the config's data file, and without a folder.
    """
    result = fit(cfg, data)
    start = time.perf_counter()
    tagger, _ = assemble_tagger(cfg, result.model, data, result.label_vectors,
                                label_bias=result.label_bias)
    build_s = time.perf_counter() - start
    return tagger, result.seconds + build_s, {
        "source": "trained", "fit_s": round(result.seconds, 2), "build_s": round(build_s, 2),
        "best_epoch": result.best_epoch}


def reusable_tagger(folder: Path, cfg: Config, data: Dataset) -> Tagger | None:
    """The tagger in `folder` if it was built from `cfg` (as resolved now; `data.path` aside) and
    from a file with the sha256 of `data`'s, with the same labels; else None, logging why."""
    if not (folder / "manifest.json").exists() or not (folder / "training.json").exists():
        problem = "no trained and built tagger there"
    else:
        problem = _config_problem(folder, cfg)
    if problem is None and \
            read_json(folder / "manifest.json").get("data", {}).get("sha256") != data.sha256:
        problem = "it was built from other data"
    if problem is None:
        try:
            tagger = Tagger.load(folder)
        except MetriclsError as exc:
            problem = f"it does not load ({exc})"
        else:
            if tagger.vocab.names == data.vocab.names:
                return tagger
            problem = "its labels differ from the data's"
    log.warning("not reusing %s: %s; training %s here instead", folder, problem, cfg.name)
    return None


def _config_problem(folder: Path, cfg: Config) -> str | None:
    """Why the config saved in `folder` is not `cfg` (None when it is, `data.path` aside)."""
    try:
        saved = from_dict(read_json(folder / "config.json"), source=str(folder / "config.json"))
    except MetriclsError as exc:  # e.g. a key that an older metricls wrote and this one lacks
        return f"its config does not read ({exc})"
    # the data is compared by content by the caller, so a moved or renamed file still matches
    differ = [key for key in _differences(to_dict(saved), to_dict(cfg)) if key != "data.path"]
    return f"its config differs in {differ}" if differ else None


def _differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key, value in wanted.items():
        other = saved.get(key)
        if isinstance(value, dict) and isinstance(other, dict):
            out += _differences(other, value, f"{prefix}{key}.")
        elif other != value:
            out.append(f"{prefix}{key}")
    return out
