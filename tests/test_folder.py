"""metricls/folder.py: the tagger folder's layout, its writers and its readers."""

import re

import numpy as np
import pytest

from metricls.artifacts import load_tensors, read_json
from metricls.errors import NotFittedError
from metricls.folder import (
    LABEL_VECTORS,
    SCORING,
    card_with_changes,
    model_card,
    read_tagger,
    read_trained,
    write_edited,
    write_parts,
)
from metricls.pipeline import labels as label_edits

# what training and the build's manifest add beside the parts
NOT_PARTS = {"manifest.json", "README.md", "label_vectors.safetensors", "training.json"}


def _files(folder):
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_parts_read_and_written_again_are_the_same_files(tiny_tagger_dir, tmp_path):
    config, model, state, _ = read_tagger(tiny_tagger_dir)
    write_parts(tmp_path, config=config, model=model, state=state)
    assert _files(tmp_path) == _files(tiny_tagger_dir) - NOT_PARTS
    for name in sorted(_files(tmp_path)):
        if name.endswith(".safetensors"):  # the header's metadata order is not fixed
            (new, new_meta), (old, old_meta) = (load_tensors(f / name)
                                                for f in (tmp_path, tiny_tagger_dir))
            assert new_meta == old_meta and new.keys() == old.keys(), name
            for key in old:
                np.testing.assert_array_equal(new[key], old[key], err_msg=f"{name}: {key}")
        else:
            assert (tmp_path / name).read_bytes() == (tiny_tagger_dir / name).read_bytes(), name


def test_the_built_card_is_model_card_of_the_manifest(tiny_tagger_dir):
    config, model, _, manifest = read_tagger(tiny_tagger_dir)
    card = model_card(config, model.out_dim, manifest["data"], manifest["build"],
                      manifest["metrics"])
    assert (tiny_tagger_dir / "README.md").read_text() == card
    assert "backbones ['lexical']" in card and "Index: `flat`" in card
    assert f"dimension {model.out_dim}" in card and manifest["data"]["sha256"][:12] in card
    for metric, value in manifest["metrics"]["valid"].items():
        assert f"| {metric} | {value} |" in card


def test_card_with_changes_rewrites_its_section():
    card = "# metricls tagger `t`\n\nBody.\n"
    added = label_edits.change_record("add", "new::a", 3, None, True)
    zero = label_edits.change_record("add", "new::b", 0, "words", False)
    once = card_with_changes(card, [added])
    twice = card_with_changes(once, [added, zero, {"op": "remove", "label": "old"}])
    assert once.startswith(card.rstrip("\n")) and "- add `new::a` (3 examples)\n" in once
    assert twice.count("## Label changes") == 1 and twice.count("new::a") == 1
    assert twice.endswith("- add `new::a` (3 examples)\n- add `new::b` (zero-shot)\n"
                          "- remove `old`\n")
    assert card_with_changes(twice, []) == card


def test_read_tagger_of_a_trained_folder_says_build_it(tiny_tagger_copy):
    (tiny_tagger_copy / SCORING).unlink()  # as training leaves it: an encoder, no scoring
    with pytest.raises(NotFittedError, match=re.escape(
            f"trained but not indexed; run `metricls build-index {tiny_tagger_copy}`")):
        read_tagger(tiny_tagger_copy)


def test_read_trained_without_an_encoder_says_train_first(tmp_path):
    with pytest.raises(NotFittedError, match=re.escape("no trained encoder here; run `metricls "
                                                       "train` first")):
        read_trained(tmp_path)


def test_read_trained_applies_index_overrides(tiny_tagger_dir):
    config, model = read_trained(tiny_tagger_dir, overrides={"backend": "hnsw", "knn": 7})
    assert config.index.backend == "hnsw" and config.index.knn == 7
    assert model.out_dim == read_tagger(tiny_tagger_dir)[1].out_dim


def test_write_edited_keeps_the_learned_vectors_by_name(tiny_tagger_dir, tmp_path):
    config, model, state, manifest = read_tagger(tiny_tagger_dir)
    removed = state.vocab.names[1]
    edited, _ = label_edits.remove_label(state, removed)
    change = {"op": "remove", "label": removed}
    out = tmp_path / "edited"
    written = write_edited(out, config=config, model=model, state=edited, metrics={},
                           origin=tiny_tagger_dir, changes=[change])
    learned = load_tensors(tiny_tagger_dir / LABEL_VECTORS)[0]["label_vectors"]
    kept = load_tensors(out / LABEL_VECTORS)[0]["label_vectors"]
    rows = [i for i, name in enumerate(state.vocab.names) if name != removed]
    np.testing.assert_array_equal(kept, learned[rows])
    assert written["label_changes"] == [change] and written["build"] == manifest["build"]
    assert written["data"] == manifest["data"]
    assert read_json(out / "training.json") == read_json(tiny_tagger_dir / "training.json")
    assert "- remove `" + removed + "`" in (out / "README.md").read_text()


def test_write_edited_from_memory_starts_a_card(tiny_tagger_dir, tmp_path):
    config, model, state, _ = read_tagger(tiny_tagger_dir)
    write_edited(tmp_path / "t", config=config, model=model, state=state, metrics={},
                 origin=None, changes=[])
    assert (tmp_path / "t" / "README.md").read_text() == f"# metricls tagger `{config.name}`\n"
    assert not (tmp_path / "t" / LABEL_VECTORS).exists()
    assert read_tagger(tmp_path / "t")[2].vocab.names == state.vocab.names
