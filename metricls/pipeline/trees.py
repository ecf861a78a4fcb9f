"""Boosted tree ensembles as plain arrays, and how they are walked (the reranker's runtime).

Trees fitted with scikit-learn (`fit.py`) are kept as flat arrays (`TreeEnsemble`), saved as
safetensors, and walked by scikit-learn's compiled predictor when it is installed and agrees,
else with numpy, so a tagger folder never holds a pickle and loads with any scikit-learn
version, or none.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from metricls.errors import ArtifactError
from metricls.formats import check_array, remedy

# scikit-learn's compiled walk (`TreeEnsemble.logits`): below COMPILED_FROM_ROWS rows numpy's
# walk is as fast; from THREADS_FROM_ROWS on (one caller tagging a big batch) it runs on every
# core, below on one, since concurrent callers (server threads) with an OpenMP team each
# oversubscribe the cores
COMPILED_FROM_ROWS, THREADS_FROM_ROWS = 2048, 16384


class _Compiled(NamedTuple):
    """What `TreeEnsemble.logits` hands scikit-learn's compiled walk."""

    trees: list  # TreePredictor per tree
    bitsets: np.ndarray  # no categorical splits: (0, 8) uint32
    features: np.ndarray  # (n_features,) uint32, the categorical-feature map (unused)
    threads: int  # OpenMP threads for big batches


