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
