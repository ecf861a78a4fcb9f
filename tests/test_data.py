"""metricls.data (items, labels, splits) and metricls.validation."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metricls.data import SPLITS, Items, LabelVocab, md5_split, read_items, resolve_dataset
from metricls.errors import InputError
from metricls.validation import check_features, check_k, check_label_lists, check_texts

DEBTAGS = Path(__file__).resolve().parents[1] / "metricls/datasets/debtags-bookworm.jsonl.gz"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def raises(message: str):
    return pytest.raises(InputError, match=re.escape(message))


# ---- the real debtags file -----------------------------------------------------------------
@pytest.fixture(scope="module")
def debtags() -> tuple[Items, list[dict]]:
    with gzip.open(DEBTAGS, "rt", encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    items = read_items("debtags", id_column="package", text_columns=("summary", "description"))
    return items, raw


def test_debtags_reads(debtags):
    items, raw = debtags
    assert len(items) == len(raw) == 30_300
    assert items.ids == [r["package"] for r in raw]
    assert items.labels == [r["labels"] for r in raw]
    assert items.features is None
    assert items.source == str(DEBTAGS)
    assert items.texts[0] == raw[0]["summary"] + "\n" + raw[0]["description"]
    empty = next(i for i, r in enumerate(raw) if not r["description"])
    assert items.texts[empty] == raw[empty]["summary"]
    assert resolve_dataset("debtags") == DEBTAGS


def test_debtags_splits_and_vocab(debtags):
    items, raw = debtags
    share = Counter(items.split.tolist())
    for name, expected in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        assert abs(share[name] / len(items) - expected) < 0.015
    train = items.subset("train")
    in_train = [r for r in raw
                if int(hashlib.md5(r["package"].encode()).hexdigest(), 16) % 10 >= 2]
    assert len(train) == len(in_train)
    vocab = LabelVocab.fit(train.labels)
    assert len(vocab) == len({t for r in in_train for t in r["labels"]})  # 594 of all 598
    assert len({t for r in raw for t in r["labels"]}) == 598
    assert vocab.n_items == len(train)
    Y, unknown = vocab.to_csr(items.subset("test").labels, extend_unknown=True)
    assert Y.shape[1] == len(vocab) + len(unknown)
    assert Y.nnz == sum(len(labels) for labels in items.subset("test").labels)


# ---- formats -------------------------------------------------------------------------------
def test_csv_with_delimited_labels(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('id,title,body,labels\n007,Hello,"multi\nline",a|b|c\n8,World,,\n'
                    "9,x,y, b | b |\n")
    items = read_items(path, text_columns=("title", "body"))
    assert items.ids == ["007", "8", "9"]
    assert items.texts == ["Hello\nmulti\nline", "World", "x\ny"]
    assert items.labels == [["a", "b", "c"], [], ["b"]]
    assert items.split.dtype == np.dtype("<U5")
    gz = tmp_path / "items.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_items(gz, text_columns=("title", "body")).labels == items.labels
    semi = tmp_path / "semi.csv"
    semi.write_text("id,text,tags\n1,t,x;y\n")
    items = read_items(semi, text_columns="text", label_column="tags", label_delimiter=";")
    assert items.labels == [["x", "y"]]


def test_parquet_with_list_labels_and_vectors(tmp_path):
    path = tmp_path / "items.parquet"
    pd.DataFrame({"id": [1, 2, 3], "labels": [["a", "b"], [], ["b", "b"]],
                  "vec": [[0.5, 1.0], [2.0, 3.0], [4.0, 5.0]], "n": [1, 2, 3],
                  "text": ["x", None, "z"]}).to_parquet(path)
    items = read_items(path, feature_columns=("n",), vector_column="vec")
    assert items.ids == ["1", "2", "3"]
    assert items.labels == [["a", "b"], [], ["b"]]
    assert items.texts is None
    assert items.features.dtype == np.float32
    np.testing.assert_array_equal(items.features, [[1, 0.5, 1], [2, 2, 3], [3, 4, 5]])
    with raises(f"{path}: row 2: empty text (text columns 'text' are all empty)"):
        read_items(path, text_columns=("text",))
    pd.DataFrame({"id": ["a"], "labels": ["x|y"], "text": ["t"]}).to_parquet(path)
    with raises(f"{path}: row 1: column 'labels' must be a list of strings, got str 'x|y'"):
        read_items(path, text_columns=("text",))


def test_jsonl_features_split_column_and_no_labels(tmp_path):
    path = write_jsonl(tmp_path / "items.jsonl", [
        {"id": "a", "x": 1, "y": 2.5, "split": "test", "labels": ["p"]},
        "",
        {"id": "b", "x": -1, "y": 0, "split": "valid", "labels": []},
        {"id": 3, "x": 0, "y": 1e3, "split": "train", "labels": ["q", "p", "q"]}])
    items = read_items(path, feature_columns=("x", "y"), split_column="split")
    np.testing.assert_array_equal(items.features, [[1, 2.5], [-1, 0], [0, 1000]])
    assert items.split.tolist() == ["test", "valid", "train"]
    assert items.labels == [["p"], [], ["q", "p"]]
    assert items.ids == ["a", "b", "3"]
    assert read_items(path, feature_columns="x", label_column="tags",
                      require_labels=False).labels is None


def test_subset(tmp_path):
    rows = [{"id": f"i{i}", "text": f"t{i}", "labels": [], "s": s}
            for i, s in enumerate(["train", "valid", "test", "train"])]
    items = read_items(write_jsonl(tmp_path / "s.jsonl", rows), text_columns=("text",),
                       split_column="s")
    assert items.subset("train").ids == ["i0", "i3"]
    assert items.subset(["valid", "test"]).texts == ["t1", "t2"]
    assert items.subset("all") is items
    assert items.subset(np.array([3, 0])).ids == ["i3", "i0"]
    assert items.subset(items.split == "valid").ids == ["i1"]
    assert len(items.subset([])) == 0
    with raises("subset: unknown split 'training'"):
        items.subset("training")
    with raises("subset: index out of range for 4 items"):
        items.subset(np.array([4]))


def test_md5_split():
    ids = [f"pkg{i}" for i in range(2000)]
    got = md5_split(ids)
    assert got.dtype == np.dtype("<U5") and set(got) <= set(SPLITS)
    for i in ids[:50]:
        bucket = int(hashlib.md5(i.encode()).hexdigest(), 16) % 10
        assert got[ids.index(i)] == {0: "test", 1: "valid"}.get(bucket, "train")


# ---- bad files -----------------------------------------------------------------------------
GOOD = {"id": "a", "text": "hello", "labels": ["x"]}


@pytest.mark.parametrize(("row", "message"), [
    ({"id": "b", "text": "t", "labels": "a,b"},
     "field 'labels' must be a list of strings, got str 'a,b'"),
    ({"id": "b", "text": "t", "labels": [["a"]]},
     "field 'labels' must be a flat list of strings, got a nested list at position 0"),
    ({"id": "b", "text": "t", "labels": ["a", 3]},
     "field 'labels' must be a list of strings, got int 3 at position 1"),
    ({"id": "b", "text": "t", "labels": None},
     "field 'labels' must be a list of strings, got null (use [] for no labels)"),
    ({"id": "b", "text": "t"},
     "field 'labels' must be a list of strings, got nothing (no such field)"),
    ({"id": "b", "text": "t", "labels": [" "]},
     "field 'labels' must hold non-empty strings, got ' ' at position 0"),
    ({"id": "", "text": "t", "labels": []},
     "field 'id' must be a non-empty string or integer id, got str ''"),
    ({"id": 1.5, "text": "t", "labels": []},
     "field 'id' must be a non-empty string or integer id, got float 1.5"),
    ({"id": "a", "text": "t", "labels": []}, "field 'id' repeats id 'a' (first on line 1)"),
    ({"id": "b", "text": " ", "labels": []}, "empty text (text columns 'text' are all empty)"),
    ({"id": "b", "text": 5, "labels": []}, "field 'text' must be a string, got int 5"),
    ('{"id": "b", "text": "t" "labels": []}', "invalid JSON (Expecting ',' delimiter"),
    ("[1, 2]", "expected a JSON object per line, got list [1, 2]"),
])
def test_bad_jsonl_row(tmp_path, row, message):
    path = write_jsonl(tmp_path / "items.jsonl", [GOOD, row])
    with raises(f"{path}:2: {message}"):
        read_items(path, text_columns=("text",))


@pytest.mark.parametrize(("value", "message"), [
    ("NaN", "field 'x' must be finite (float32), got nan"),
    ("-Infinity", "field 'x' must be finite (float32), got -inf"),
    ("1e39", "field 'x' must be finite (float32), got 1e+39"),
    ('"1"', "field 'x' must be a number, got str '1'"),
    ("true", "field 'x' must be a number, got bool True"),
])
def test_bad_jsonl_feature(tmp_path, value, message):
    path = write_jsonl(tmp_path / "f.jsonl", ['{"id": 1, "x": 0, "labels": []}',
                                              f'{{"id": 2, "x": {value}, "labels": []}}'])
    with raises(f"{path}:2: {message}"):
        read_items(path, feature_columns=("x",))


def test_bad_vectors(tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"id": 1, "v": [1, 2, 3], "labels": []},
                                              {"id": 2, "v": [1, 2], "labels": []}])
    with raises(f"{path}:2: field 'v' has 2 numbers, expected 3 (as on line 1)"):
        read_items(path, vector_column="v")
    write_jsonl(path, [{"id": 1, "v": [1, "a"], "labels": []}])
    with raises(f"{path}:1: field 'v' must be a number, got str 'a' in the list"):
        read_items(path, vector_column="v")
    write_jsonl(path, [{"id": 1, "v": [], "labels": []}])
    with raises(f"{path}:1: field 'v' must be a non-empty list of numbers, got list []"):
        read_items(path, vector_column="v")


def test_bad_csv_cells(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,x,labels,split\n1,0.5,a,train\n2,abc,b,test\n")
    with raises(f"{path}: row 2: column 'x' must be a number, got str 'abc'"):
        read_items(path, feature_columns=("x",))
    path.write_text("id,x,labels\n1,0.5,a\n2,inf,b\n")
    with raises(f"{path}: row 2: column 'x' must be finite (float32), got inf"):
        read_items(path, feature_columns=("x",))
    path.write_text("id,x,labels,split\n1,0.5,a,train\n2,1,b,training\n")
    with raises(f"{path}: row 2: column 'split' must be 'train', 'valid' or 'test', "
                f"got str 'training'"):
        read_items(path, feature_columns=("x",), split_column="split")
    path.write_text("id,x,labels\n1,0.5,a\n1,1,b\n")
    with raises(f"{path}: row 2: column 'id' repeats id '1' (first on row 1)"):
        read_items(path, feature_columns=("x",))
    path.write_text('id,x,labels\n1,0.5,"a\nb"\n\n2,1,b,extra\n')
    with raises(f"{path}: row 2: expected 3 fields (as in the header), found 4"):
        read_items(path, feature_columns=("x",))
    path.write_text("id,x,labels\n1,0.5,a,extra\n2,1,b\n")
    with raises(f"{path}: row 1: expected 3 fields (as in the header), found 4"):
        read_items(path, feature_columns=("x",))
    path.write_text("id,x,x\n1,0.5,a\n")
    with raises(f"{path}:1: column 'x' appears twice in the header"):
        read_items(path, feature_columns=("x",))


def test_missing_column_suggests(tmp_path):
    path = write_jsonl(tmp_path / "items.jsonl", [GOOD])
    with raises(f"{path}: no column 'txt' (available: 'id', 'text', 'labels'); "
                f"did you mean 'text'?"):
        read_items(path, text_columns=("txt",))
    with raises(f"{path}: no column 'label' (available: 'id', 'text', 'labels'); "
                f"did you mean 'labels'?"):
        read_items(path, text_columns=("text",), label_column="label")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("e.jsonl", b"", "the file has no rows"),
    ("e.jsonl", b"\n  \n", "the file has no rows"),
    ("e.csv", b"", "the file has no rows"),
    ("e.csv", b"id,text,labels\n", "the file has no rows"),
    ("u.jsonl", b'{"id": "a", "text": "x", "labels": []}\n{"id": "\xff"}\n',
     ":2: invalid UTF-8 byte 0xff; save the file as UTF-8"),
    ("u.csv", b"id,text,labels\na,x,\nb,\xe9t\xe9,\n", ":3: invalid UTF-8 byte 0xe9"),
    ("a.json", b'[\n{"id": "a", "text": "x", "labels": []}\n]\n',
     ":1: expected JSON Lines (one object per line), found a JSON array"),
    ("g.jsonl.gz", b"not gzip", ": cannot read the file (Not a gzipped file"),
    ("p.parquet", b"PAR1 nope", ": cannot read as Parquet ("),
    ("t.txt", b"id\n", ": unsupported file type (supported: .jsonl, .jsonl.gz, .ndjson, "),
])
def test_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with raises(f"{path}" + (message if message[0] in ":" else ": " + message)):
        read_items(path, text_columns=("text",))


def test_bad_arguments(tmp_path):
    with raises(f"{tmp_path / 'nope.jsonl'}: no such file "
                "(or a dataset name: debtags, debtags-labels)"):
        read_items(tmp_path / "nope.jsonl", text_columns=("text",))
    with raises(f"{tmp_path}: not a regular file (a directory)"):
        resolve_dataset(str(tmp_path))
    path = write_jsonl(tmp_path / "ok.jsonl", [GOOD])
    with raises("read_items: pass text_columns, feature_columns, vector_column or "
                "features_path"):
        read_items(path)
    with raises("label_delimiter: expected a non-empty string, got ''"):
        read_items(path, text_columns="text", label_delimiter="")
    with raises("id_column: expected a column name, got None"):
        read_items(path, text_columns="text", id_column=None)
    with raises("feature_columns: expected column names, got 5"):
        read_items(path, feature_columns=5)
    with raises("split_column: expected a column name, got ['a', 'b']"):
        read_items(path, text_columns="text", split_column=["a", "b"])


# ---- labels --------------------------------------------------------------------------------
def test_vocab_fit_order_and_csr():
    vocab = LabelVocab.fit([["b", "a"], ["a", "a"], ["c", "a", "b"], ["d"]], min_count=1)
    assert vocab.names == ("a", "b", "c", "d")
    assert vocab.counts.tolist() == [3, 2, 1, 1] and vocab.n_items == 4
    assert "c" in vocab and "z" not in vocab and vocab.index("b") == 1
    assert LabelVocab.fit([["a", "b"], ["b"]], min_count=2).names == ("b",)
    Y, unknown = vocab.to_csr([["a", "zz"], [], ["d", "d", "yy", "zz"]])
    assert isinstance(Y, sp.csr_matrix) and Y.dtype == np.float32 and Y.shape == (3, 4)
    assert Y.toarray().tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert unknown == ["zz", "yy"]
    Y, unknown = vocab.to_csr([["a", "zz"], [], ["d", "d", "yy", "zz"]], extend_unknown=True)
    assert Y.shape == (3, 6) and unknown == ["zz", "yy"]
    assert Y.toarray().tolist() == [[1, 0, 0, 0, 1, 0], [0] * 6, [0, 0, 0, 1, 1, 1]]
    assert vocab.to_csr([])[0].shape == (0, 4)


def test_vocab_propensities_and_dict():
    vocab = LabelVocab(["a", "b"], [100, 1], n_items=1000)
    a, b = 0.55, 1.5
    c = (math.log(1000) - 1) * (b + 1) ** a
    expect = [1 / (1 + c * math.exp(-a * math.log(n + b))) for n in (100, 1, 0)]
    np.testing.assert_allclose(vocab.propensities(n_extra=1), expect)
    assert vocab.propensities().shape == (2,)
    d = json.loads(json.dumps(vocab.to_dict()))
    assert d == {"labels": ["a", "b"], "counts": [100, 1], "n_items": 1000}
    assert LabelVocab.from_dict(d) == vocab
    with raises("label vocabulary: missing key 'counts'"):
        LabelVocab.from_dict({"labels": [], "n_items": 0})


def test_vocab_add_remove_and_errors():
    vocab = LabelVocab(["a", "b", "c"], [3, 2, 1], n_items=5)
    more = vocab.with_label("new", 4)
    assert more.names == ("a", "b", "c", "new") and more.counts.tolist() == [3, 2, 1, 4]
    less, removed = more.without_label("b")
    assert removed == 1 and less.names == ("a", "c", "new") and less.counts.tolist() == [3, 1, 4]
    with raises("label 'a' is already in the vocabulary (id 0)"):
        vocab.with_label("a", 1)
    with raises("unknown label 'bb'; did you mean 'b'?"):
        vocab.index("bb")
    with raises("label vocabulary: label 'a' appears more than once"):
        LabelVocab(["a", "a"], [1, 1], 2)
    with raises("label vocabulary: expected 2 integer counts"):
        LabelVocab(["a", "b"], [1], 2)


# ---- validation ----------------------------------------------------------------------------
def test_check_k_and_texts():
    assert check_k(np.int64(3)) == 3
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(InputError, match="k: expected a positive int"):
            check_k(bad)
    assert check_texts(("a", "b")) == ["a", "b"]
    assert check_texts(np.array(["x"])) == ["x"]
    with raises("texts: pass a list of texts, e.g. predict([text])"):
        check_texts("hello")
    with raises("inputs[1]: expected a non-empty string, got '  '"):
        check_texts(["ok", "  "], name="inputs")
    with raises("texts[0]: expected a non-empty string, got int 3"):
        check_texts([3])
    with raises("texts: expected a list, got dict"):
        check_texts({"a": 1})


def test_check_features():
    out = check_features([[1, 2], [3, 4]], 2)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    with raises("features: row 1 has a non-finite value nan at column 0"):
        check_features(np.array([[1.0, 2.0], [np.nan, 0.0]]), 2)
    with raises("features: expected an (n, 3) array, got shape (2, 2)"):
        check_features(np.zeros((2, 2)), 3)
    with raises("features: expected an (n, 2) numeric array, got dtype <U1"):
        check_features([["a", "b"]], 2)


def test_check_label_lists():
    assert check_label_lists([["b", "a", "b"], []]) == [["b", "a"], []]
    assert check_label_lists(np.array([["a"], ["b", "c"]], dtype=object)) == [["a"], ["b", "c"]]
    with raises("labels: expected a list of label lists, e.g. [['a', 'b']], got a bare str"):
        check_label_lists("a,b")
    with raises("labels[1]: must be a list of strings, got str 'b'; wrap it"):
        check_label_lists([["a"], "b"])
    with raises("labels[0]: must be a flat list of strings, got a nested list at position 1"):
        check_label_lists([["a", ["b"]]])
    with raises("labels[0]: must be a list of strings, got int 1 at position 0"):
        check_label_lists([[1]])
    with raises("labels: expected a list of label lists, got a 2-D array of shape (1, 2)"):
        check_label_lists(np.array([["a", "b"]]))


# ---- never anything but Items or InputError ------------------------------------------------
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(),
                    st.text(max_size=6))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_good = {"text": st.text(max_size=8).map("t {}".format),
         "labels": st.lists(st.sampled_from(["a", "b::c", "d e"]), max_size=3),
         "x": st.floats(-1e6, 1e6) | st.integers(-9, 9),
         "v": st.lists(st.floats(-9, 9), min_size=2, max_size=2),
         "split": st.sampled_from(SPLITS)}
_clean_row = st.fixed_dictionaries(_good).map(lambda row: json.dumps({"id": 0, **row}))
_dirty_row = st.fixed_dictionaries({}, optional={
    "id": st.integers(0, 99) | st.text(max_size=4) | _value,
    **{key: good | _value for key, good in _good.items()}}).map(json.dumps)
_line = _dirty_row | st.text(max_size=20) | st.sampled_from(["", "[", "{}", "NaN", '{"id": 1} {}'])
_cell = st.text(alphabet='ab|,"\n x1.5', max_size=6) | st.sampled_from(
    ["train", "nan", "", "1", "x|y", "[1, 2]", "1 2"])
_csv_row = st.tuples(st.just("0"), st.text("abc ", max_size=5).map("t{}".format),
                     st.sampled_from(["", "a", "a|b", "b | c|"]), st.floats(-9, 9).map(str),
                     st.sampled_from(["1 2", "[1, 2]", "3,4"]).map(lambda v: f'"{v}"'),
                     st.sampled_from(SPLITS)).map(",".join)
_csv_line = _csv_row | st.lists(_cell, min_size=1, max_size=7).map(",".join)
_COLUMNS = [{"text_columns": ("text",)}, {"feature_columns": ("x",)},
            {"vector_column": "v", "require_labels": False}]


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["jsonl", "csv"]), clean=st.booleans(), data=st.data(),
       junk=st.binary(max_size=3), split=st.sampled_from([None, "split"]),
       columns=st.sampled_from(_COLUMNS))
def test_malformed_files_give_items_or_input_error(kind, clean, data, junk, split, columns):
    """Mostly valid rows (clean) or anything at all: the reader returns Items or InputError."""
    row = {("jsonl", True): _clean_row, ("jsonl", False): _line,
           ("csv", True): _csv_row, ("csv", False): _csv_line}[kind, clean]
    lines = data.draw(st.lists(row, max_size=5))
    if clean:  # unique ids
        lines = [line.replace("0", str(i), 1) if kind == "csv" else
                 line.replace('"id": 0', f'"id": {i}', 1) for i, line in enumerate(lines)]
    if kind == "csv":
        lines = ["id,text,labels,x,v,split", *lines]
    content = "\n".join(lines).encode("utf-8", "surrogatepass") + (b"\n" if clean else junk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"items.{kind}"
        path.write_bytes(content)
        try:
            items = read_items(path, split_column=split, **columns)
        except InputError as exc:
            assert "\n" not in str(exc)
            assert not (clean and lines[kind == "csv":]), exc  # clean rows always read
        else:
            assert isinstance(items, Items) and 0 < len(items) <= len(lines)


def test_data_path_that_is_not_a_regular_file(tmp_path):
    from metricls.data.features import open_features
    from metricls.data.items import read_texts

    fifo = tmp_path / "items.jsonl"
    os.mkfifo(fifo)
    for path, kind in [(Path("/dev/zero"), "a character device"), (fifo, "a FIFO"),
                       (tmp_path, "a directory")]:
        message = f"{path}: not a regular file ({kind})"
        with raises(message):
            read_items(path, text_columns=("text",))
        with raises(message):
            read_texts(path)
        with raises(message):
            open_features(path, 3)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".csv.gz", ".txt.gz"])
def test_gzipped_blank_lines_are_read_as_a_stream(tmp_path, suffix):
    """~20 MB of blank lines inside a small .gz cost a small fraction of that in memory."""
    import tracemalloc

    from metricls.data.items import read_texts

    blank = 20_000_000
    if suffix == ".csv.gz":
        head, tail = b"id,text,labels\na,w1 w2,x\n", b"b,w3,y\n"
    else:
        head, tail = (json.dumps({"id": i, "text": "w1", "labels": ["x"]}).encode() + b"\n"
                      for i in "ab")
    path = tmp_path / f"items{suffix}"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(head + b" \n" * (blank // 2) + tail)
    assert path.stat().st_size < blank // 100
    tracemalloc.start()
    try:
        if suffix == ".txt.gz":
            assert len(read_texts(path)) == 2
        else:
            assert read_items(path, text_columns=("text",)).ids == ["a", "b"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < blank / 4, f"peak {peak / 1e6:.1f} MB"


def test_bad_row_after_blank_lines_keeps_its_line_number(tmp_path):
    path = tmp_path / "items.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(json.dumps(GOOD).encode() + b"\n" * 3_000_000 + b"{oops\n")
    with raises(f"{path}:3000001: invalid JSON"):
        read_items(path, text_columns=("text",))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=60) | st.lists(st.sampled_from(
    [b"\n", b" ", b"\r\n", b"\t", b"x", b"ab", b"\xc3\xa9", b"\x0b", b"\x1c"]),
    max_size=30).map(b"".join), size=st.integers(1, 8))
def test_non_blank_lines_match_a_plain_split(data, size):
    from metricls.data.tables import _non_blank_lines

    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    expected = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    assert list(_non_blank_lines(chunks)) == expected


SURROGATE = "is not valid Unicode (lone surrogate '\\udc80' at character 1)"


@pytest.mark.parametrize(("row", "message"), [
    ({"id": "c", "text": "w", "labels": ["ok", "a\udc80"]},
     f"field 'labels' has label 'a\\udc80' (position 1), which {SURROGATE}"),
    ({"id": "c", "text": "a\udc80 w", "labels": []}, f"field 'text' {SURROGATE}"),
    ({"id": "c\udc80", "text": "w", "labels": []},
     f"field 'id' {SURROGATE}"),
])
def test_lone_surrogates_are_refused_at_read(tmp_path, row, message):
    path = write_jsonl(tmp_path / "items.jsonl", [GOOD, {**GOOD, "id": "b"}, row])
    with raises(f"{path}:3: {message}"):
        read_items(path, text_columns=("text",))


def test_lone_surrogates_are_refused_by_the_api():
    with raises(f"texts[1]: the text {SURROGATE}"):
        check_texts(["ok", "a\udc80"])
    with raises(f"labels[0]: has label 'a\\udc80' (position 0), which {SURROGATE}"):
        check_label_lists([["a\udc80"]])
    with raises(f"label vocabulary: label 'a\\udc80' {SURROGATE}"):
        LabelVocab.fit([["x"], ["a\udc80"]])
    with raises(f"labels: label 'a\\udc80' {SURROGATE}"):
        LabelVocab.fit([["x"]]).to_csr([["x"], ["a\udc80"]], extend_unknown=True)


def test_shown_path_names_no_machine_folder(tmp_path, monkeypatch):
    from metricls.data.items import resolve_dataset, shown_path

    assert shown_path(resolve_dataset("debtags")) == "debtags"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "sub" / "x.jsonl") == "sub/x.jsonl"
    assert shown_path("/elsewhere/y.csv") == "/elsewhere/y.csv"
