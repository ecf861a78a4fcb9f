import json

import numpy as np
import pytest
from typer.testing import CliRunner

from metricls.bench.recall import bench_set
from metricls.bench.vectors import (
    local_intrinsic_dimension,
    matched_synthetic,
    profile_vectors,
    synthetic_vectors,
)
from metricls.cli import app
from metricls.errors import InputError


def test_synthetic_vectors_are_clustered_and_normalised():
    x = synthetic_vectors(2000, 64, seed=1)
    assert x.shape == (2000, 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # low intrinsic dimension: 16 components hold almost all the variance
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    assert s[:16].sum() / s.sum() > 0.9
    # clustered: nearest neighbours are much closer than random pairs
    sims = x[:200] @ x.T
    np.fill_diagonal(sims[:, :200], -1)
    assert np.median(sims.max(axis=1)) > np.median(sims) + 0.3


def test_bench_set_flat_is_exact_and_hnsw_close():
    x = synthetic_vectors(3000, 32, seed=2)
    rows = bench_set("t", x[:2500], x[2500:], backends=("flat", "hnsw"), singles=20)
    flat = [r for r in rows if r["backend"] == "flat"]
    assert flat[0]["recall@10"] == 1.0 and flat[0]["recall@1"] == 1.0
    best_hnsw = max(r["recall@10"] for r in rows if r["backend"] == "hnsw")
    assert best_hnsw >= 0.95
    assert all(r["qps_batched"] > 0 and r["latency_p99_ms"] >= r["latency_p50_ms"] for r in rows)


def test_bench_recall_cli_quick_with_tagger(tiny_tagger_dir, tmp_path):
    out = tmp_path / "recall.json"
    res = CliRunner().invoke(app, ["bench", "recall", "--quick", "--tagger", str(tiny_tagger_dir),
                                   "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    sets = {r["set"] for r in result["rows"]}
    assert {"tagger:tiny", "synthetic-1000", "synthetic-10000"} <= sets
    assert out.with_suffix(".png").stat().st_size > 1000
    assert result["summary"]["tagger:tiny"]["flat"]["recall@10"] == 1.0


def test_bench_set_sharded_and_product_quantized_variants():
    x = synthetic_vectors(3300, 32, seed=3)
    rows = bench_set("t", x[:3000], x[3000:], backends=("flat", "sharded-flat", "ivf-pq"),
                     singles=5)
    sharded = next(r for r in rows if r["backend"] == "sharded-flat")
    flat = next(r for r in rows if r["backend"] == "flat")
    assert sharded["recall@10"] == 1.0 and sharded["memory_bytes"] == flat["memory_bytes"]
    pq = [r for r in rows if r["backend"] == "ivf-pq"]
    assert [r["params"] for r in pq] == [{"nprobe": 4}, {"nprobe": 16}, {"nprobe": 64}]
    assert all(r["memory_bytes"] < flat["memory_bytes"] / 2 for r in pq)  # codes, not floats
    assert pq[-1]["recall@10"] > 0.5


def test_bench_recall_cli_picks_backends_and_sizes(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "recall", "--backends", "sharded-flat",
                                   "--sizes", "1000", "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert {(r["set"], r["backend"]) for r in rows} == {("synthetic-1000", "flat"),
                                                        ("synthetic-1000", "sharded-flat")}
    res = CliRunner().invoke(app, ["bench", "recall", "--backends", "annoy", "--out", str(out)])
    assert res.exit_code == 2 and "backends: unknown ['annoy']" in res.output
    res = CliRunner().invoke(app, ["bench", "recall", "--sizes", "10,x", "--out", str(out)])
    assert res.exit_code == 2 and "expected comma-separated int values, got '10,x'" in res.output


def _subspace(n: int, dim: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_local_intrinsic_dimension_finds_the_dimension_of_the_data():
    low, high = _subspace(5000, 64, 4, 0), _subspace(5000, 64, 24, 1)
    assert 2.5 < local_intrinsic_dimension(low) < 5.5
    assert local_intrinsic_dimension(high) > 2 * local_intrinsic_dimension(low)
    # in 256-d, float32 puts a point a little away from itself: it must not be its neighbour
    assert 6.0 < local_intrinsic_dimension(_subspace(5000, 256, 8, 7)) < 10.0


def test_local_intrinsic_dimension_of_duplicates_and_tiny_sets_is_unknown(tmp_path):
    copies = np.repeat(_subspace(150, 16, 5, 1), 20, axis=0)
    assert local_intrinsic_dimension(copies) is None
    assert local_intrinsic_dimension(_subspace(15, 16, 5, 1)) is None
    assert profile_vectors(copies)["lid"] is None
    with pytest.raises(InputError, match="matched: the set's local dimension could not be"):
        matched_synthetic(profile_vectors(copies), 3000)


def test_profile_measures_spectrum_and_lid():
    x = _subspace(4000, 32, 6, 2)
    profile = profile_vectors(x)
    assert profile["n"] == 4000 and profile["dim"] == 32 and len(profile["spectrum"]) == 32
    assert abs(sum(profile["spectrum"]) - 1) < 1e-4 and profile["dims_for_90%"] <= 6
    assert sum(profile["spectrum"][6:]) < 1e-4  # nothing outside the 6-d subspace
    assert 3 < profile["lid"] < 7


def test_matched_synthetic_has_the_real_spectrum_and_lid():
    real = np.concatenate([_subspace(3000, 48, 5, 3), _subspace(3000, 48, 20, 4)])
    profile = profile_vectors(real)
    synthetic, power = matched_synthetic(profile, 6000, seed=1)
    like = profile_vectors(synthetic)
    assert synthetic.shape == (6000, 48) and power > 0
    assert abs(like["lid"] - profile["lid"]) / profile["lid"] < 0.15
    assert abs(like["participation_ratio"] - profile["participation_ratio"]) \
        / profile["participation_ratio"] < 0.3
    generic = profile_vectors(synthetic_vectors(6000, 48, seed=1))
    assert abs(generic["lid"] - profile["lid"]) > abs(like["lid"] - profile["lid"])


def _spread_but_locally_flat(n: int, dim: int, seed: int) -> np.ndarray:
    """As real embeddings are: variance spread over many directions (cluster centres in all
    of them) but few directions around each point (each cluster in its own 3-d subspace)."""
    rng = np.random.default_rng(seed)
    clusters = n // 50
    centres = rng.standard_normal((clusters, dim)) / np.arange(1, dim + 1) ** 0.3  # decaying
    bases = rng.standard_normal((clusters, 3, dim)) * 0.3
    which = rng.integers(0, clusters, n)
    x = centres[which] + np.einsum("nk,nkd->nd", rng.standard_normal((n, 3)), bases[which])
    x += 1.5 * rng.standard_normal(dim) / np.sqrt(dim)  # a common direction, as real sets have
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_matched_synthetic_keeps_a_spread_spectrum_when_the_lid_is_low():
    """A low LID used to be bought by gathering the whole set's variance into a few
    directions (participation ratio 8 against 34 on real embeddings); the centres now carry
    what the clusters do not, so the spectrum stays the real one."""
    profile = profile_vectors(_spread_but_locally_flat(6000, 48, 5))
    assert profile["participation_ratio"] > 30 and profile["lid"] < 10
    synthetic, _ = matched_synthetic(profile, 6000, seed=2)
    like = profile_vectors(synthetic)
    assert abs(like["participation_ratio"] - profile["participation_ratio"]) \
        / profile["participation_ratio"] < 0.1
    assert abs(like["lid"] - profile["lid"]) / profile["lid"] < 0.15
    assert np.allclose(np.cumsum(like["spectrum"])[:10], np.cumsum(profile["spectrum"])[:10],
                       atol=0.05)
    assert abs(like["mean_norm"] - profile["mean_norm"]) < 0.03


def test_bench_recall_on_the_users_texts(tiny_tagger_dir, tmp_path):
    texts = tmp_path / "my-texts.txt"
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "audio", "video", "python", "editor", "kernel"]
    texts.write_text("".join(" ".join(rng.choice(words, 4)) + f" item{i}\n"
                             for i in range(1500)))
    out = tmp_path / "own" / "recall.json"
    res = CliRunner().invoke(app, ["bench", "recall", "--tagger", str(tiny_tagger_dir),
                                   "--texts", str(texts), "--queries", "100", "--backends",
                                   "hnsw", "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert {r["set"] for r in result["rows"]} == {"real-my-texts-1300"}  # no synthetic sets
    flat = next(r for r in result["rows"] if r["backend"] == "flat")
    assert flat["recall@10"] == 1.0 and flat["n"] == 1300
    hnsw = [r for r in result["rows"] if r["backend"] == "hnsw"]
    assert len(hnsw) == 7 and max(r["recall@10"] for r in hnsw) > 0.9
    for r in result["rows"]:
        assert r["build_s"] >= 0 and r["memory_bytes"] > 0 and r["qps_single"] > 0
        assert r["latency_p99_ms"] >= r["latency_p50_ms"] > 0
    assert result["profiles"]["real-my-texts-1300"]["lid"] > 1
    assert "real-my-texts-1300 | flat" in res.output
    assert out.with_suffix(".png").stat().st_size > 1000


def test_bench_recall_on_the_users_vectors_with_a_matched_synthetic_set(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, _subspace(2600, 16, 5, 5) * 3.0)  # not normalised: the benchmark does it
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "recall", "--vectors", str(path), "--queries",
                                   "100", "--matched", "--backends", "ivf", "--out", str(out),
                                   "--threads", "1"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert set(result["profiles"]) == {"real-emb-2400", "synthetic-like-emb-2400"}
    assert {r["set"] for r in result["rows"]} == set(result["profiles"])
    real, like = (result["profiles"][k]["lid"] for k in ("real-emb-2400",
                                                          "synthetic-like-emb-2400"))
    assert abs(like - real) / real < 0.2


@pytest.mark.parametrize(("args", "message"), [
    (["--texts", "{t}"], "texts: needs a tagger to embed them (--tagger FOLDER)"),
    (["--texts", "{t}", "--vectors", "{v}"], "texts, vectors: give one of them, not both"),
    (["--vectors", "{t}"], "not a readable .npy array"),
    (["--vectors", "{v}", "--queries", "46"], "100 rows; expected at least 2 x queries + 10 = 102"),
    (["--vectors", "{v}", "--size", "5"], "size: expected an int >= 10, got 5"),
    (["--vectors", "{bad}"], "bad.npy: row 7 is zero or not finite"),
    (["--vectors", "{empty}"], "empty.npy: not a readable .npy array (No data left in file)"),
    (["--vectors", "{npz}"], "a.npz: a .npz archive; expected a .npy file"),
    (["--vectors", "{flat}"], "expected a numeric array of shape (n >= 2, dim >= 1), got "
                              "float64 (300, 0)"),
    (["--matched"], "matched: needs the user's own set"),
    (["--vectors", "{v}", "--queries", "0"], "queries: expected an int >= 1, got 0"),
])
def test_bench_recall_rejects_bad_own_sets(tmp_path, args, message):
    t, v, bad = tmp_path / "t.txt", tmp_path / "v.npy", tmp_path / "bad.npy"
    empty, npz, flat = tmp_path / "empty.npy", tmp_path / "a.npz", tmp_path / "flat.npy"
    empty.write_bytes(b"")
    np.savez(npz, x=np.ones((50, 4)))
    np.save(flat, np.ones((300, 0)))
    t.write_text("one\ntwo\n")
    np.save(v, np.ones((100, 4), dtype=np.float32))
    broken = np.ones((50, 4), dtype=np.float32)
    broken[7] = np.nan
    np.save(bad, broken)
    out = tmp_path / "r.json"
    argv = [a.format(t=t, v=v, bad=bad, empty=empty, npz=npz, flat=flat) for a in args]
    res = CliRunner().invoke(app, ["bench", "recall", *argv, "--out", str(out)])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not out.exists()
