"""metricls/cli.py: a thin shell whose failures are one `error:` line and an exit code."""

import json

import pytest
from conftest import entries
from typer.testing import CliRunner

from metricls import Tagger
from metricls.cli import app
from metricls.errors import ArtifactError, NotFittedError


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error(result, code, text):
    assert result.exit_code == code, result.output
    assert result.output.splitlines() == [f"error: {text}"], result.output


def test_predict_on_a_missing_folder(tmp_path):
    _one_error(_invoke("predict", tmp_path / "nope", "w0x1"), 1, f"{tmp_path / 'nope'}: no such "
                                                                 "folder")


@pytest.mark.parametrize(("args", "text"), [
    (["-k", "0"], "k: "),
    (["--threshold", "high"], "--threshold: expected a number or 'tuned'; must be a number"),
    (["--threshold", "nan"], "--threshold: expected a number or 'tuned'; must be finite"),
])
def test_predict_refuses_bad_options_with_exit_2(tiny_tagger_dir, args, text):
    result = _invoke("predict", tiny_tagger_dir, "w0x1", *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1 and result.output.startswith(f"error: {text}")


def test_predict_prints_each_text_then_its_tags(tiny_tagger_dir):
    texts = ["w0x1 w0x2", "w5x0 w5x3"]
    result = _invoke("predict", tiny_tagger_dir, *texts, "-k", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    expected = Tagger.load(tiny_tagger_dir).predict(texts, k=2)
    assert lines[0::2] == texts
    assert lines[1::2] == ["   " + "  ".join(f"{n} {s:.3f}" for n, s in row) for row in expected]


def test_build_index_of_a_folder_that_is_not_trained(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    _one_error(_invoke("build-index", folder), 1,  # NotFittedError: neither input nor config
               f"{folder}: no trained encoder here; run `metricls train` first")
    assert entries(folder) == []


def test_verify_lists_each_problem_and_exits_1(tiny_tagger_copy):
    (tiny_tagger_copy / "scoring.json").write_text("{}")
    (tiny_tagger_copy / "training.json").unlink()
    result = _invoke("verify", tiny_tagger_copy)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) >= 2 and all(line.startswith("problem: ") for line in lines)
    assert any("scoring.json" in line for line in lines)
    assert any("training.json" in line for line in lines)


def test_labels_list_names_every_label(tiny_tagger_dir):
    vocab = Tagger.load(tiny_tagger_dir).vocab
    result = _invoke("labels", "list", tiny_tagger_dir, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"id": i, "count": int(c), "name": n,
                                          "description": None}
                                         for i, (n, c) in enumerate(zip(vocab.names,
                                                                        vocab.counts))]
    plain = _invoke("labels", "list", tiny_tagger_dir).output.splitlines()
    assert [line.split() for line in plain] == [[str(i), str(int(c)), n] for i, (n, c) in
                                                enumerate(zip(vocab.names, vocab.counts))]


def test_debug_lets_the_error_escape(tmp_path):
    result = _invoke("--debug", "predict", tmp_path / "nope", "w0x1")
    assert isinstance(result.exception, ArtifactError)
    assert "no such folder" in str(result.exception) and "error:" not in result.output
    folder = tmp_path / "empty"
    folder.mkdir()
    assert isinstance(_invoke("--debug", "build-index", folder).exception, NotFittedError)
    _one_error(_invoke("predict", tmp_path / "nope", "w0x1"), 1,  # the next call is guarded again
               f"{tmp_path / 'nope'}: no such folder")


def test_a_bad_list_option_is_refused_before_any_work(tmp_path):
    out = tmp_path / "recall.json"
    result = _invoke("bench", "recall", "--quick", "--sizes", "1000,many", "--out", out)
    _one_error(result, 2, "expected comma-separated int values, got '1000,many'")
    assert not out.exists()
