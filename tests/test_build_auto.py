"""index_vectors with backend auto: what it builds for large sets, sharded or not."""

from __future__ import annotations

import numpy as np
from conftest import TINY

import metricls.ann
from metricls import load_config
from metricls.ann import ShardedIndex
from metricls.bench.vectors import synthetic_vectors
from metricls.build import index_vectors


def test_auto_builds_reranked_8bit_hnsw_and_plain_shards(monkeypatch, synthetic_path):
    monkeypatch.setattr(metricls.ann, "LARGE_INDEX", 2_000)  # "large" from 2,000 vectors
    x = synthetic_vectors(3_200, 32, seed=5)
    vectors, queries = x[:3_000], x[3_000:]
    one = load_config(TINY, [f"data.path={synthetic_path}", "index.backend=auto",
                             "index.exact_below=1000"])
    index, info = index_vectors(vectors, queries, one, k=10, target_recall=0.95)
    assert info["backend"] == "hnsw" and info["storage"] == "sq8" and info["rerank"] == 2
    assert index.params["storage"] == "sq8" and info["recall@k"] >= 0.95
    two = load_config(TINY, [f"data.path={synthetic_path}", "index.backend=auto",
                             "index.exact_below=1000", "index.shards=2"])
    index, info = index_vectors(vectors, queries, two, k=10, target_recall=0.95)
    assert isinstance(index, ShardedIndex) and index.params["base"] == "hnsw"
    assert not {"rerank", "storage"} & set(index.params["base_params"])
    assert info["recall@k"] >= 0.95
    assert np.array_equal(index.search(vectors[:3], 1)[1][:, 0], [0, 1, 2])
