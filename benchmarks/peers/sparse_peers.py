"""Peers on TF-IDF features: one-vs-rest linear SVM (scikit-learn), napkinXC PLT, PECOS.

All three read the same TF-IDF matrices, fitted on the train texts; each tries a small grid
of its main regularisation setting, fitted on train and chosen on valid (`best_trial`).
PECOS runs in its own virtual environment (libpecos needs numpy < 2; `pecos_venv` makes it)
and exchanges features and scores with this process through files (`peers_pecos.py`).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from benchmarks.peers.pecos_venv import call, pecos_python
from benchmarks.peers.peer_run import K, PeerRun, Trial, best_trial
from metricls.artifacts import read_json, write_json
from metricls.data.dataset import Dataset
from metricls.pipeline.scoring import top_k
from metricls.progress import progress

# word uni- and bigrams; adding char_wb 3-5 grams raised PECOS's valid P@1 from 0.863 to 0.868
# on debtags at about 8x its fitting time, so they stay out
TFIDF = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True, "strip_accents": "unicode"}
OVR_GRID = [{"C": c} for c in (0.3, 1.0, 3.0)]  # LinearSVC, squared hinge, liblinear tol 0.1
PLT_GRID = [{"liblinear_c": c} for c in (32.0, 100.0, 320.0)]  # logistic loss per tree node
PECOS_GRID = [{"Cp": c, "Cn": c, "nr_splits": 16, "beam_size": 10} for c in (1.0, 2.0, 4.0, 8.0)]
PECOS_SCRIPT = Path(__file__).with_name("peers_pecos.py")


class TfidfFeatures(NamedTuple):
    """L2-normalised float32 TF-IDF rows of each split, and the fitting / test-transform time."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    fit_s: float
    transform_test_s: float


def tfidf_features(data: Dataset) -> TfidfFeatures:
    """Fit `TFIDF` on the train texts and transform every split."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(**TFIDF, dtype=np.float32)
    train = vectorizer.fit_transform(data.train.texts)
    fit_s = time.perf_counter() - start
    valid = vectorizer.transform(data.valid.texts)
    start = time.perf_counter()
    test = vectorizer.transform(data.test.texts)
    return TfidfFeatures(train, valid, test, fit_s, time.perf_counter() - start)


def _timed_top(predict: Any, X: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """Top-K ids of `predict(X)` (an (n, L) score matrix) and the seconds it took."""
    start = time.perf_counter()
    ids = top_k(sp.csr_matrix(predict(X)), K)[1]
    return ids, time.perf_counter() - start


def run_ovr(feats: TfidfFeatures, data: Dataset) -> PeerRun:
    """TF-IDF + one linear SVM per label (scikit-learn `OneVsRestClassifier(LinearSVC)`)."""
    from joblib import parallel_config
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    # float32 labels: scikit-learn 1.9's one-vs-rest scrambles label columns of int8 matrices
    Y = sp.csr_matrix(data.labels("train"), dtype=np.float32)
    X = feats.train.astype(np.float64)  # liblinear's dtype, converted once rather than per label
    trials = []
    for setting in progress(OVR_GRID, desc="tfidf-ovr"):
        start = time.perf_counter()
        # one label at a time: liblinear seeds and draws from C's process-wide rand(), so
        # labels fitted in parallel threads shuffle differently from run to run (two runs
        # chose different C on valid)
        with warnings.catch_warnings(), parallel_config(backend="threading", n_jobs=1):
            warnings.simplefilter("ignore", UserWarning)  # a label on no or every train item
            svm = LinearSVC(C=setting["C"], tol=0.1, random_state=0)  # it shuffles
            model = OneVsRestClassifier(svm).fit(X, Y)
        train_s = time.perf_counter() - start
        valid_ids, _ = _timed_top(model.decision_function, feats.valid)
        test_ids, predict_s = _timed_top(model.decision_function, feats.test)
        trials.append(Trial(setting, valid_ids, test_ids, train_s, predict_s))
        del model  # one model of L dense weight vectors at a time
    return _sparse_run("tfidf-ovr", "TF-IDF + one-vs-rest linear SVM (scikit-learn LinearSVC)",
                       trials, feats, data, {"scikit-learn": metadata.version("scikit-learn")})


def run_plt(feats: TfidfFeatures, data: Dataset) -> PeerRun:
    """TF-IDF + a napkinXC probabilistic label tree (hierarchical k-means, logistic nodes)."""
    from napkinxc.models import PLT

    Y = data.labels("train")
    label_lists = [Y.indices[a:b].tolist() for a, b in zip(Y.indptr[:-1], Y.indptr[1:])]
    trials = []
    for setting in progress(PLT_GRID, desc="napkinxc"):
        with tempfile.TemporaryDirectory(prefix="metricls-plt-") as folder:
            model = PLT(folder, seed=0, threads=0, **setting)
            start = time.perf_counter()
            model.fit(feats.train, label_lists)
            train_s = time.perf_counter() - start

            def predict(X: sp.csr_matrix, model: Any = model) -> sp.csr_matrix:
                return _pairs_to_csr(model.predict_proba(X, top_k=K), len(data.vocab))

            valid_ids, _ = _timed_top(predict, feats.valid)
            test_ids, predict_s = _timed_top(predict, feats.test)
        trials.append(Trial(setting, valid_ids, test_ids, train_s, predict_s))
    return _sparse_run("napkinxc", "TF-IDF + napkinXC PLT (probabilistic label tree)", trials,
                       feats, data, {"napkinxc": metadata.version("napkinxc")})


def _pairs_to_csr(rows: list[list[tuple[int, float]]], n_labels: int) -> sp.csr_matrix:
    """napkinXC's per-row (label, probability) lists as an (n, L) CSR matrix."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    ids = np.fromiter((label for r in rows for label, _ in r), np.int64, count=indptr[-1])
    vals = np.fromiter((p for r in rows for _, p in r), np.float32, count=indptr[-1])
    return sp.csr_matrix((vals, ids, indptr), shape=(len(rows), n_labels))


