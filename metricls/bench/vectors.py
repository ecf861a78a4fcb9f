"""Vector sets for the recall benchmark: the user's own (texts embedded by a tagger, or a .npy
file), synthetic ones, and the measurements that make a synthetic set look like a real one.

A set's profile is what makes ANN search hard on it: the spectrum of its covariance (how many
directions carry the variance) and its local intrinsic dimension (LID: how many directions
the nearest neighbours of a point spread over, estimated by maximum likelihood from the
distances to the 20 nearest, Levina & Bickel 2004). `matched_synthetic` draws a Gaussian
mixture with the real covariance spectrum and fits the spread inside its clusters until its
LID equals the real one, so a cheap synthetic set stands in for an expensive real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metricls.ann.faiss_lib import faiss
from metricls.errors import InputError
from metricls.prototypes import normalize_rows

LID_NEIGHBOURS = 20
PROFILE_SAMPLE = 50_000  # rows whose covariance and neighbourhoods are measured
LID_POINTS = 2_000  # points whose LID is estimated (against the whole sample)
DUPLICATE_DISTANCE = 1e-2  # closer neighbours of a unit vector count as its duplicates
POINTS_PER_CLUSTER = 100  # matched sets: one Gaussian cluster per this many points
WITHIN_SHARE = 0.5  # matched sets: the clusters' share of the variance in the leading direction


def synthetic_vectors(n: int, dim: int = 256, *, seed: int = 0, latent: int = 16,
                      clusters: int = 256) -> np.ndarray:
    """(n, dim) float32 normalised vectors with clusters and a low intrinsic dimension: a
    `latent`-dimensional mixture of `clusters` Gaussians (scales log-uniform in [0.1, 0.6])
    lifted linearly into `dim` dimensions, plus 5% isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(0.6), size=clusters)).astype(np.float32)
    which = rng.integers(0, clusters, size=n)
    z = centres[which] + scales[which, None] * rng.standard_normal((n, latent), np.float32)
    lift = rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    x = z @ lift + 0.05 * rng.standard_normal((n, dim), np.float32)
    return normalize_rows(x)


def profile_vectors(vectors: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """What makes a set hard to search: its covariance spectrum and local intrinsic dimension.

    Returns:
        {"n", "dim", "mean_norm": norm of the mean vector, "spectrum": covariance eigenvalues,
        largest first, as fractions of the total variance, "dims_for_90%": directions holding
        90% of it, "participation_ratio": (sum l)^2 / sum l^2, "lid": median LID over
        `LID_POINTS` points (None: too few rows, or too many duplicates), "lid_neighbours": 20}.
    """
    sample = _sample(vectors, PROFILE_SAMPLE, seed)
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample - mean
    eig = np.clip(np.linalg.eigvalsh(centred.T @ centred / len(sample))[::-1], 0, None)
    fractions = eig / eig.sum()
    return {"n": len(vectors), "dim": int(vectors.shape[1]),
            "mean_norm": round(float(np.linalg.norm(mean)), 4),
            "spectrum": [round(float(f), 6) for f in fractions],
            "dims_for_90%": int(np.searchsorted(np.cumsum(fractions), 0.9) + 1),
            "participation_ratio": round(float(eig.sum() ** 2 / (eig ** 2).sum()), 2),
            "lid": _rounded(local_intrinsic_dimension(sample, seed=seed)),
            "lid_neighbours": LID_NEIGHBOURS}


def local_intrinsic_dimension(vectors: np.ndarray, *, seed: int = 0) -> float | None:
    """Median maximum-likelihood LID of `LID_POINTS` rows of `vectors` from their 20 nearest
    other rows (the point itself, found by id, and rows within `DUPLICATE_DISTANCE` of it, its
    duplicates up to float error, are skipped); None when no point has 20 such neighbours."""
    if len(vectors) <= LID_NEIGHBOURS + 1:
        return None
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), min(LID_POINTS, len(vectors)), replace=False)
    squared, ids = faiss.knn(np.ascontiguousarray(vectors[rows]),
                             np.ascontiguousarray(vectors), LID_NEIGHBOURS + 9,
                             metric=faiss.METRIC_L2)
    estimates = []
    for row, found, distances in zip(rows, ids, squared):
        distances = np.sqrt(np.clip(distances[(found >= 0) & (found != row)], 0, None))
        distances = distances[distances > DUPLICATE_DISTANCE][:LID_NEIGHBOURS]
        if len(distances) < LID_NEIGHBOURS:
            continue  # a point among many duplicates has no local dimension to speak of
        logs = np.log(distances[-1] / distances[:-1])
        if logs.sum() > 0:
            estimates.append(len(logs) / logs.sum())
    return float(np.median(estimates)) if estimates else None


