"""Living labels on the tiny tagger: add (examples, zero-shot), update, remove, save, CLI."""

import dataclasses
import json
import re

import numpy as np
import pytest
from conftest import replaced
from typer.testing import CliRunner

from metricls import Tagger
from metricls.ann import make_index
from metricls.artifacts import load_tensors, read_json
from metricls.cli import app
from metricls.config import load_config
from metricls.data.dataset import Dataset, read_config_items
from metricls.data.descriptions import label_text
from metricls.data.items import read_texts
from metricls.errors import InputError

LABEL = "facet0::tag3"


@pytest.fixture
def tagger(tiny_tagger_copy):
    return Tagger.load(tiny_tagger_copy)


def _items(tagger, split):
    return read_config_items(tagger.config.data).subset(split)


def _texts_of(items, label):
    return [t for t, labels in zip(items.texts, items.labels) if label in labels]


def _state(tagger):
    return (tagger.labels, tagger.prototypes.copy(), tagger.state.proto_index.ntotal,
            tagger.state.item_index.ntotal, tagger.state.item_labels.nnz, tagger.state.scoring)


def test_label_text_turns_a_name_into_words():
    assert label_text("works-with::image") == "works with image"
    assert label_text("devel::lang:c++") == "devel lang c++"
    assert label_text("use_case / x") == "use case x"


def test_added_label_ranks_top_for_its_items_and_predict_returns_it(tagger):
    train = _items(tagger, "train")
    rows = [i for i, labels in enumerate(train.labels) if LABEL in labels]
    texts = [train.texts[i] for i in rows]
    tagger.remove_label(LABEL)
    new_id = tagger.add_label("new::three", texts, add_items=True)
    assert new_id == len(tagger.labels) - 1 and tagger.labels[new_id] == "new::three"
    state = tagger.state
    assert state.item_index.ntotal == state.item_labels.shape[0] == len(train) + len(texts)
    _, ids = tagger.predict_scores(texts, k=5)
    # in every item's top 5, and within its own number of labels for most
    n_true = [len(train.labels[i]) for i in rows]
    ranks = [list(row).index(new_id) if new_id in row else 99 for row in ids]
    assert max(ranks) < 5
    assert np.mean([r < n for r, n in zip(ranks, n_true)]) >= 0.8
    assert all(any(name == "new::three" for name, _ in tags)
               for tags in tagger.predict(texts, k=5))


def test_prototype_only_label_is_the_mean_and_scored_by_the_blend(tagger):
    tagger = replaced(tagger, reranker=None)  # the blend's scores (the reranker's: probabilities)
    train = _items(tagger, "train")
    texts = _texts_of(train, LABEL)
    new_id = tagger.add_label("new::proto", texts, add_items=False)
    emb = tagger.embed(texts)
    mean = emb.mean(axis=0)
    np.testing.assert_allclose(tagger.prototypes[new_id], mean / np.linalg.norm(mean), atol=1e-6)
    assert tagger.state.item_labels[:, new_id].nnz == 0
    assert tagger.vocab.counts[new_id] == len(texts)
    # no item carries it, so its score is the prototype part alone: blend * (1 + cos) / 2
    scores, ids = tagger.predict_scores(texts[:10], k=len(tagger.labels))
    cos = emb[:10] @ tagger.prototypes[new_id]
    found = scores[ids == new_id]
    np.testing.assert_allclose(found, tagger.state.scoring.blend * (1 + cos) / 2, atol=1e-5)


def test_zero_shot_label_exists_and_is_scored(tagger):
    tagger = replaced(tagger, reranker=None)  # the blend's scores (the reranker's: probabilities)
    new_id = tagger.add_label("works-with::image")
    text = label_text("works-with::image")
    np.testing.assert_allclose(tagger.prototypes[new_id], tagger.embed([text])[0], atol=1e-6)
    assert tagger.vocab.counts[new_id] == 0
    described = tagger.add_label("new::described", description="w5x0 w5x1 noise3")
    assert tagger.state.descriptions["new::described"] == "w5x0 w5x1 noise3"
    text = label_text("new::described", "w5x0 w5x1 noise3")  # name and description
    assert text == "new described: w5x0 w5x1 noise3"
    tags = dict(tagger.predict([text], k=len(tagger.labels))[0])
    assert tags["new::described"] == pytest.approx(tagger.state.scoring.blend, abs=1e-5)  # cos = 1
    assert described == new_id + 1
    assert len(tagger.state.scoring.label_thresholds) == len(tagger.labels)
    assert tagger.state.scoring.label_thresholds[-1] == tagger.state.scoring.threshold


