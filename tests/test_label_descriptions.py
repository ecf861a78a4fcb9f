"""Label descriptions (data.label_table), and labels added after training scored apart from
the trained ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, TINY

from metricls import Tagger, build_index, load_config, train_embedder
from metricls.data.dataset import Dataset, read_config_items
from metricls.data.descriptions import label_text, read_descriptions
from metricls.errors import InputError
from metricls.pipeline.tag import FEW_SHOT_WEIGHT, few_shot_weight, neighbours, reranked


# ---- the label table ---------------------------------------------------------------------------
def test_read_descriptions_of_a_table(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text('label,description,extra\nfacet0::tag0,"  the  first\n tag ",x\n'
                     "facet1::tag1,the second,y\n")
    assert read_descriptions(table) == {"facet0::tag0": "the first tag",
                                        "facet1::tag1": "the second"}


@pytest.mark.parametrize("text, message", [
    ('{"label": "a::b"}\n', "labels.jsonl: no column 'description'"),
    ('{"label": "a::b", "description": "x"}\n{"label": "c::d"}\n',
     "labels.jsonl:2: field 'description' must be a non-empty string"),
    ('{"label": "a::b", "description": " "}\n', "labels.jsonl:1: field 'description'"),
    ('{"label": "a::b", "description": "x"}\n{"label": "a::b", "description": "y"}\n',
     "labels.jsonl:2: field 'label' repeats id 'a::b' (first on line 1)"),
    ('{"name": "a::b", "description": "x"}\n', "no column 'label'"),
    ('{"label": " a::b", "description": "x"}\n', "labels.jsonl:1: field 'label' must not"),
])
def test_bad_label_tables_name_the_line_and_field(tmp_path, text, message):
    table = tmp_path / "labels.jsonl"
    table.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_descriptions(table)


def test_a_bad_label_table_in_a_config_names_the_key(tmp_path, synthetic_path):
    cfg = load_config(TINY, [f"data.path={synthetic_path}",
                             f"data.label_table={tmp_path / 'nope.csv'}"])
    with pytest.raises(InputError, match=r"^data.label_table: .*nope.csv: no such file"):
        Dataset.load(cfg.data)


def test_the_packaged_debtags_table_describes_the_debtags_labels():
    found = read_descriptions("debtags-labels")
    assert found["role::program"] == "Program. Executable computer program."
    cfg = load_config(ROOT / "configs" / "debtags.yaml")
    labels = {label for row in read_config_items(cfg.data).labels for label in row}
    assert len(labels & set(found)) / len(labels) > 0.95


def test_label_text_joins_name_and_description():
    assert label_text("works-with::image") == "works with image"
    assert label_text("role::program", "Program. Runs.") == "role program: Program. Runs."
    with pytest.raises(InputError, match="description"):
        label_text("a::b", "  ")


# ---- a tagger with descriptions ---------------------------------------------------------------
@pytest.fixture(scope="module")
def described_dir(tmp_path_factory, synthetic_path):
    """The tiny tagger trained with a label table (and the label-text loss)."""
    folder = tmp_path_factory.mktemp("described")
    table = folder / "labels.jsonl"
    table.write_text("".join(json.dumps({"label": f"facet{i % 3}::tag{i}",
                                         "description": f"w{i}x0 w{i}x1 w{i}x2 w{i}x3"}) + "\n"
                             for i in range(20)))
    cfg = load_config(TINY, [f"data.path={synthetic_path}", f"data.label_table={table}",
                             "miner.label_text_weight=1.0", "data.exclude_labels=[facet1::tag4]"])
    train_embedder(cfg, out=folder / "tagger")
    build_index(folder / "tagger")
    return folder / "tagger"


def test_a_tagger_keeps_its_label_table_and_adds_zero_shot_from_it(described_dir, tmp_path):
    tagger = Tagger.load(described_dir)
    assert "facet1::tag4" not in tagger.labels  # held out of training ...
    assert tagger.state.descriptions["facet1::tag4"] == "w4x0 w4x1 w4x2 w4x3"  # ... yet described
    assert Dataset.load(tagger.config.data).summary()["labels_described"] == len(tagger.labels)
    new = tagger.add_label("facet1::tag4")  # zero-shot: from its name and description
    text = label_text("facet1::tag4", "w4x0 w4x1 w4x2 w4x3")
    np.testing.assert_allclose(tagger.prototypes[new], tagger.embed([text])[0], atol=1e-6)
    items = read_config_items(tagger.config.data).subset("test")
    carrying = [t for t, labels in zip(items.texts, items.labels) if "facet1::tag4" in labels]
    found = [dict(tags) for tags in tagger.predict(carrying, k=5)]
    assert np.mean(["facet1::tag4" in tags for tags in found]) > 0.5
    tagger.add_label("new::own", description="noise1 noise2")
    tagger.save(tmp_path / "copy")
    assert Tagger.load(tmp_path / "copy").state.descriptions["new::own"] == "noise1 noise2"


def test_build_fits_a_few_shot_reranker(described_dir):
    tagger = Tagger.load(described_dir)
    assert tagger.state.added_reranker is not None
    report = json.loads((described_dir / "manifest.json").read_text())["build"]
    assert report["added_reranker"]["labels"] >= 1 and report["added_reranker"]["true"] > 0


def test_added_labels_leave_the_trained_labels_scores_as_they_were(tiny_tagger_copy):
    tagger = Tagger.load(tiny_tagger_copy)
    assert tagger.state.reranker is not None
    items = read_config_items(tagger.config.data).subset("test")
    texts = items.texts[:40]
    L = len(tagger.labels)
    before = [dict(tags) for tags in tagger.predict(texts, k=L)]
    tagger.add_label("new::echo", examples=texts[:3])  # its examples join the item index
    tagger.add_label("new::zero", description="noise3 noise4")
    after = [dict(tags) for tags in tagger.predict(texts, k=L + 2)]
    for old, new in zip(before, after):
        trained = {name: s for name, s in new.items() if not name.startswith("new::")}
        assert trained == pytest.approx(old, abs=1e-6)
    assert all("new::echo" in tags for tags in after[:3])
    assert tagger.state.scoring.label_added[-2:] == [1.0, 1.0]
    assert not any(tagger.state.scoring.label_added[:L])
    tagger.remove_label("new::echo")
    tagger.remove_label("new::zero")
    assert tagger.state.scoring.added_mask is None
    for old, new in zip(before, tagger.predict(texts, k=L)):
        assert dict(new) == pytest.approx(old)


def test_a_vector_tagger_edits_described_labels_from_examples(tmp_path, synthetic_path):
    """A label table on a tagger that reads vectors: descriptions are kept and shown, never
    embedded, so adding or updating a described label from example vectors works."""
    table = tmp_path / "labels.jsonl"
    table.write_text(json.dumps({"label": "facet1::tag1", "description": "the second"}) + "\n")
    cfg = load_config(TINY, [f"data.path={synthetic_path}", "encoder.backbones=[features]",
                             "data.vector_column=vec", "data.text_columns=[]",
                             f"data.label_table={table}"])
    train_embedder(cfg, out=tmp_path / "vectors")
    tagger = build_index(tmp_path / "vectors")
    assert tagger.state.descriptions == {"facet1::tag1": "the second"}
    items = read_config_items(tagger.config.data).subset("test")
    tagger.update_label("facet1::tag1", items.features[:3], mode="merge")
    tagger.add_label("new::v", items.features[:2])
    assert tagger.predict(items.features[:1], k=2)
    with pytest.raises(InputError, match="cannot embed a label text"):
        tagger.add_label("new::w", description="words")


def test_the_few_shot_reranker_says_less_the_more_examples_a_label_has(described_dir):
    """An added label's probability: the trained reranker's mixed with the few-shot reranker's
    at `few_shot_weight` of its number of examples (FEW_SHOT_WEIGHT with 0 or 1, / n with n)."""
    np.testing.assert_allclose(few_shot_weight(np.array([0, 1, 2, 5])),
                               FEW_SHOT_WEIGHT * np.array([1, 1, 0.5, 0.2]))
    tagger = Tagger.load(described_dir)
    items = read_config_items(tagger.config.data).subset("test")
    texts = [t for t, labels in zip(items.texts, items.labels) if "facet1::tag4" in labels]
    tagger.add_label("facet1::tag4", examples=texts[:5])
    tagger.add_label("new::zero", description="noise3 noise4")
    state = tagger.state
    found = neighbours(state, tagger.embed(texts), 10, texts)
    probabilities, cand, own = reranked(state, found, state.scoring, 20)
    new = cand.ids[:, own:]
    features = cand.features[:, own:]
    trained, few = state.reranker.score(features), state.added_reranker.score(features)
    for name, weight in (("facet1::tag4", FEW_SHOT_WEIGHT / 5), ("new::zero", FEW_SHOT_WEIGHT)):
        mine = new == tagger.vocab.index(name)
        assert mine.any()
        np.testing.assert_allclose(probabilities[:, own:][mine],
                                   ((1 - weight) * trained + weight * few)[mine], atol=1e-6)