@dataclass(frozen=True)
class TreeEnsemble:
    """A boosted tree ensemble as flat arrays; logit(x) = baseline + sum of the trees' leaves.

    Node i of any tree: go to `left[i]` when x[feature[i]] <= threshold[i], else `right[i]`;
    a leaf points to itself and holds `value[i]`. `roots` are the trees' first nodes.
    """

    feature: np.ndarray  # (nodes,) int64
    threshold: np.ndarray  # (nodes,) float64
    left: np.ndarray  # (nodes,) int64, global node ids
    right: np.ndarray  # (nodes,) int64
    value: np.ndarray  # (nodes,) float64
    roots: np.ndarray  # (trees,) int64
    tree_depths: np.ndarray  # (trees,) int64, levels below each root
    baseline: float
    n_features: int

    @classmethod
    def from_sklearn(cls, model) -> TreeEnsemble:
        """Export a fitted binary `HistGradientBoostingClassifier` (numeric features only)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "left",
                                                              "right", "value")}
        roots, depths, offset = [], [], 0
        for (tree,) in model._predictors:  # one tree per boosting iteration (binary)
            nodes = tree.nodes
            leaf = nodes["is_leaf"].astype(bool)
            own = np.arange(len(nodes)) + offset
            parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]))
            parts["threshold"].append(np.where(leaf, np.inf, nodes["num_threshold"]))
            parts["left"].append(np.where(leaf, own, nodes["left"].astype(np.int64) + offset))
            parts["right"].append(np.where(leaf, own, nodes["right"].astype(np.int64) + offset))
            parts["value"].append(np.where(leaf, nodes["value"], 0.0))
            roots.append(offset)
            offset += len(nodes)
            depths.append(int(nodes["depth"].max()))
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(feature=arrays["feature"].astype(np.int64),
                   threshold=arrays["threshold"].astype(np.float64),
                   left=arrays["left"].astype(np.int64), right=arrays["right"].astype(np.int64),
                   value=arrays["value"].astype(np.float64), roots=np.asarray(roots, np.int64),
                   tree_depths=np.asarray(depths, np.int64),
                   baseline=float(np.ravel(model._baseline_prediction)[0]),
                   n_features=int(model.n_features_in_))

    @classmethod
    def average(cls, parts: list[TreeEnsemble]) -> TreeEnsemble:
        """One ensemble whose logit is the mean of the `parts`' logits: their trees side by
        side, every leaf value divided by their number."""
        offsets = np.cumsum([0] + [len(p.value) for p in parts[:-1]])

        def joined(name: str, shift: bool = False) -> np.ndarray:
            return np.concatenate([getattr(p, name) + (o if shift else 0)
                                   for p, o in zip(parts, offsets)])

        return cls(feature=joined("feature"), threshold=joined("threshold"),
                   left=joined("left", True), right=joined("right", True),
                   value=joined("value") / len(parts), roots=joined("roots", True),
                   tree_depths=joined("tree_depths"),
                   baseline=float(np.mean([p.baseline for p in parts])),
                   n_features=parts[0].n_features)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(n,) raw scores of (n, n_features) rows, by scikit-learn's compiled tree walk when it
        is installed and agrees (`_compiled`), else by `walk`."""
        compiled = self._compiled if len(X) >= COMPILED_FROM_ROWS else None
        if compiled is None:
            return self.walk(X)
        return self._run(compiled, X, compiled.threads if len(X) >= THREADS_FROM_ROWS else 1)

    def _run(self, compiled: _Compiled, X: np.ndarray, threads: int) -> np.ndarray:
        rows = np.ascontiguousarray(X, dtype=np.float64)
        return self.baseline + sum(tree.predict(rows, compiled.bitsets, compiled.features, threads)
                                   for tree in compiled.trees)

    @functools.cached_property
    def _compiled(self) -> _Compiled | None:
        """scikit-learn's `TreePredictor`s over these arrays, one per tree (a private API, hence
        checked against `walk` on probe rows), or None to walk with numpy."""
        try:
            from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
            from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
            from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
        except ImportError:
            return None
        bounds = np.append(self.roots, len(self.value))
        if len(self.roots) == 0 or (np.diff(bounds) <= 0).any():
            return None  # trees not stored one after another
        no_bitsets = np.zeros((0, 8), np.uint32)
        trees = []
        for start, stop in itertools.pairwise(bounds):
            part = slice(start, stop)
            left, right = self.left[part] - start, self.right[part] - start
            size = stop - start
            if ((left < 0) | (left >= size) | (right < 0) | (right >= size)).any():
                return None
            nodes = np.zeros(size, PREDICTOR_RECORD_DTYPE)
            nodes["is_leaf"] = left == np.arange(size)
            nodes["left"], nodes["right"] = left, right
            nodes["feature_idx"] = self.feature[part]
            nodes["num_threshold"] = self.threshold[part]
            nodes["value"] = self.value[part]
            trees.append(TreePredictor(nodes, no_bitsets, no_bitsets))
        compiled = _Compiled(trees, no_bitsets, np.zeros(self.n_features, np.uint32),
                             _openmp_effective_n_threads())
        probe = self._probe()
        try:
            same = np.allclose(self._run(compiled, probe, 1), self.walk(probe))
        except (TypeError, ValueError, AttributeError):
            return None
        return compiled if same else None

    def _probe(self) -> np.ndarray:
        """256 rows of values drawn from the split thresholds, just below, at and just above
        them (zeros for trees that are single leaves)."""
        finite = self.threshold[np.isfinite(self.threshold)]
        values = np.concatenate([finite - 1e-6, finite, finite + 1e-6]) if finite.size \
            else np.zeros(1)
        rng = np.random.default_rng(0)
        return np.ascontiguousarray(rng.choice(values, (256, self.n_features)), dtype=np.float64)

    def walk(self, X: np.ndarray) -> np.ndarray:
        """(n,) raw scores of (n, n_features) rows with numpy: all trees walked together, level
        by level, each level only over the trees that are still that deep."""
        n = len(X)
        if n == 0 or len(self.roots) == 0:
            return np.full(n, self.baseline)
        columns = np.ascontiguousarray(X.T, dtype=np.float64).ravel()  # feature f of row r: f*n+r
        children, roots, live_per_level = self._walk
        node = np.broadcast_to(roots, (n, len(roots))).copy()
        row = np.arange(n)[:, None]
        for live in live_per_level:
            at = node[:, :live]
            right = columns[self.feature[at] * n + row] > self.threshold[at]
            node[:, :live] = children[2 * at + right]
        return self.baseline + self.value[node].sum(axis=1)

    @functools.cached_property
    def _walk(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """What `logits` walks, derived once: the children (node i: 2i left, 2i+1 right), the
        roots deepest tree first, and per level how many of those trees are still that deep."""
        children = np.stack([self.left, self.right], axis=1).ravel()
        order = np.argsort(-self.tree_depths, kind="stable")
        depths = self.tree_depths[order]
        live = [int(np.searchsorted(-depths, -level, side="left"))
                for level in range(int(depths[0]) if len(depths) else 0)]
        return children, self.roots[order], live

    def to_tensors(self) -> dict[str, np.ndarray]:
        arrays = {k: getattr(self, k) for k in ("feature", "threshold", "left", "right", "value",
                                                 "roots", "tree_depths")}
        return arrays | {"n_features": np.array([self.n_features], np.int64),
                         "baseline": np.array([self.baseline], np.float64)}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], source: str) -> TreeEnsemble:
        """Rebuild from `to_tensors`, refusing arrays that a walk would leave or loop in: every
        child inside the arrays and after its parent (a leaf points to itself), every root and
        feature index in range, thresholds not NaN, finite leaf values, and each tree's stored
        depth the one its nodes have."""
        nodes = len(check_array(source, t, "value", "f", (None,), finite=True))
        left, right, feature = (check_array(source, t, k, "i", (nodes,)).astype(np.int64)
                                for k in ("left", "right", "feature"))
        threshold = check_array(source, t, "threshold", "f", (nodes,))
        roots = check_array(source, t, "roots", "i", (None,)).astype(np.int64)
        depths = check_array(source, t, "tree_depths", "i", (len(roots),)).astype(np.int64)
        n_features = int(check_array(source, t, "n_features", "i", (1,))[0])
        baseline = float(check_array(source, t, "baseline", "f", (1,), finite=True)[0])
        fix = remedy(source)
        own = np.arange(nodes)
        leaf = (left == own) & (right == own)
        inner = (left > own) & (right > own) & (left < nodes) & (right < nodes)
        if not (leaf | inner).all():
            i = int(np.flatnonzero(~(leaf | inner))[0])
            raise ArtifactError(f"{source}: node {i} has children {int(left[i])} and "
                                f"{int(right[i])}, expected both after it and below {nodes} "
                                f"(a leaf: itself); {fix}")
        for name, ids, stop in (("roots", roots, nodes), ("feature", feature, n_features)):
            if ids.size and (ids.min() < 0 or ids.max() >= stop):
                raise ArtifactError(f"{source}: {name!r} span [{int(ids.min())}, "
                                    f"{int(ids.max())}], expected within [0, {stop}); {fix}")
        if np.isnan(threshold).any():
            raise ArtifactError(f"{source}: 'threshold' holds NaN, expected numbers; {fix}")
        found = _tree_depths(leaf, left, right, roots)
        if not np.array_equal(found, depths):
            i = int(np.flatnonzero(found != depths)[0])
            raise ArtifactError(f"{source}: tree {i} is {int(found[i])} deep, 'tree_depths' "
                                f"says {int(depths[i])}; {fix}")
        return cls(feature=feature, threshold=threshold.astype(np.float64), left=left,
                   right=right, value=t["value"].astype(np.float64), roots=roots,
                   tree_depths=depths, baseline=baseline, n_features=n_features)


def _tree_depths(leaf: np.ndarray, left: np.ndarray, right: np.ndarray,
                 roots: np.ndarray) -> np.ndarray:
    """How many levels each tree's walk from its root takes to reach only leaves (children
    come after their parents, so at most one level per node)."""
    depth = np.zeros(len(roots), np.int64)
    at, tree = roots, np.arange(len(roots))
    for level in range(1, len(leaf) + 1):
        go = ~leaf[at]
        if not go.any():
            break
        pairs = np.unique(np.stack([np.concatenate([left[at[go]], right[at[go]]]),
                                    np.tile(tree[go], 2)]), axis=1)  # shared nodes once
        at, tree = pairs
        depth[tree] = level
    return depth