def test_remove_label_vanishes_and_leaves_the_others_unchanged(tagger):
    # the blend scores a label from its own prototype and vote alone, so removing another
    # leaves it exactly as it was (the reranker reads each candidate's rank among the others,
    # which moves up by one below a removed label)
    tagger = replaced(tagger, reranker=None,
                      scoring=dataclasses.replace(tagger.state.scoring, tail_weight=0.0))
    texts = _items(tagger, "test").texts
    L = len(tagger.labels)
    before = tagger.predict(texts, k=L)
    state = tagger.state
    old = {n: (state.prototypes[i], state.scoring.label_thresholds[i], state.vocab.counts[i],
               state.item_labels[:, i].toarray()) for i, n in enumerate(tagger.labels)}
    removed = tagger.remove_label(LABEL)
    assert tagger.labels[removed] != LABEL and LABEL not in tagger.labels
    after = tagger.predict(texts, k=L)
    assert after == [[(n, s) for n, s in row if n != LABEL] for row in before]
    for i, name in enumerate(tagger.labels):  # every id-indexed part moved in step
        proto, threshold, count, column = old[name]
        np.testing.assert_array_equal(tagger.prototypes[i], proto)
        assert tagger.state.scoring.label_thresholds[i] == threshold
        assert tagger.vocab.counts[i] == count
        np.testing.assert_array_equal(tagger.state.item_labels[:, i].toarray(), column)
    assert tagger.state.proto_index.ntotal == L - 1 and tagger.state.item_labels.shape[1] == L - 1


def test_remove_rebuilds_an_hnsw_prototype_index_with_its_params(tagger):
    hnsw = make_index("hnsw", tagger.model.out_dim, m=8, ef_search=40)
    hnsw.build(tagger.prototypes)
    tagger = replaced(tagger, proto_index=hnsw)
    tagger.remove_label(LABEL)
    index = tagger.state.proto_index
    assert index.backend == "hnsw" and index.params == hnsw.params
    np.testing.assert_allclose(tagger.state.proto_index.reconstruct(), tagger.prototypes)
    tagger.add_label("new::after", ["w3x0 w3x1 noise1"])
    assert tagger.state.proto_index.ntotal == len(tagger.labels)


def test_update_label_replace_and_merge(tagger):
    train = _items(tagger, "train")
    other = _texts_of(train, "facet1::tag4")[:10]
    i = tagger.vocab.index(LABEL)
    old_proto, old_count = tagger.prototypes[i].copy(), int(tagger.vocab.counts[i])
    emb = tagger.embed(other)
    carriers = tagger.state.item_labels[:, i].nnz
    assert tagger.update_label(LABEL, other, mode="merge", add_items=False) == i
    merged = old_count * old_proto + emb.sum(axis=0)
    np.testing.assert_allclose(tagger.prototypes[i], merged / np.linalg.norm(merged), atol=1e-5)
    assert tagger.vocab.counts[i] == old_count + len(other)
    assert tagger.state.item_labels[:, i].nnz == carriers  # merge keeps the items carrying it
    n_items = tagger.state.item_labels.shape[0]
    tagger.update_label(LABEL, other, mode="replace")  # the examples join the items
    mean = emb.mean(axis=0)
    np.testing.assert_allclose(tagger.prototypes[i], mean / np.linalg.norm(mean), atol=1e-5)
    assert tagger.vocab.counts[i] == len(other)
    # replace: only the new examples carry it now
    assert tagger.state.item_labels[:, i].nonzero()[0].tolist() == list(range(n_items, n_items +
                                                                         len(other)))
    np.testing.assert_allclose(tagger.state.proto_index.reconstruct(), tagger.prototypes, atol=1e-6)
    assert tagger.labels[i] == LABEL


