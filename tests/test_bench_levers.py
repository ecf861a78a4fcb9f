"""benchmarks/recall/levers.py on a small generated set: one JSON line per setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from metricls.bench.vectors import synthetic_vectors

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recall" / "levers.py"


@pytest.fixture(scope="module")
def levers():
    return load_script(SCRIPT)


@pytest.mark.parametrize("config, rows", [
    ("hnsw_refine(16, 40, kfs=(1, 2), efs=(16, 64))", 4),
    ("hnsw(16, 40, 'sq8')", 6),
    ("ivf(16, 8, 'Flat', probes=(1, 16))", 2),
])
def test_levers_writes_a_line_per_setting(levers, tmp_path, config, rows):
    vectors = tmp_path / "v.npy"
    np.save(vectors, synthetic_vectors(3_200, 32, seed=4))
    out = tmp_path / "levers.jsonl"
    levers.main([str(vectors), config, "--out", str(out), "--n", "3000", "--queries", "200",
                 "--sample", "1000"])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == rows and all(r["n"] == 3000 and r["qps"] > 0 for r in lines)
    assert max(r["recall"] for r in lines) > 0.9  # the most exact setting finds the neighbours
    assert (tmp_path / "v-exact-3000-200.npz").is_file()
