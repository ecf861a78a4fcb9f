"""PECOS XR-Linear for the peers benchmark, run by the Python of its own virtual environment.

libpecos needs numpy < 2, so this script imports only numpy, scipy and libpecos (never
metricls) and talks to the benchmark (`sparse_peers.run_pecos`) through files in one folder:

    in:  X_train.npz, Y_train.npz, X_valid.npz, X_test.npz (scipy CSR, float32), job.json
         ({"grid": [{"Cp": 1.0, "Cn": 1.0, "nr_splits": 16, "beam_size": 10}, ...], "k": 10})
    out: pred-<i>-valid.npz, pred-<i>-test.npz (CSR (n, L) top-k scores per grid entry i) and
         result.json ({"versions": {...}, "trials": [{"train_s", "predict_valid_s",
         "predict_test_s"}, ...]})

Usage: python peers_pecos.py FOLDER
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel


def train(X: sp.csr_matrix, Y: sp.csr_matrix, params: dict) -> XLinearModel:
    """PIFA label embeddings, a hierarchical k-means label tree, then XR-Linear on it."""
    label_features = LabelEmbeddingFactory.create(Y, X, method="pifa")
    chain = Indexer.gen(label_features, nr_splits=params["nr_splits"], seed=0)
    return XLinearModel.train(X, Y, C=chain, Cp=params["Cp"], Cn=params["Cn"], threads=-1)


def predict(model: XLinearModel, X: sp.csr_matrix, params: dict, k: int) -> sp.csr_matrix:
    """(n, L) CSR holding each row's top-k label scores."""
    return model.predict(X, beam_size=params["beam_size"], only_topk=k, threads=-1).tocsr()


def main(folder: Path) -> None:
    job = json.loads((folder / "job.json").read_text())
    X, Y = sp.load_npz(folder / "X_train.npz"), sp.load_npz(folder / "Y_train.npz")
    splits = {name: sp.load_npz(folder / f"X_{name}.npz") for name in ("valid", "test")}
    trials = []
    for i, params in enumerate(job["grid"]):
        start = time.perf_counter()
        model = train(X.astype(np.float32), Y.astype(np.float32), params)
        trial = {"train_s": time.perf_counter() - start}
        for name, Xs in splits.items():
            start = time.perf_counter()
            scores = predict(model, Xs.astype(np.float32), params, job["k"])
            trial[f"predict_{name}_s"] = time.perf_counter() - start
            sp.save_npz(folder / f"pred-{i}-{name}.npz", scores, compressed=False)
        trials.append(trial)
    versions = {name: metadata.version(name) for name in ("libpecos", "numpy", "scipy")}
    (folder / "result.json").write_text(json.dumps({"versions": versions, "trials": trials}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