def matched_synthetic(profile: dict[str, Any], n: int, *, seed: int = 0) -> tuple[np.ndarray,
                                                                                  float]:
    """(n, dim) vectors with `profile`'s covariance spectrum and mean norm whose LID matches it:
    n / 100 Gaussian clusters; each direction's variance is split between the members and the
    centres (`_mixture`), so the whole set keeps the real spectrum, and the power that shapes
    the split is fitted by bisection so that a sample of the size the profile measured has the
    profile's LID. Returns (vectors, the fitted power)."""
    if profile["lid"] is None:
        raise InputError("matched: the set's local dimension could not be estimated (fewer than "
                         f"{LID_NEIGHBOURS + 2} rows, or too many duplicates)")
    clusters = max(1, n // POINTS_PER_CLUSTER)
    target, fit_rows = profile["lid"], min(profile["n"], PROFILE_SAMPLE)  # LID depends on n
    low, high = 0.25, 16.0  # a larger power concentrates each cluster in fewer directions
    for _ in range(12):
        power = (low * high) ** 0.5
        sample = _mixture(profile, fit_rows, power, clusters, seed)
        lid = local_intrinsic_dimension(sample, seed=seed)
        low, high = (power, high) if lid is None or lid > target else (low, power)
    power = round((low * high) ** 0.5, 3)
    return _mixture(profile, n, power, clusters, seed), power


def _mixture(profile: dict[str, Any], n: int, power: float, clusters: int,
             seed: int) -> np.ndarray:
    """A Gaussian mixture whose total covariance has `profile`'s spectrum: each direction's
    variance is split between the clusters' members and their centres, the members' share
    being `WITHIN_SHARE` x (its variance / the largest) ^ (`power` - 1), at most all of it.
    Power 1: every direction shared alike; a larger power keeps the members in the leading
    directions (fewer local directions, a lower LID); a smaller one spreads them (a higher
    LID). The two parts add up to the real spectrum, whatever the power."""
    rng = np.random.default_rng(seed)
    dim = profile["dim"]
    # unit vectors around a mean of norm m vary by 1 - m^2 in all: so the mixture's squared
    # norms are 1 on average, and normalising them keeps the mean and the spectrum
    spectrum = np.asarray(profile["spectrum"], dtype=np.float64) \
        * max(1.0 - profile["mean_norm"] ** 2, 0.0)
    relative = spectrum / max(spectrum.max(), 1e-300)
    share = np.zeros(dim)
    used = relative > 0
    share[used] = np.minimum(1.0, WITHIN_SHARE * relative[used] ** (power - 1.0))
    within = share * spectrum
    between = spectrum - within
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    mean = rotation[0] * profile["mean_norm"]  # any direction: the rotation is random anyway
    centres = _with_covariance(rng.standard_normal((clusters, dim)), between)
    out = np.empty((n, dim), dtype=np.float32)
    block = 65_536
    for start in range(0, n, block):
        size = min(block, n - start)
        which = rng.integers(0, clusters, size=size)
        own = rng.standard_normal((size, dim)) * np.sqrt(within)
        out[start:start + size] = (centres[which] + own) @ rotation.T + mean
    return normalize_rows(out)


def _with_covariance(draws: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Rows with mean 0 and covariance exactly diag(`variances`), from (m, dim) random `draws`:
    a few hundred random centres in 256 dimensions would otherwise have a spectrum far from the
    one asked for. With m <= dim that cannot be: the draws, scaled."""
    m, dim = draws.shape
    if m <= dim:
        return draws * np.sqrt(variances)
    q, _ = np.linalg.qr(draws - draws.mean(axis=0))  # orthonormal, mean-0 columns
    return q * np.sqrt(m * variances)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(vectors) <= size:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def load_vectors(path: str | Path) -> np.ndarray:
    """A .npy file of (n, dim) finite vectors, memory-mapped, as L2-normalised float32 rows."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise InputError(f"{path}: no such file (expected a .npy file of vectors)")
    try:
        array = np.load(source, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: a .npz archive; expected a .npy file of one array (n, dim)")
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1 \
            or array.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a numeric array of shape (n >= 2, dim >= 1), got "
                         f"{array.dtype} {array.shape}")
    vectors = np.empty(array.shape, dtype=np.float32)
    for start in range(0, len(array), 65_536):
        block = np.asarray(array[start:start + 65_536], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=1) | ~(np.abs(block).sum(axis=1) > 0)
        if bad.any():
            raise InputError(f"{path}: row {start + int(np.argmax(bad))} is zero or not "
                             "finite; expected finite, non-zero vectors")
        vectors[start:start + len(block)] = normalize_rows(block)
    return vectors


def embed_texts(tagger: str | Path, path: str | Path, *, block: int = 50_000) -> np.ndarray:
    """The texts of `path` (one per line, or a table's text field) embedded by a tagger."""
    from metricls.data.items import read_texts
    from metricls.progress import progress
    from metricls.tagger import Tagger

    model = Tagger.load(tagger)
    texts = read_texts(path, model.config.data.text_columns)
    if len(texts) < 2:
        raise InputError(f"{path}: {len(texts)} text(s); expected at least 2")
    first = model.embed(texts[:block])
    vectors = np.empty((len(texts), first.shape[1]), dtype=np.float32)
    vectors[:len(first)] = first
    for start in progress(range(block, len(texts), block), desc="embed"):
        vectors[start:start + block] = model.embed(texts[start:start + block])
    return vectors