def test_save_and_load_round_trip_a_changed_tagger(tagger, tiny_tagger_copy):
    texts = _items(tagger, "test").texts[:40]
    tagger.add_label("new::x", ["w3x0 w3x1 noise2", "w3x2 noise5"], add_items=True)
    tagger.add_label("new::zero")
    tagger.remove_label("facet1::tag4")
    tagger.update_label("facet0::tag0", ["w1x1 w1x2"], mode="merge")
    expected = tagger.predict(texts, k=5, threshold="tuned")
    assert tagger.save(tiny_tagger_copy) == tiny_tagger_copy
    loaded = Tagger.load(tiny_tagger_copy)
    assert loaded.labels == tagger.labels and loaded.predict(texts, k=5, threshold="tuned") == \
        expected
    left = [p.name for p in tiny_tagger_copy.parent.iterdir() if not p.name.endswith(".lock")]
    assert left == [tiny_tagger_copy.name]  # no temp or old folder, only the writers' lock
    manifest = read_json(tiny_tagger_copy / "manifest.json")
    assert [c["op"] for c in manifest["label_changes"]] == ["add", "add", "remove",
                                                            "update:merge"]
    assert manifest["build"] and manifest["data"]["n_train"] > 0
    vectors, _ = load_tensors(tiny_tagger_copy / "label_vectors.safetensors")
    assert vectors["label_vectors"].shape == tagger.prototypes.shape
    np.testing.assert_array_equal(vectors["label_vectors"][-1], tagger.prototypes[-1])
    assert "## Label changes" in (tiny_tagger_copy / "README.md").read_text()
    result = CliRunner().invoke(app, ["verify", str(tiny_tagger_copy)])
    assert result.exit_code == 0, result.output
    loaded.remove_label("new::zero")  # a second save keeps the first changes' record
    loaded.save(tiny_tagger_copy)
    assert len(read_json(tiny_tagger_copy / "manifest.json")["label_changes"]) == 5


@pytest.mark.parametrize(("call", "message"), [
    (lambda t: t.add_label(LABEL, ["x"]), f"label '{LABEL}' already exists"),
    (lambda t: t.add_label("new::a", []), "examples: expected at least one example"),
    (lambda t: t.add_label("new::a", "w1x1 w1x2"), "examples: pass a list of texts"),
    (lambda t: t.add_label("new::a", ["ok", 3]), "examples[1]: expected a non-empty string"),
    (lambda t: t.add_label("new::a", np.ones((2, 32))), "examples: this tagger reads texts"),
    (lambda t: t.add_label(" new::a", ["x"]), "name: expected a non-empty label name"),
    (lambda t: t.add_label(7, ["x"]), "name: expected a non-empty label name without "
                                      "surrounding spaces, got int 7"),
    (lambda t: t.add_label("new::a", description=""), "description: expected a non-empty text"),
    (lambda t: t.add_label("new::\udc80"), "name: 'new::\\udc80' is not valid Unicode"),
    (lambda t: t.remove_label("facet0::tag33"), "unknown label 'facet0::tag33'; did you mean"),
    (lambda t: t.update_label("nope", ["x"]), "unknown label 'nope'"),
    (lambda t: t.update_label(LABEL, ["x"], mode="swap"), "mode: expected one of"),
])
def test_bad_label_changes_raise_one_clear_error_and_change_nothing(tagger, call, message):
    before = _state(tagger)
    with pytest.raises(InputError, match="^" + re.escape(message)):  # the whole message, once
        call(tagger)
    after = _state(tagger)
    assert after[0] == before[0] and after[2:] == before[2:]
    np.testing.assert_array_equal(after[1], before[1])
    assert tagger._changes == []


