"""Reranker: gradient-boosted trees that turn each candidate label's evidence into a probability.

Cosine similarity to a prototype ranks items well within one label, but it is not comparable
across labels: a broad label (`role::program`) sits at cosine 0.66 from its own items where a
narrow one (`role::devel-lib`) sits at 0.85, so the narrow label wins the first place too often.
The reranker learns, on the validation split, P(candidate is a true label | its evidence) from
a few features per candidate (`FEATURES`): its cosine, how common the label is, the neighbour
votes, its rank and its distance to the best candidate, its co-occurrence with the leaders, and
its TF-IDF prototype's cosine and rank. Scores then read as probabilities.

The trees are fitted with scikit-learn's `HistGradientBoostingClassifier` (`BAG` ensembles,
averaged) and kept as plain arrays (`TreeEnsemble`), saved as safetensors, and walked by
scikit-learn's compiled predictor when it is installed and agrees, else with numpy, so a tagger
folder never holds a pickle and loads with any scikit-learn version, or none.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from metricls.artifacts import load_tensors
from metricls.errors import ArtifactError
from metricls.formats import RERANKER_FORMAT, check_array, check_format, remedy
from metricls.scoring import Scoring, vote_matrix, with_label_bias
from metricls.tfidf import rank_in_rows

FEATURES = ("cosine", "log_count", "vote", "vote_wide", "log_rank", "gap_to_top", "top_cosine",
            "co_occurrence", "tfidf_cosine", "tfidf_log_rank")
DEPTH = 20  # candidates (by cosine) the reranker scores per query, at least k
WIDE_KNN, WIDE_TEMPERATURE = 30, 1.0  # the "vote_wide" feature: a flat vote of 30 neighbours
LEADERS = 3  # "co_occurrence": how often the label goes with one of the 3 best candidates
MIN_ITEMS = 50  # validation items needed to fit one
TREES, LEARNING_RATE, LEAVES = 100, 0.1, 15  # at most; scikit-learn stops early on a held-out 10%
BAG = 3  # such ensembles averaged, each stopped on its own random 10%: less variance
# scikit-learn's compiled walk (`TreeEnsemble.logits`): below COMPILED_FROM_ROWS rows numpy's
# walk is as fast; from THREADS_FROM_ROWS on (one caller tagging a big batch) it runs on every
# core, below on one, since concurrent callers (server threads) with an OpenMP team each
# oversubscribe the cores (8 threads tagging batches of 32: 1,535 texts/s, against 2,113 walking)
COMPILED_FROM_ROWS, THREADS_FROM_ROWS = 2048, 16384


class Neighbours(NamedTuple):
    """What one search found: prototypes and training items, each (n, k) in FAISS order, and
    the (n, L) cosines to the TF-IDF prototypes when the tagger has them and read the texts."""

    proto_scores: np.ndarray
    proto_ids: np.ndarray
    item_scores: np.ndarray
    item_ids: np.ndarray
    tfidf: sp.csr_matrix | None = None


class Candidates(NamedTuple):
    """The labels a reranker scores for each query: ids (n, c) by cosine, -1 padding, and
    their features (n, c, len(FEATURES))."""

    ids: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class LabelStats:
    """What the features read from the training labels: counts and co-occurrence."""

    log_counts: np.ndarray  # (L,) log(1 + items per label)
    given: sp.csr_matrix  # (L, L): [m, l] = P(l | m), the share of m's items that carry l (l != m)

    @classmethod
    def of(cls, item_labels: sp.csr_matrix) -> LabelStats:
        Y = sp.csr_matrix(item_labels, dtype=np.float32)
        Y.data[:] = 1.0
        pairs = sp.csr_matrix(Y.T @ Y)
        counts = pairs.diagonal()
        pairs.setdiag(0)
        pairs.eliminate_zeros()
        given = sp.csr_matrix(sp.diags(1.0 / np.maximum(counts, 1.0)) @ pairs, dtype=np.float32)
        return cls(np.log1p(counts).astype(np.float32), given)


def candidate_features(found: Neighbours, item_labels: sp.csr_matrix, stats: LabelStats,
                       scoring: Scoring, depth: int) -> Candidates:
    """Features of the `depth` best candidates by (biased) cosine of each query.

    Args:
        found: the prototype search (n, >= depth), the training-item search (n, >= WIDE_KNN
            when there are that many items), and the TF-IDF cosines (zero features without).
        item_labels: (n_train, L) labels of the indexed training items.
        stats: `LabelStats.of(item_labels)`.
        scoring: its `knn`, `temperature` and label biases shape the "vote" and "cosine".
    """
    item_scores, item_ids = found.item_scores, found.item_ids
    cos = with_label_bias(found.proto_scores, found.proto_ids, scoring)[:, :depth]
    ids = found.proto_ids[:, :depth]
    real = ids >= 0
    safe = np.maximum(ids, 0)
    n, c = ids.shape
    votes = [vote_matrix(item_scores[:, :k], item_ids[:, :k], item_labels, t)
             for k, t in ((scoring.knn, scoring.temperature), (WIDE_KNN, WIDE_TEMPERATURE))]
    vote, wide = (pick(V, safe) for V in votes)
    top = np.where(real[:, :1], cos[:, :1], 0.0)
    cos = np.where(real, cos, top - 2.0)  # padding: far below every real candidate
    rank = np.broadcast_to(np.log1p(np.arange(c, dtype=np.float32)), (n, c))
    tfidf = tfidf_rank = np.zeros((n, c), np.float32)
    if found.tfidf is not None:
        tfidf = pick(found.tfidf, safe)
        tfidf_rank = np.log1p(rank_in_rows(found.tfidf, tfidf))
    X = np.stack([cos, stats.log_counts[safe], vote, wide, rank, top - cos,
                  np.broadcast_to(top, (n, c)), _co_occurrence(stats.given, safe, real, cos),
                  tfidf, tfidf_rank], axis=-1)
    return Candidates(ids, X.astype(np.float32))


def _co_occurrence(given: sp.csr_matrix, ids: np.ndarray, found: np.ndarray,
                   cos: np.ndarray) -> np.ndarray:
    """(n, c): max over the `LEADERS` best candidates m of max(cos_m, 0) * P(candidate | m)."""
    n, c = ids.shape
    lead = min(LEADERS, c)
    if n == 0 or lead == 0:
        return np.zeros((n, c), np.float32)
    weight = np.where(found[:, :lead], np.maximum(cos[:, :lead], 0.0), 0.0)  # (n, lead)
    m = np.broadcast_to(ids[:, :lead, None], (n, lead, c)).ravel()
    l_ = np.broadcast_to(ids[:, None, :], (n, lead, c)).ravel()
    share = np.asarray(given[m, l_], dtype=np.float32).reshape(n, lead, c)
    return (weight[:, :, None] * share).max(axis=1)


def pick(V: sp.csr_matrix, ids: np.ndarray) -> np.ndarray:
    """(n, c) entries V[i, ids[i, j]] of a sparse (n, L) matrix."""
    if ids.size == 0:
        return np.zeros(ids.shape, np.float32)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    return np.asarray(V[rows, ids.ravel()], dtype=np.float32).reshape(ids.shape)


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


@dataclass(frozen=True)
class Reranker:
    """Trees over `FEATURES` of the top `depth` candidates; `score` gives probabilities."""

    trees: TreeEnsemble
    depth: int = DEPTH

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n, c) probabilities for (n, c, len(FEATURES)) candidate features."""
        n, c, f = features.shape
        z = self.trees.logits(features.reshape(n * c, f)).reshape(n, c)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def to_tensors(self) -> dict[str, np.ndarray]:
        return self.trees.to_tensors() | {"candidates": np.array([self.depth], np.int64)}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], source: str) -> Reranker:
        trees = TreeEnsemble.from_tensors(t, source)
        depth = int(check_array(source, t, "candidates", "i", (1,))[0])
        if depth < 1 or trees.n_features != len(FEATURES):
            raise ArtifactError(f"{source}: a reranker over {trees.n_features} features of "
                                f"{depth} candidates, expected {len(FEATURES)} features of >= 1 "
                                f"candidates; {remedy(source)}")
        return cls(trees, depth)

    @classmethod
    def load(cls, path: Path) -> Reranker:
        """Read a reranker file written with `RERANKER_FORMAT` and `FEATURES` in its metadata."""
        tensors, meta = load_tensors(path)
        check_format(path, meta.get("format"), RERANKER_FORMAT)
        if meta.get("features") != ",".join(FEATURES):
            raise ArtifactError(f"{path}: trees over the features {meta.get('features')!r}, "
                                f"expected {','.join(FEATURES)!r}; {remedy(path)}")
        return cls.from_tensors(tensors, str(path))

    def top_k(self, cand: Candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most probable candidates per query: (scores f32, ids i64), -inf / -1 padding."""
        return ranked(self.score(cand.features), cand.ids, k)


def ranked(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row's candidates by score (padding, id -1, last) and keep k, padding to k."""
    scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    s, i = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
    return s, i


def fit_trees(X: np.ndarray, y: np.ndarray, seed: int) -> TreeEnsemble:
    """Boosted trees for P(y | X) (binary): `BAG` of scikit-learn's histogram gradient boosting
    ensembles (seeds seed, seed + 1, ...), averaged."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return TreeEnsemble.average([TreeEnsemble.from_sklearn(HistGradientBoostingClassifier(
        max_iter=TREES, learning_rate=LEARNING_RATE, max_leaf_nodes=LEAVES,
        random_state=seed + b).fit(X, y)) for b in range(BAG)])
