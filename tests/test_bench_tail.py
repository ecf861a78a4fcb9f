"""The tail benchmark (benchmarks/tail/): its rows agree with the tagger's own predictions, the
valid rows are out of fold, and its command line gives one error line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import build_tiny, replaced

from benchmarks.tail.run import bench_tail, main, parse_weights
from metricls import Tagger
from metricls.data.dataset import read_config_items
from metricls.errors import InputError
from metricls.metrics import precision_at_k, recall_at_k


def test_the_tail_rows_are_the_taggers_own_ranking(tiny_tagger_dir, tmp_path):
    tagger = Tagger.load(tiny_tagger_dir)
    assert tagger.state.reranker is not None
    weight = tagger.state.scoring.tail_weight
    out = tmp_path / "tail.json"
    assert main([str(tiny_tagger_dir), "--split", "test", "--weights", f"0,{weight}",
                 "--out", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().count("\n") == 2 + 2 + 2
    plain, own = result["rows"]
    assert (plain["weight"], own["weight"]) == (0.0, weight)
    test = read_config_items(tagger.config.data).subset("test")
    _, ids = tagger.predict_scores(test, k=10)
    Y = tagger.vocab.to_csr(test.labels)[0]
    assert own["R@10"] == pytest.approx(recall_at_k(ids, Y, 10))  # what predict ranks
    assert own["P@5"] == plain["P@5"] == pytest.approx(precision_at_k(ids, Y, 5))
    assert own["tail R@10"] >= plain["tail R@10"]  # rare labels rise after the fifth
    assert own["tail assignments"] > 0
    flat = replaced(tagger, scoring=dataclasses.replace(tagger.state.scoring, tail_weight=0.0))
    _, flat_ids = flat.predict_scores(test, k=10)
    assert plain["R@10"] == pytest.approx(recall_at_k(flat_ids, Y, 10))  # and without the tail


def test_valid_rows_are_out_of_fold_beside_in_sample(tiny_tagger_dir):
    tagger = Tagger.load(tiny_tagger_dir)
    weight = tagger.state.scoring.tail_weight
    result = bench_tail(tagger, "tiny", weights=[0.0, weight])
    rows = {(r["probabilities"], r["weight"]): r for r in result["rows"]}
    assert set(rows) == {(p, w) for p in ("out of fold", "in-sample") for w in (0.0, weight)}
    # the in-sample rows are the tagger's own valid predictions (its reranker saw them)
    valid = read_config_items(tagger.config.data).subset("valid")
    _, ids = tagger.predict_scores(valid, k=10)
    Y = tagger.vocab.to_csr(valid.labels)[0]
    assert rows["in-sample", weight]["R@10"] == pytest.approx(recall_at_k(ids, Y, 10))
    assert rows["in-sample", 0.0]["P@1"] >= rows["out of fold", 0.0]["P@1"]
    assert np.isclose(rows["out of fold", 0.0]["P@5"], rows["out of fold", weight]["P@5"])


def test_tail_harness_gives_one_error_line(tiny_tagger_dir, tmp_path, capsys, synthetic_path):
    assert parse_weights("0,1.5") == [0.0, 1.5]
    for bad in ("1,x", "-1", "nan", ""):
        with pytest.raises(InputError, match="--weights: expected"):
            parse_weights(bad)
    assert main([str(tiny_tagger_dir), "--split", "train", "--out", str(tmp_path / "t.json")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --split: expected valid or test, got 'train'")
    plain = build_tiny(tmp_path / "plain", synthetic_path, "index.rerank=false")
    with pytest.raises(InputError, match="needs a reranker"):
        bench_tail(plain, "plain")
    assert not (tmp_path / "t.json").exists()
