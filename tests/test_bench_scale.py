"""The scale benchmark (benchmarks/scale/): the generated data, and a whole run whose stages never
hold items x labels."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import scipy.sparse as sp
from conftest import replaced

from benchmarks.scale.labels import label_texts
from benchmarks.scale.labels import main as labels_main
from benchmarks.scale.run import STAGES, bench_scale, main, markdown_summary
from benchmarks.scale.scale_data import generate_data
from metricls.data.labels import LabelVocab
from metricls.metrics import precision_at_k
from metricls.prototypes import mean_prototypes

GROWTH_LIMIT_MB = 500  # what a stage may add to the memory of a process that imported metricls


def test_generated_data_is_power_law_and_its_features_follow_the_labels(tmp_path):
    info = generate_data(tmp_path, n_items=4000, n_labels=40, dim=32, seed=1)
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    features = np.load(tmp_path / "features.npy")
    assert features.shape == (4000, 32) and [r["id"] for r in rows[:3]] == ["i0", "i1", "i2"]
    assert all(1 <= len(set(r["labels"])) == len(r["labels"]) <= 4 for r in rows)
    counts = Counter(label for r in rows for label in r["labels"])
    # p(label l) ~ 1 / (l + 1): label 0 about twice as frequent as label 1, ten times label 9
    assert 1.5 < counts["l0"] / counts["l1"] < 2.5 and 7 < counts["l0"] / counts["l9"] < 14
    assert info["labels_used"] == len(counts) == 40
    assert info["items_per_label"]["max"] == counts["l0"]
    # features are clustered by label: mean prototypes of half the items tag the other half
    vocab = LabelVocab.fit([r["labels"] for r in rows])
    Y = sp.csr_matrix(vocab.to_csr([r["labels"] for r in rows])[0])
    prototypes, _ = mean_prototypes(features[:2000], Y[:2000])
    top = np.argsort(-(features[2000:] @ prototypes.T), axis=1)[:, :1]
    prior = np.zeros((2000, 1), dtype=np.int64)  # always the most frequent label
    assert precision_at_k(top, Y[2000:], 1) > precision_at_k(prior, Y[2000:], 1) + 0.3


def test_bench_scale_stages_never_hold_an_items_x_labels_array(tmp_path):
    """100,000 items x ~4,700 labels: a dense float32 items x labels array (~1.8 GB) would not
    fit in what any stage is allowed to add to its process (`GROWTH_LIMIT_MB`), nor would one
    of the 20,000 validation items x labels (~0.7 GB as int64 ids)."""
    out = tmp_path / "scale.json"
    overrides = ["encoder.head.hidden_dim=32", "encoder.head.out_dim=16", "train.batch_size=64",
                 "train.labels_per_batch=16", "index.backend=flat"]
    result = bench_scale(items=100_000, labels=10_000, dim=16, alpha=0.0, splits=(0.025, 0.2),
                         overrides=overrides, out=out, workdir=tmp_path / "work")
    assert json.loads(out.read_text()) == result
    n_labels = len(json.loads((tmp_path / "work" / "tagger" / "labels.json").read_text())["labels"])
    dense_mb = 100_000 * n_labels * 4 / 2**20
    assert dense_mb > 3 * GROWTH_LIMIT_MB
    assert list(result["stages"]) == list(STAGES)
    for name, stage in result["stages"].items():
        assert stage["seconds"] >= 0 and 0 < stage["peak_anon_mb"] <= stage["peak_rss_mb"]
        assert stage["peak_rss_mb"] - stage["startup_rss_mb"] < GROWTH_LIMIT_MB, name
    stages = result["stages"]
    assert stages["generate"]["labels_used"] == 10_000
    assert stages["prototypes"]["labels_with_items"] == n_labels
    assert stages["prototypes"]["prototypes_shape"] == [n_labels, 16]
    assert stages["train"]["history"][0]["epoch"] == 1
    assert stages["build"]["valid"]["n_items"] > 19_000
    lines = (tmp_path / "work" / "items.jsonl").read_text().splitlines()
    assert stages["tag"]["items_tagged"] == 100_000
    assert stages["tag"]["n_test"] == sum('"split":"test"' in line for line in lines)
    for name in ("metricls", "most_frequent"):
        assert all(0 <= result["quality"][name][key] <= 1 for key in ("P@1", "P@5", "R@5"))
    assert result["peak_rss_mb"] == max(s["peak_rss_mb"] for s in stages.values())
    assert "| tag |" in markdown_summary(result)


def test_bench_scale_cli_refuses_bad_arguments_before_running(tmp_path, capsys):
    assert main(["--items", "5", "--out", str(tmp_path / "x")]) == 2
    assert "error: items: expected an int >= 100, got 5" in capsys.readouterr().err
    assert main(["--set", "index.backend=annoy", "--out", str(tmp_path / "x")]) == 2
    assert "index.backend = 'annoy' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_validation_recall_in_blocks_equals_one_block(monkeypatch):
    import torch

    from metricls.config import EncoderConfig
    from metricls.encoders.model import build_model
    from metricls.training import trainer

    rng = np.random.default_rng(0)
    model = build_model(EncoderConfig(backbones=("features",)), feature_dim=8)
    prepared = model.prepare(None, rng.normal(size=(300, 8)).astype(np.float32))
    vectors = torch.randn(40, model.out_dim)
    Y = sp.csr_matrix((rng.random((300, 40)) < 0.1).astype(np.float32))
    bias = torch.randn(40)
    whole = trainer._valid_recall(model, prepared, 300, vectors, Y)
    biased = trainer._valid_recall(model, prepared, 300, vectors, Y, bias)
    monkeypatch.setattr(trainer, "SCORE_BLOCK", 7 * 40)  # 7 items at a time
    assert trainer._valid_recall(model, prepared, 300, vectors, Y) == whole > 0
    assert trainer._valid_recall(model, prepared, 300, vectors, Y, bias) == biased > 0
    assert biased != whole  # the biases change the ranking


def test_scoring_in_batches_equals_one_batch(tiny_tagger_dir, monkeypatch):
    from metricls import Tagger
    from metricls.pipeline import tag

    tagger = Tagger.load(tiny_tagger_dir)
    texts = [f"w{i % 20}x{i % 4} noise{i % 30}" for i in range(50)]
    emb = tagger.embed(texts)
    whole = tag.score(tagger.state, emb, 5, texts)  # texts: the reranker reads their TF-IDF
    monkeypatch.setattr(tag, "SCORE_BATCH", 7)
    batched = tag.score(tagger.state, emb, 5, texts)
    np.testing.assert_array_equal(batched[1], whole[1])
    np.testing.assert_array_equal(batched[0], whole[0])


def test_prototype_only_scoring_never_searches_the_items(tiny_tagger_dir):
    import dataclasses

    from metricls import Tagger

    loaded = Tagger.load(tiny_tagger_dir)  # the blend's scoring, not the reranker's
    tagger = replaced(loaded, reranker=None,
                      scoring=dataclasses.replace(loaded.state.scoring, blend=1.0))
    texts = ["w1x0 w1x2 noise3", "w4x1 w7x3 w7x0 noise1"]
    expected = tagger.predict_scores(texts, k=5)

    class Untouchable:
        ntotal = tagger.state.item_index.ntotal

        def search(self, *args, **kwargs):
            raise AssertionError("the item index was searched")

    got = replaced(tagger, item_index=Untouchable()).predict_scores(texts, k=5)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def test_label_texts_give_every_label_items_and_words_of_its_own(tmp_path):
    path = label_texts(tmp_path / "items.jsonl", n_items=600, n_labels=100)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 600
    counts = Counter(label for row in rows for label in row["labels"])
    assert len(counts) == 100 and min(counts.values()) >= 6  # 600 // 100
    for row in rows[:50]:  # each label's own words are in the text
        words = set(row["text"].split())
        for label in row["labels"]:
            own = label.split("::l")[1]
            assert sum(w.startswith(f"t{own}w") for w in words) == 2


def test_label_growth_times_tagging_at_each_label_count(tmp_path, capsys):
    out = tmp_path / "growth.json"
    assert labels_main(["--labels", "20,80", "--items", "800", "--queries", "10",
                        "--batch", "50", "--set", "encoder.lexical.buckets=4096",
                        "--set", "encoder.lexical.dim=16", "--out", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    small, large = result["rows"]
    assert [small["labels"], large["labels"]] == [20, 80]
    assert result["overrides"] == ["encoder.lexical.buckets=4096", "encoder.lexical.dim=16"]
    assert small["vocabulary"] <= 20 < large["vocabulary"] <= 80
    for row in (small, large):
        assert 0 < row["one_text_ms"]["p50"] <= row["one_text_ms"]["p99"]
        assert all(v > 0 for v in row["one_text_parts_ms"].values())
        assert row["batch_texts_per_s"] > 0 and row["tfidf_nonzeros"] > 0
    assert large["tfidf_nonzeros"] > small["tfidf_nonzeros"]  # one TF-IDF row per label
    assert out.with_suffix(".md").read_text().count("\n| ") == 3
    assert "| labels | one text p50 ms |" in capsys.readouterr().out


def test_label_growth_refuses_bad_arguments_before_running(tmp_path, capsys):
    out = tmp_path / "growth.json"
    for args, message in ((["--labels", "10,x"], "--labels: expected comma-separated ints"),
                          (["--labels", "1"], "--labels: expected label counts >= 2"),
                          (["--labels", "500", "--items", "600"], "--items: expected at least")):
        assert labels_main([*args, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
