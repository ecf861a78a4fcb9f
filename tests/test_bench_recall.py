import json

import numpy as np
from typer.testing import CliRunner

from metricls.bench.recall import bench_set, synthetic_vectors
from metricls.cli import app


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