def test_labels_cli_list_add_update_remove(tiny_tagger_dir, tiny_tagger_copy, tmp_path):
    runner = CliRunner()
    folder = str(tiny_tagger_copy)
    (tmp_path / "ex.txt").write_text("w3x0 w3x1 noise1\n\nw3x2 noise3\n")
    (tmp_path / "ex.jsonl").write_text('{"text": "w7x0 w7x1"}\n{"text": "w7x2 noise1"}\n')
    out = tmp_path / "out"
    L = len(Tagger.load(folder).labels)
    steps = [
        (["labels", "add", folder, "cli::a", "--examples", str(tmp_path / "ex.txt"),
          "--no-items"], f"added: cli::a (id {L})"),
        (["labels", "add", folder, "cli::b", "--description", "w9x0 w9x1"], "added: cli::b"),
        (["labels", "update", folder, "cli::a", "--examples", str(tmp_path / "ex.jsonl"),
          "--mode", "merge"], f"updated (merge): cli::a (id {L})"),
        (["labels", "remove", folder, "cli::b", "--out", str(out)],
         f"removed: cli::b (was id {L + 1})"),
    ]
    for args, expected in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and expected in result.output, result.output
    assert Tagger.load(out).labels[-1] == "cli::a" and "cli::b" in Tagger.load(folder).labels
    changed = Tagger.load(out)
    assert changed.vocab.counts[-1] == 4  # 2 texts, merged with 2 more
    # --no-items on add, the default (items) on update: the 2 merged texts joined the items
    assert changed.state.item_labels[:, L].nnz == 2 and changed.state.item_index.ntotal == \
        Tagger.load(tiny_tagger_dir).state.item_index.ntotal + 2
    listed = json.loads(runner.invoke(app, ["labels", "list", str(out), "--json"]).output)
    assert listed[-1] == {"id": L, "count": 4, "name": "cli::a", "description": None}
    in_folder = json.loads(runner.invoke(app, ["labels", "list", folder, "--json"]).output)
    assert {r["name"]: r["description"] for r in in_folder}["cli::b"] == "w9x0 w9x1"
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0
    for args, message in [
        (["labels", "add", folder, "cli::a", "--examples", str(tmp_path / "ex.txt")],
         "label 'cli::a' already exists"),
        (["labels", "add", folder, "cli::c", "--examples", str(tmp_path / "none.txt")],
         "none.txt: no such file"),
        (["labels", "remove", folder, "cli::zz"], "unknown label 'cli::zz'")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output


def test_read_texts_reads_lines_and_tables(tmp_path):
    (tmp_path / "a.txt").write_text(" one \n\ntwo\n")
    assert read_texts(tmp_path / "a.txt") == ["one", "two"]
    (tmp_path / "b.jsonl").write_text('{"summary": "s", "description": "d"}\n')
    assert read_texts(tmp_path / "b.jsonl", ("summary", "description")) == ["s\nd"]
    (tmp_path / "c.jsonl").write_text('{"text": "t"}\n{"text": 5}\n')
    with pytest.raises(InputError, match=re.escape("c.jsonl:2: field 'text' must be a string")):
        read_texts(tmp_path / "c.jsonl")
    (tmp_path / "d.txt").write_text("\n \n")
    with pytest.raises(InputError, match="no texts"):
        read_texts(tmp_path / "d.txt")


def test_exclude_labels_leaves_them_out_of_the_vocabulary(synthetic_path):
    cfg = load_config("configs/tiny.yaml", [f"data.path={synthetic_path}",
                                            f"data.exclude_labels=[{LABEL}]"])
    data = Dataset.load(cfg.data)
    every = Dataset.load(load_config("configs/tiny.yaml", [f"data.path={synthetic_path}"]).data)
    assert LABEL in every.vocab and LABEL not in data.vocab
    assert data.vocab.names == tuple(n for n in every.vocab.names if n != LABEL)
    assert data.labels("train").shape == (len(data.train), len(every.vocab) - 1)
    bad = load_config("configs/tiny.yaml", [f"data.path={synthetic_path}",
                                            "data.exclude_labels=[nope]"])
    with pytest.raises(InputError, match=re.escape("data.exclude_labels: 'nope' is not a label")):
        Dataset.load(bad.data)


def test_a_features_tagger_takes_feature_rows_and_refuses_a_text(synthetic_path):
    from metricls.build import assemble_tagger
    from metricls.encoders.model import build_model

    cfg = load_config("configs/tiny.yaml", [
        f"data.path={synthetic_path}", "data.text_columns=[]", "data.vector_column=vec",
        "encoder.backbones=[features]"])
    data = Dataset.load(cfg.data)
    model = build_model(cfg.encoder, feature_dim=data.train.features.shape[1])
    tagger, _ = assemble_tagger(cfg, model, data)  # untrained head: enough for label changes
    rows = data.train.features[[LABEL in labels for labels in data.train.labels]]
    new_id = tagger.add_label("new::vec", rows)
    mean = tagger.embed(rows).mean(axis=0)
    np.testing.assert_allclose(tagger.prototypes[new_id], mean / np.linalg.norm(mean), atol=1e-6)
    assert tagger.state.item_labels[:, new_id].nnz == len(rows)
    with pytest.raises(InputError, match=re.escape("description: this tagger reads feature")):
        tagger.add_label("new::text", description="a text")
    with pytest.raises(InputError, match=re.escape("examples: this tagger reads feature vectors")):
        tagger.add_label("new::text", ["a text"])
