"""Boosted trees for the reranker: LightGBM, kept in its own text model format (no pickle).

`BoostedTrees.fit` trains one LightGBM ensemble (binary log-loss), stopped early on a seeded
10% of the rows; `logits` runs LightGBM's compiled predictor. A tagger folder keeps the
model's text (`to_text`) inside the reranker's safetensors file, and `from_text` reads it
back, refusing text that LightGBM cannot parse or trees over another number of features.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
# the lines of a plain tree (no categorical splits, no linear leaves): its arrays' kinds and
# lengths (inner: one per split, leaves - 1; leaf: one per leaf)
_TREE_ARRAYS = {"split_feature": (_INT, "inner"), "decision_type": (_INT, "inner"),
                "left_child": (_INT, "inner"), "right_child": (_INT, "inner"),
                "internal_count": (_INT, "inner"), "leaf_count": (_INT, "leaf"),
                "split_gain": (_FLOAT, "inner"), "threshold": (_FLOAT, "inner"),
                "internal_value": (_FLOAT, "inner"), "internal_weight": (_FLOAT, "inner"),
                "leaf_value": (_FLOAT, "leaf"), "leaf_weight": (_FLOAT, "leaf")}
_TREE_SCALARS = {"num_leaves": _INT, "num_cat": _INT, "is_linear": _INT, "shrinkage": _FLOAT}


def _check_trees(text: str, source: str, n_features: int | None) -> None:
    """Refuse model text whose trees LightGBM would walk out of its arrays (its parser checks
    little, and a crafted file whose manifest was re-signed would crash the process in C).

    The trees are read where LightGBM reads them, by the byte sizes of its ``tree_sizes``
    line, and each must be plain: only the lines above, each once, numbers in plain decimal,
    no categorical splits or linear leaves, every array as long as the tree's leaves say,
    every child after its parent and inside its tree, every split feature below `n_features`,
    every leaf value finite; the trees end where "end of trees" begins.
    """
    fix = remedy(source)

    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{source}: {what} in the LightGBM model text; {fix}")

    head, found, _ = text.partition("\nTree=")
    if not found:
        raise bad("no trees")
    sizes = next((line.partition("=")[2].split() for line in head.splitlines()
                  if line.startswith("tree_sizes=")), None)
    if not sizes or not all(_INT.fullmatch(v) and int(v) > 0 for v in sizes):
        raise bad("no tree_sizes line of positive sizes")
    data, at = text.encode(), len(head.encode()) + 1
    for number, size in enumerate(map(int, sizes)):
        segment, at = data[at:at + size], at + size
        if len(segment) != size or not segment.startswith(f"Tree={number}\n".encode()):
            raise bad(f"tree {number} not where tree_sizes puts it")
        _check_tree(segment.decode(errors="replace"), number, n_features, bad)
    if not data[at:].startswith(b"end of trees"):
        raise bad("more than tree_sizes says before 'end of trees'")


def _check_tree(segment: str, number: int, n_features: int | None,
                bad: Callable[[str], ArtifactError]) -> None:
    """`_check_trees` for one tree's text ("Tree=N" and its lines)."""
    fields: dict[str, str] = {}
    for line in segment.splitlines()[1:]:
        if not line:
            continue
        key, equals, value = line.partition("=")
        if not equals or key in fields or key not in _TREE_ARRAYS | _TREE_SCALARS:
            raise bad(f"tree {number} has the line {line[:40]!r}")
        fields[key] = value
    missing = sorted((set(_TREE_ARRAYS) | set(_TREE_SCALARS)) - set(fields))
    if missing:
        raise bad(f"tree {number} lacks {missing}")
    for key, pattern in _TREE_SCALARS.items():
        if not pattern.fullmatch(fields[key]):
            raise bad(f"tree {number} has {key}={fields[key][:20]!r}")
    leaves = int(fields["num_leaves"])
    if not 1 <= leaves <= 1 << 20 or int(fields["num_cat"]) or int(fields["is_linear"]):
        raise bad(f"tree {number} is not a plain tree of 1 or more leaves")
    arrays = {}
    for key, (pattern, per) in _TREE_ARRAYS.items():
        values = fields[key].split()
        wanted = leaves - 1 if per == "inner" else leaves
        unweighted = key == "leaf_weight" and leaves == 1 and not values  # a one-leaf tree
        if (len(values) != wanted and not unweighted) or not all(
                pattern.fullmatch(v) for v in values):
            raise bad(f"tree {number} has {key} of {len(values)} values, expected {wanted} "
                      "plain numbers")
        arrays[key] = np.array(values, np.int64 if pattern is _INT else np.float64)
    left, right, feature = arrays["left_child"], arrays["right_child"], arrays["split_feature"]
    children = np.concatenate([left, right])
    parents = np.tile(np.arange(leaves - 1), 2)
    inside = (((children > parents) & (children < leaves - 1))
              | (children < 0) & (~children < leaves))
    if not (inside.all() and (feature >= 0).all() and not (arrays["decision_type"] & 1).any()
            and (n_features is None or (feature < n_features).all())
            and np.isfinite(arrays["leaf_value"]).all()):
        raise bad(f"tree {number} has nodes out of range (children before their parent or "
                  f"past its {leaves} leaves, features past {n_features}, categorical splits "
                  f"or non-finite leaves)")
