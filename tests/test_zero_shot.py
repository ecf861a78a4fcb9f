"""Zero-shot labels from pseudo-examples: a label added from its text alone starts from the
training items nearest that text in the frozen encoder's space (metricls.pipeline.zero_shot)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import MINILM, build_tiny
from synthetic import make_items
from test_tamper import refused, tamper

from metricls import Tagger
from metricls.data.descriptions import label_text
from metricls.pipeline import zero_shot

LABEL5 = "facet2::tag5"  # owns the words w5x0 .. w5x3 in the generated texts
TEXT5 = "w5x0 w5x1 w5x2 w5x3"


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory, synthetic_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METRICLS_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder = tmp_path_factory.mktemp("zero-shot") / "tagger"
        build_tiny(folder, synthetic_path, *MINILM)
        yield folder


@pytest.fixture
def minilm_copy(tmp_path, minilm_dir):
    shutil.copytree(minilm_dir, tmp_path / "tagger")
    return tmp_path / "tagger"


def _train_rows(tagger):
    """{item id: (text, labels)} of the generated items the tagger indexed."""
    items = {item["id"]: item for item in make_items()}
    return [items[i] for i in tagger.state.item_ids[:tagger.state.trained_items]]


def test_the_build_keeps_the_items_in_the_frozen_space(minilm_dir):
    tagger = Tagger.load(minilm_dir)
    frozen = tagger.state.item_frozen
    assert (minilm_dir / "item_frozen.safetensors").is_file()
    assert frozen.dtype == np.float16 and frozen.shape == (tagger.state.trained_items, 384)
    texts = [item["text"] for item in _train_rows(tagger)]
    np.testing.assert_allclose(frozen[:50], tagger.model.frozen_text(texts[:50]), atol=2e-3)


def test_a_label_from_its_text_starts_from_the_items_the_text_finds(minilm_dir):
    tagger = Tagger.load(minilm_dir)
    rows = _train_rows(tagger)
    tagger.remove_label(LABEL5)
    tagger.add_label("new::five", description=TEXT5)
    text = label_text("new::five", TEXT5)
    near = zero_shot.pseudo_examples(tagger.state.item_frozen,
                                     tagger.model.frozen_text([text])[0], 10)
    exact = np.argsort(-(tagger.state.item_frozen.astype(np.float32)
                         @ tagger.model.frozen_text([text])[0]))[:10]
    assert sorted(near) == sorted(exact)
    mine = np.array([LABEL5 in row["labels"] for row in rows])
    assert mine[near].mean() >= 3 * mine.mean()  # the text finds tag5's items
    vectors = tagger.state.item_index.reconstruct()
    expected = zero_shot.prototype(vectors[near], tagger.embed([text])[0])
    got = tagger.state.prototypes[tagger.vocab.index("new::five")]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_zero_shot_examples_0_or_no_frozen_vectors_give_the_text_embedding(minilm_copy,
                                                                           tiny_tagger_dir):
    for folder, overrides in ((minilm_copy, {"zero_shot_examples": 0}), (tiny_tagger_dir, {})):
        tagger = Tagger.load(folder)
        if overrides:
            tagger.config = dataclasses.replace(
                tagger.config, index=dataclasses.replace(tagger.config.index, **overrides))
        tagger.add_label("new::five", description=TEXT5)
        text_emb = tagger.embed([label_text("new::five", TEXT5)])[0]
        np.testing.assert_allclose(tagger.state.prototypes[-1], text_emb, atol=1e-6)
    assert Tagger.load(tiny_tagger_dir).state.item_frozen is None  # n-grams only: none kept


def test_edits_keep_the_frozen_vectors_and_name_the_items_a_label_started_from(minilm_copy):
    tagger = Tagger.load(minilm_copy)
    before = tagger.state.item_frozen.copy()
    tagger.add_label("new::five", ["w5x0 w5x1 noise1"], description=TEXT5)
    tagger.add_label("new::zero", description=TEXT5)
    tagger.remove_label("facet0::tag0")
    tagger.save(minilm_copy)
    np.testing.assert_array_equal(Tagger.load(minilm_copy).state.item_frozen, before)
    changes = json.loads((minilm_copy / "manifest.json").read_text())["label_changes"]
    assert "started_from" not in changes[0]  # from examples
    text = tagger.model.frozen_text([label_text("new::zero", TEXT5)])[0]
    near = zero_shot.pseudo_examples(before, text, 10)
    assert changes[1]["started_from"] == [tagger.state.item_ids[r] for r in near]


@pytest.mark.parametrize("edit, pattern", [
    (lambda t, m: t.__setitem__("vectors", t["vectors"][:-1]), r"'vectors' is float16 of shape"),
    (lambda t, m: t["vectors"].__setitem__((0, 0), np.nan), r"NaN"),
    (lambda t, m: m.__setitem__("format", "metricls-tfidf/1"), r"format"),
    (lambda t, m: t.__setitem__("vectors", np.full(t["vectors"].shape, 1e5, np.float32)),
     r"'vectors' is float32 .* expected float16"),  # 1e5 would be inf as float16
])
def test_crafted_frozen_vectors_are_refused(minilm_copy, edit, pattern):
    tamper(minilm_copy, "item_frozen.safetensors", edit)
    refused(minilm_copy, "item_frozen.safetensors", pattern)


def test_a_tagger_without_a_frozen_encoder_refuses_frozen_vectors(tiny_tagger_copy, minilm_dir):
    shutil.copy(minilm_dir / "item_frozen.safetensors", tiny_tagger_copy)
    tamper(tiny_tagger_copy, "item_frozen.safetensors", lambda t, m: None)  # re-signed
    refused(tiny_tagger_copy, "item_frozen.safetensors", r"has no frozen text encoder")


def test_pseudo_examples_are_the_nearest_rows_best_first_however_many_are_asked():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(7, 5))
    items = (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float16)
    text = items[3].astype(np.float32)
    by_cosine = np.argsort(-(items.astype(np.float32) @ text), kind="stable")
    for m in (1, 3, 7, 20):
        assert zero_shot.pseudo_examples(items, text, m).tolist() == by_cosine[:m].tolist()
    assert zero_shot.pseudo_examples(items, text, 0).tolist() == []