def run_pecos(feats: TfidfFeatures, data: Dataset, *, venv: Path) -> PeerRun:
    """TF-IDF + PECOS XR-Linear (PIFA label tree), trained and run in the PECOS venv."""
    python = pecos_python(venv)
    with tempfile.TemporaryDirectory(prefix="metricls-pecos-") as tmp:
        folder = Path(tmp)
        for name in ("train", "valid", "test"):
            sp.save_npz(folder / f"X_{name}.npz", getattr(feats, name), compressed=False)
        sp.save_npz(folder / "Y_train.npz", data.labels("train"), compressed=False)
        write_json(folder / "job.json", {"grid": PECOS_GRID, "k": K})
        call([str(python), str(PECOS_SCRIPT), str(folder)], "the PECOS run")
        result = read_json(folder / "result.json")
        trials = [Trial(setting, top_k(sp.load_npz(folder / f"pred-{i}-valid.npz"), K)[1],
                        top_k(sp.load_npz(folder / f"pred-{i}-test.npz"), K)[1],
                        t["train_s"], t["predict_test_s"])
                  for i, (setting, t) in enumerate(zip(PECOS_GRID, result["trials"]))]
    return _sparse_run("pecos", "TF-IDF + PECOS XR-Linear (PIFA label tree)", trials, feats,
                       data, result["versions"])


def _sparse_run(name: str, description: str, trials: list[Trial], feats: TfidfFeatures,
                data: Dataset, versions: dict[str, str]) -> PeerRun:
    """The row of the trial chosen on valid; training time includes fitting the TF-IDF."""
    best, search = best_trial(trials, data)
    settings = {"features": {"tfidf": TFIDF, "n_features": feats.train.shape[1],
                             "tfidf_fit_s": round(feats.fit_s, 2)}, **search, "versions": versions}
    return PeerRun(name, description, best.test_ids, feats.fit_s + best.train_s,
                   feats.transform_test_s, best.predict_s, settings)
