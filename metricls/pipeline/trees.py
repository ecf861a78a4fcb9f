"""Boosted trees for the reranker: LightGBM, kept in its own text model format (no pickle).

`BoostedTrees.fit` trains one LightGBM ensemble (binary log-loss), stopped early on a seeded
10% of the rows; `logits` runs LightGBM's compiled predictor. A tagger folder keeps the
model's text (`to_text`) inside the reranker's safetensors file, and `from_text` reads it
back, refusing text that LightGBM cannot parse or trees over another number of features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metricls.errors import ArtifactError
from metricls.formats import remedy

# How the trees are fitted; chosen on the debtags validation split, out of fold (see
# docs/speed.md): as accurate as three averaged scikit-learn ensembles, with a third of the trees
PARAMS = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 20,
          "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8,
          "deterministic": True, "force_row_wise": True, "verbosity": -1}
MAX_TREES, STOP_AFTER, HELD_OUT = 200, 10, 0.1  # early stopping on a held-out share
FIT_THREADS = 2  # fixed, so that a fit gives the same trees on every machine
# rows from which one call predicts on every core: below, one thread, since concurrent callers
# (the service's threads) each running an OpenMP team would oversubscribe the cores
THREADS_FROM_ROWS = 16384


@dataclass(frozen=True)
class BoostedTrees:
    """A fitted LightGBM ensemble over `n_features` features; `logits` gives raw scores."""

    booster: object  # lightgbm.Booster
    n_features: int

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, seed: int) -> BoostedTrees:
        """Trees for P(y | X) (binary), stopped when the log-loss on a seeded `HELD_OUT` share
        of the rows has not improved for `STOP_AFTER` trees (at most `MAX_TREES`)."""
        import lightgbm as lgb

        y = np.asarray(y, np.float32)
        held = np.random.default_rng(seed).random(len(y)) < HELD_OUT
        if held.all() or not held.any() or len(np.unique(y[held])) < 2:
            held[:] = False  # too few rows to hold out: a fixed number of trees
        params = PARAMS | {"seed": seed, "num_threads": FIT_THREADS}
        train = lgb.Dataset(np.asarray(X, np.float64)[~held], y[~held], free_raw_data=True)
        if held.any():
            valid = lgb.Dataset(np.asarray(X, np.float64)[held], y[held], reference=train)
            booster = lgb.train(params, train, MAX_TREES, valid_sets=[valid],
                                callbacks=[lgb.early_stopping(STOP_AFTER, verbose=False)])
            text = booster.model_to_string(num_iteration=booster.best_iteration)
        else:
            text = lgb.train(params, train, MAX_TREES // 2).model_to_string()
        return cls.from_text(text, "fitted trees")

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(n,) raw scores (log-odds) of (n, n_features) rows."""
        if len(X) == 0:
            return np.zeros(0)
        threads = 0 if len(X) >= THREADS_FROM_ROWS else 1  # 0: LightGBM's default, every core
        return self.booster.predict(np.asarray(X, np.float64), raw_score=True,
                                    num_threads=threads)

    @property
    def n_trees(self) -> int:
        return int(self.booster.num_trees())

    def to_text(self) -> str:
        """LightGBM's text model format."""
        return self.booster.model_to_string()

    @classmethod
    def from_text(cls, text: str, source: str, n_features: int | None = None) -> BoostedTrees:
        """Read `to_text`, refusing what LightGBM cannot parse, a model that is not one binary
        ensemble, or (with `n_features`) trees over another number of features."""
        import lightgbm as lgb

        _check_trees(text, source, n_features)
        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise ArtifactError(f"{source}: not a LightGBM model ({first}); "
                                f"{remedy(source)}") from None
        found = int(booster.num_feature())
        if booster.num_model_per_iteration() != 1:
            raise ArtifactError(f"{source}: a LightGBM model with "
                                f"{booster.num_model_per_iteration()} trees per iteration, "
                                f"expected 1 (binary); {remedy(source)}")
        if n_features is not None and found != n_features:
            raise ArtifactError(f"{source}: trees over {found} features, expected {n_features}; "
                                f"{remedy(source)}")
        return cls(booster, found)


def _check_trees(text: str, source: str, n_features: int | None) -> None:
    """Refuse model text whose trees LightGBM would walk out of its arrays (it checks little
    of what it parses, and a crafted file whose manifest was re-signed would crash the process
    in C): every tree plain (no categorical splits, no linear leaves), its children after their
    parent and within the tree, its split features within `n_features`, its leaves finite."""
    fix = remedy(source)
    blocks = text.split("\nTree=")[1:]
    if not blocks:
        raise ArtifactError(f"{source}: no trees in the LightGBM model text; {fix}")
    for number, block in enumerate(blocks):
        fields = dict(line.partition("=")[::2] for line in block.split("\n\n")[0].splitlines()[1:])
        try:
            leaves = int(fields["num_leaves"])
            inner = [[int(v) for v in fields.get(key, "").split()]
                     for key in ("left_child", "right_child", "split_feature", "decision_type")]
            values = np.array(fields["leaf_value"].split(), np.float64)
            plain = int(fields.get("num_cat", "0")) == 0 and int(fields.get("is_linear", "0")) == 0
        except (KeyError, ValueError):
            raise ArtifactError(f"{source}: tree {number} is not LightGBM's text format; "
                                f"{fix}") from None
        left, right, feature, kind = (np.array(a, np.int64) for a in inner)
        node = np.arange(leaves - 1)
        children = np.concatenate([left, right]) if len(left) == len(right) == leaves - 1 \
            else None
        ok = (leaves >= 1 and plain and children is not None and len(feature) == leaves - 1
              and len(kind) == leaves - 1 and not (kind & 1).any()
              and len(values) == leaves and np.isfinite(values).all()
              and ((children >= np.tile(node, 2) + 1) & (children < leaves - 1)
                   | (children < 0) & (~children < leaves)).all()
              and (feature >= 0).all()
              and (n_features is None or (feature < n_features).all()))
        if not ok:
            raise ArtifactError(f"{source}: tree {number} has nodes out of range (children "
                                f"before their parent or past its {leaves} leaves, features "
                                f"past {n_features}, categorical or non-finite leaves); {fix}")
