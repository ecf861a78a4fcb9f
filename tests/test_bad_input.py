"""Bad input through the CLI: one `error:` line naming file/row/field, exit 2, nothing written."""

import json
import re

import pytest
from conftest import TINY
from typer.testing import CliRunner

from metricls.cli import app

GOOD = {"id": "a", "text": "w1 w2", "labels": ["x::y"]}


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


CASES = [
    ("missing column", [{"id": "a", "body": "w1", "labels": ["x"]}],
     "no column 'text'"),
    ("labels as a string", [GOOD, {"id": "b", "text": "w", "labels": "a,b"}],
     ":2: field 'labels' must be a list of strings, got str 'a,b'"),
    ("nested labels", [GOOD, {"id": "b", "text": "w", "labels": [["a"], ["b"]]}],
     ":2: field 'labels'"),
    ("2-D labels", [GOOD, {"id": "b", "text": "w", "labels": [[1, 2], [3, 4]]}],
     ":2: field 'labels'"),
    ("empty file", [], "no rows"),
    ("empty text", [GOOD, {"id": "b", "text": "  ", "labels": ["a"]}], ":2:"),
    ("duplicate id", [GOOD, GOOD], ":2: field 'id' repeats id 'a'"),
    ("bad json", [GOOD, "{not json"], ":2:"),
]


@pytest.mark.parametrize("name, rows, message", CASES, ids=[c[0] for c in CASES])
def test_train_on_bad_data_fails_cleanly(tmp_path, name, rows, message):
    data = _jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "tagger"
    res = CliRunner().invoke(app, ["--quiet", "train", str(TINY), "--set", f"data.path={data}",
                                   "--out", str(out)])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert str(data) in lines[0] and re.search(re.escape(message), lines[0]), lines[0]
    assert "Traceback" not in res.output
    assert not out.exists() and not list(tmp_path.glob(".tagger*"))  # nothing half-written


def test_evaluate_bad_file_keeps_tagger(tiny_tagger_copy, tmp_path):
    data = _jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": "w", "labels": "a|b"}])
    before = {p: p.read_bytes() for p in tiny_tagger_copy.rglob("*") if p.is_file()}
    res = CliRunner().invoke(app, ["evaluate", str(tiny_tagger_copy), "--data", str(data)])
    assert res.exit_code == 2 and "field 'labels' must be a list of strings" in res.output
    assert before == {p: p.read_bytes() for p in tiny_tagger_copy.rglob("*") if p.is_file()}


# a flipped byte inside a path in manifest.json also makes a real file look unlisted: that warns
@pytest.mark.filterwarnings("ignore:unexpected file")
@pytest.mark.parametrize("victim", ["encoder/weights.safetensors", "labels.json",
                                    "ann/prototypes/faiss.index", "manifest.json"])
def test_missing_or_altered_tagger_file(tiny_tagger_copy, victim):
    path = tiny_tagger_copy / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    res = CliRunner().invoke(app, ["predict", str(tiny_tagger_copy), "w1 w2"])
    assert res.exit_code == 1 and res.output.startswith("error: ")
    assert victim.split("/")[-1] in res.output and "Traceback" not in res.output
    path.unlink()
    res = CliRunner().invoke(app, ["predict", str(tiny_tagger_copy), "w1 w2"])
    assert res.exit_code == 1 and victim.split("/")[-1] in res.output
