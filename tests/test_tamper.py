"""Crafted tagger folders: a file altered as an attacker would (its manifest re-signed, so that
`verify` passes) is refused at load with one ArtifactError line naming the file, never a crash
in numpy, scipy, FAISS or torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, resized
from safetensors.torch import load_file, save_file

from metricls import Tagger, build_index
from metricls.artifacts import load_tensors, read_json, save_tensors, write_json
from metricls.errors import ArtifactError
from metricls.formats import CSR_FORMAT, ENCODER_FORMAT, check_format
from metricls.manifest import MANIFEST, verify_folder, write_manifest

_OWN = ("format", "created", "versions", "data", "metrics", "files", "manifest_sha256")
Edit = Callable[[dict[str, np.ndarray], dict[str, str]], None]


def resign(folder: Path) -> None:
    """Recompute the manifest over the altered files, keeping its data, metrics and extras."""
    old = read_json(folder / MANIFEST)
    write_manifest(folder, data=old["data"], metrics=old["metrics"],
                   extra={k: v for k, v in old.items() if k not in _OWN})
    assert verify_folder(folder) == []


def tamper(folder: Path, name: str, edit: Edit) -> None:
    tensors, meta = load_tensors(folder / name)
    edit(tensors, meta)
    save_tensors(folder / name, tensors, meta)
    resign(folder)


def refused(folder: Path, name: str, pattern: str) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        Tagger.load(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / name}: ") and "\n" not in message, message
    assert re.search(pattern, message), message
    return info.value


def _set(key: str, value: Callable[[np.ndarray], np.ndarray]) -> Edit:
    return lambda t, meta: t.__setitem__(key, value(t[key]))


def _swap_middle(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    i = len(a) // 2
    a[i], a[i + 1] = a[i + 1] + 1, a[i]
    return a


# ---- 1. every array read from the folder is bounds- and shape-checked -------------------------
CSR_CASES = {
    "index past the columns": (_set("indices", lambda a: a + 10**6),
                               r"'indices' span \[\d+, \d+\], expected within \[0, 20\)"),
    "negative index": (_set("indices", lambda a: np.where(np.arange(len(a)) == 3, -5, a)),
                       r"'indices' span \[-5, "),
    "float indices": (_set("indices", lambda a: a.astype(np.float64)),
                      r"'indices' is float64 of shape \(\d+,\), expected integer"),
    "indptr not from 0": (_set("indptr", lambda a: a + 1), r"'indptr' runs from 1 to \d+, "
                          r"expected non-decreasing from 0 to \d+"),
    "indptr decreasing": (_set("indptr", _swap_middle), r"'indptr' runs .* and decreases"),
    "indptr past the end": (_set("indptr", lambda a: np.append(a[:-1], a[-1] + 7)),
                            r"'indptr' runs from 0 to \d+, expected .* from 0 to \d+"),
    "indptr a row short": (_set("indptr", lambda a: a[:-1]),
                           r"'indptr' is int64 of shape \(\d+,\), expected integer of shape"),
    "shape of 3 ints": (_set("shape", lambda a: np.append(a, 1)),
                        r"'shape' is int64 of shape \(3,\), expected integer of shape \(2,\)"),
    "more columns than labels": (_set("shape", lambda a: a + np.array([0, 5])),
                                 r"'shape' is \(\d+, 25\), expected \(\d+, 20\) \(ann/items and "
                                 r"labels\.json\)"),
    "negative shape": (_set("shape", lambda a: -a), r"'shape' is \(-\d+, -20\)"),
    "no indices": (lambda t, meta: t.pop("indices"), r"'indices' missing"),
}


@pytest.mark.parametrize("case", CSR_CASES)
def test_crafted_item_labels_are_refused(tiny_tagger_copy, case):
    edit, pattern = CSR_CASES[case]
    tamper(tiny_tagger_copy, "item_labels.safetensors", edit)
    refused(tiny_tagger_copy, "item_labels.safetensors", pattern)


PROTOTYPE_CASES = {
    "one dimension more": (_set("prototypes", lambda a: np.pad(a, ((0, 0), (0, 1)))),
                           r"'prototypes' is float32 of shape \(20, 33\), expected float32 of "
                           r"shape \(20, 32\) \(from labels\.json and encoder/config\.json\)"),
    "a label short": (_set("prototypes", lambda a: a[:-1]), r"shape \(19, 32\), expected"),
    "float64": (_set("prototypes", lambda a: a.astype(np.float64)),
                r"'prototypes' is float64 .*, expected float32"),
    "NaN": (_set("prototypes", lambda a: np.where(np.eye(*a.shape) > 0, np.nan, a)),
            r"'prototypes' holds 20 NaN or infinite values, expected finite ones"),
    "counts as floats": (_set("counts", lambda a: a.astype(np.float32)),
                         r"'counts' is float32 of shape \(20,\), expected integer"),
}


@pytest.mark.parametrize("case", PROTOTYPE_CASES)
def test_crafted_prototypes_are_refused(tiny_tagger_copy, case):
    edit, pattern = PROTOTYPE_CASES[case]
    tamper(tiny_tagger_copy, "prototypes.safetensors", edit)
    refused(tiny_tagger_copy, "prototypes.safetensors", pattern)


def _model_text(edit: Callable[[str], str]) -> Edit:
    """An edit of the LightGBM model text that the reranker file holds."""
    def apply(t: dict[str, np.ndarray], meta: dict[str, str]) -> None:
        text = edit(bytes(t["model"]).decode())
        t["model"] = np.frombuffer(text.encode(), np.uint8).copy()
    return apply


RERANKER_CASES = {
    "child out of range": (_model_text(
        lambda s: resized(re.sub(r"right_child=\S+", "right_child=9999", s, count=1))),
        r"tree 0 has nodes out of range"),
    "child before its parent": (_model_text(
        lambda s: resized(re.sub(r"(left_child=\S+ )\S+", r"\g<1>0", s, count=1))),
        r"tree 0 has nodes out of range"),
    "leaf out of range": (_model_text(
        lambda s: resized(re.sub(r"left_child=\S+", "left_child=-999", s, count=1))),
        r"tree 0 has nodes out of range"),
    "feature out of range": (_model_text(
        lambda s: resized(re.sub(r"split_feature=\d+", "split_feature=10", s, count=1))),
        r"tree 0 has nodes out of range .*features past 10"),
    "NaN leaf": (_model_text(
        lambda s: resized(re.sub(r"leaf_value=\S+", "leaf_value=nan", s, count=1))),
        r"tree 0 has leaf_value of \d+ values, expected \d+ plain numbers"),
    "linear leaves": (_model_text(lambda s: resized(s.replace("is_linear=0", "is_linear=1", 1))),
                      r"tree 0 is not a plain tree"),
    "a line LightGBM reads, not checked": (_model_text(
        lambda s: resized(s.replace("num_cat=0", "num_cat=0\ncat_threshold=5", 1))),
        r"tree 0 has the line 'cat_threshold=5'"),
    "sizes that hide a tree": (_model_text(
        lambda s: re.sub(r"tree_sizes=(\d+)", lambda m: f"tree_sizes={int(m[1]) + 1}", s)),
        r"tree 0 has the line 'T'"),
    "no tree sizes": (_model_text(lambda s: re.sub(r"(?m)^tree_sizes=.*\n", "", s)),
                      r"no tree_sizes line"),
    "not LightGBM": (_model_text(lambda s: "hello"), r"no trees in the LightGBM model text"),
    "model as floats": (_set("model", lambda a: a.astype(np.float32)),
                        r"'model' is float32 .*, expected integer"),
    "other features": (lambda t, meta: meta.__setitem__("features", "cosine,vote"),
                       r"trees over the features 'cosine,vote', expected 'cosine,log_count"),
    "no candidates": (lambda t, meta: t.pop("candidates"), r"'candidates' missing"),
}


@pytest.mark.parametrize("case", RERANKER_CASES)
def test_crafted_reranker_is_refused(tiny_tagger_copy, case):
    assert (tiny_tagger_copy / "reranker.safetensors").is_file()
    edit, pattern = RERANKER_CASES[case]
    tamper(tiny_tagger_copy, "reranker.safetensors", edit)
    refused(tiny_tagger_copy, "reranker.safetensors", pattern)


TFIDF_CASES = {
    "index past the terms": (_set("indices", lambda a: a + 10**6), r"'indices' span .*, "
                             r"expected within \[0, \d+\)"),
    "indptr decreasing": (_set("indptr", _swap_middle), r"'indptr' runs .* and decreases"),
    "a label short": (lambda t, meta: (t.__setitem__("shape", t["shape"] - np.array([1, 0])),
                                       t.__setitem__("indptr", t["indptr"][:-1])),
                      r"'shape' is \(19, \d+\), expected \(20, \d+\) \(labels\.json and the "
                      r"\d+ terms\)"),
    "idf a term short": (_set("idf", lambda a: a[:-1]), r"'idf' is float32 of shape"),
    "negative idf": (_set("idf", lambda a: -a), r"'idf' holds values <= 0"),
    "NaN weight": (_set("data", lambda a: np.where(np.arange(len(a)) == 0, np.nan, a)),
                   r"'data' holds 1 NaN or infinite values"),
    "terms not UTF-8": (_set("terms", lambda a: np.append(a, np.uint8(0xFF))),
                        r"'terms' is not UTF-8"),
}


@pytest.mark.parametrize("case", TFIDF_CASES)
def test_crafted_tfidf_is_refused(tiny_tagger_copy, case):
    assert (tiny_tagger_copy / "tfidf.safetensors").is_file()
    edit, pattern = TFIDF_CASES[case]
    tamper(tiny_tagger_copy, "tfidf.safetensors", edit)
    refused(tiny_tagger_copy, "tfidf.safetensors", pattern)


def test_crafted_label_vectors_are_refused_by_build_index_and_save(tiny_tagger_copy, tmp_path):
    tagger = Tagger.load(tiny_tagger_copy)
    tamper(tiny_tagger_copy, "label_vectors.safetensors",
           lambda t, meta: t.__setitem__("label_bias", np.full(20, np.inf, np.float32)))
    with pytest.raises(ArtifactError, match=r"'label_bias' holds 20 NaN or infinite values"):
        build_index(tiny_tagger_copy)
    tamper(tiny_tagger_copy, "label_vectors.safetensors",
           _set("label_vectors", lambda a: a[:, :5]))
    name = tiny_tagger_copy / "label_vectors.safetensors"
    pattern = (f"{name}: 'label_vectors' is float32 of shape (20, 5), expected float32 of shape "
               "(20, 32) (from labels.json and encoder/config.json); retrain")
    with pytest.raises(ArtifactError, match=re.escape(pattern)):
        build_index(tiny_tagger_copy)
    with pytest.raises(ArtifactError, match=r"'label_vectors' is float32 of shape \(20, 5\)"):
        tagger.save(tmp_path / "copy")  # living labels read the origin's label vectors


def test_predict_on_crafted_folder_is_one_error_line_not_a_segfault(tiny_tagger_copy):
    # out-of-range label ids in the item labels used to crash scipy in C (exit 139)
    tamper(tiny_tagger_copy, "item_labels.safetensors", _set("indices", lambda a: a + 10**6))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    res = subprocess.run([sys.executable, "-m", "metricls.cli", "predict", str(tiny_tagger_copy),
                          "w1x1 w2x3"], capture_output=True, text=True, timeout=300, env=env)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 1, (res.returncode, out[-2000:])
    assert out.startswith("error: ") and "\n" not in out and "Traceback" not in out, out
    assert "item_labels.safetensors: 'indices' span" in out


# ---- 2. scoring.json ---------------------------------------------------------------------------
SCORING_CASES = {
    "unknown key": ({"boost": 2}, r"unknown key 'boost', expected the keys \['blend', "),
    "missing key": ({"knn": None}, r"missing key 'knn'"),
    "blend above 1": ({"blend": 1.5}, r"blend is float 1\.5, expected a number in \[0, 1\]"),
    "blend a string": ({"blend": "0.5"}, r"blend is str '0\.5', expected a number in \[0, 1\]"),
    "blend NaN": ({"blend": float("nan")}, r"blend is NaN, expected a number"),
    "knn zero": ({"knn": 0}, r"knn is int 0, expected a positive int"),
    "knn a float": ({"knn": 2.5}, r"knn is float 2\.5, expected a positive int"),
    "knn a bool": ({"knn": True}, r"knn is bool True, expected a positive int"),
    "candidates a string": ({"candidates": "20"}, r"candidates is str '20', expected a positive"),
    "temperature zero": ({"temperature": 0.0}, r"temperature is float 0\.0, expected a number > 0"),
    "temperature infinite": ({"temperature": float("inf")}, r"temperature is float inf"),
    "threshold infinite": ({"threshold": float("-inf")}, r"threshold is float -inf, expected "
                           r"null or a finite number"),
    "bias_weight huge int": ({"bias_weight": 10**400}, r"bias_weight is int .*, expected a "
                             r"finite number"),
    "thresholds with null": ({"label_thresholds": [0.5] * 19 + [None]},
                             r"label_thresholds is list .*, expected a list of finite numbers"),
    "bias per wrong count": ({"label_bias": [0.1, 0.2]}, r"label_bias has 2 values, expected 0 "
                             r"or 20 \(one per label\)"),
}


@pytest.mark.parametrize("case", SCORING_CASES)
def test_crafted_scoring_json_is_refused(tiny_tagger_copy, case):
    change, pattern = SCORING_CASES[case]
    path = tiny_tagger_copy / "scoring.json"
    scoring = read_json(path) | change
    write_json(path, {k: v for k, v in scoring.items() if v is not None or k == "threshold"})
    resign(tiny_tagger_copy)
    refused(tiny_tagger_copy, "scoring.json", pattern)


def test_label_thresholds_of_the_wrong_length_say_how_many(tiny_tagger_copy):
    path = tiny_tagger_copy / "scoring.json"
    write_json(path, read_json(path) | {"label_thresholds": [0.1, 0.2, 0.3]})
    resign(tiny_tagger_copy)
    error = refused(tiny_tagger_copy, "scoring.json", "label_thresholds")
    assert str(error) == (f"{path}: label_thresholds has 3 values, expected 0 or 20 (one per "
                          f"label); rebuild with `metricls build-index {tiny_tagger_copy}`")


# ---- 3. encoder weights of another encoder -----------------------------------------------------
def _rewrite_weights(folder: Path, edit: Callable[[dict], None],
                     metadata: dict[str, str] | None) -> None:
    path = folder / "encoder" / "weights.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata=metadata)
    resign(folder)


def test_weights_of_another_encoder_name_the_shapes(tiny_tagger_copy):
    def other_dim(state: dict) -> None:  # as if copied from a tagger with out_dim 16
        name = next(k for k in sorted(state) if k.startswith("head.") and k.endswith("weight")
                    and state[k].shape[0] == 32)
        state[name] = state[name][:16].contiguous()

    _rewrite_weights(tiny_tagger_copy, other_dim, {"format": ENCODER_FORMAT})
    error = refused(tiny_tagger_copy, "encoder/weights.safetensors",
                    r"'head\.[\w.]+weight' is torch\.float32 of shape \(16, \d+\), expected "
                    r"torch\.float32 of shape \(32, \d+\) \(from encoder/config\.json")
    assert "retrain" in str(error) and "size mismatch" not in str(error)


def test_encoder_weights_nan_or_untagged_are_refused(tiny_tagger_copy):
    def poison(state: dict) -> None:
        name = sorted(k for k in state if state[k].is_floating_point())[0]
        state[name] = torch.full_like(state[name], float("nan"))

    _rewrite_weights(tiny_tagger_copy, poison, {"format": ENCODER_FORMAT})
    refused(tiny_tagger_copy, "encoder/weights.safetensors", r"holds NaN or infinite values")
    _rewrite_weights(tiny_tagger_copy, lambda state: None, None)
    refused(tiny_tagger_copy, "encoder/weights.safetensors",
            r"no format tag, expected 'metricls-encoder/1'")


# ---- 4. per-file format tags ---------------------------------------------------------------------
TAGGED = ["prototypes.safetensors", "item_labels.safetensors", "reranker.safetensors",
          "tfidf.safetensors"]


@pytest.mark.parametrize("name", TAGGED)
@pytest.mark.parametrize(("tag", "pattern"), [
    (None, r"no format tag, expected 'metricls-[a-z-]+/\d'"),
    ("metricls-nonsense/1", r"format tag 'metricls-nonsense/1', expected 'metricls-[a-z-]+/\d'"),
    ("garbage", r"format tag 'garbage', expected"),
    ("NEWER", r"format 'metricls-[a-z-]+/(\d)' was written by a newer metricls \(this one reads "
              r"'metricls-[a-z-]+/(?!\1)\d'\); upgrade metricls")])
def test_format_tags_are_checked(tiny_tagger_copy, name, tag, pattern):
    def retag(t: dict, meta: dict) -> None:
        found = meta.pop("format")
        if tag == "NEWER":
            kind, _, major = found.partition("/")
            meta["format"] = f"{kind}/{int(major) + 1}"
        elif tag is not None:
            meta["format"] = tag

    tamper(tiny_tagger_copy, name, retag)
    refused(tiny_tagger_copy, name, pattern)


def test_check_format_reads_minor_versions_and_older_majors(tmp_path):
    check_format(tmp_path / "f", "metricls-csr/1.3", CSR_FORMAT)
    check_format(tmp_path / "f", "metricls-csr/0", CSR_FORMAT)
    with pytest.raises(ArtifactError, match="no format tag"):
        check_format(tmp_path / "f", None, CSR_FORMAT)


def test_each_format_tag_is_spelled_once():
    sources = [p for p in (ROOT / "metricls").rglob("*.py")]
    for tag in ("metricls-prototypes/", "metricls-csr/", "metricls-reranker/", "metricls-tfidf/",
                "metricls-encoder/", "metricls-label-vectors/", "metricls-frozen-items/"):
        spelled = [p.relative_to(ROOT).as_posix() for p in sources if tag in p.read_text()]
        assert spelled == ["metricls/formats.py"], (tag, spelled)


# ---- 5. ann/<name>/backend.json ------------------------------------------------------------------
BACKEND_CASES = {
    "dim a string": ({"dim": "32"}, r"dim is str '32', expected an int in \[1, 2147483647\]"),
    "dim zero": ({"dim": 0}, r"dim is int 0, expected an int in \[1, "),
    "n negative": ({"n": -1}, r"n is int -1, expected an int in \[0, "),
    "backend a list": ({"backend": ["flat"]}, r"backend is list \['flat'\], expected a backend"),
    "metric l2": ({"metric": "l2"}, r"metric str 'l2' and params dict .*, expected metric 'ip'"),
    "params a list": ({"params": [1]}, r"expected metric 'ip' and a params object"),
    "param a list": ({"params": {"use_gpu": [True]}},
                     r"params: use_gpu is list \[True\], expected null, a bool"),
    "param beyond a C int": ({"backend": "hnsw", "params": {"ef_search": 2**40}},
                             r"params: ef_search is int 1099511627776, expected"),
    "param NaN": ({"params": {"use_gpu": float("nan")}}, r"params: use_gpu is NaN"),
}


@pytest.mark.parametrize("case", BACKEND_CASES)
def test_crafted_backend_json_is_refused(tiny_tagger_copy, case):
    change, pattern = BACKEND_CASES[case]
    path = tiny_tagger_copy / "ann" / "items" / "backend.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    resign(tiny_tagger_copy)
    refused(tiny_tagger_copy, "ann/items/backend.json", pattern + r".*; rebuild with `metricls "
                                                                  r"build-index ")


def test_item_ids_that_are_not_row_positions_are_refused(tiny_tagger_copy):
    # a flat index's id map (ids.npy) past the item labels' rows: the vote would index past them
    folder = tiny_tagger_copy / "ann" / "items"
    meta = json.loads((folder / "backend.json").read_text())
    ids = np.arange(meta["n"], dtype=np.int64)
    ids[-1] = 10**6
    np.save(folder / "ids.npy", ids)
    (folder / "backend.json").write_text(json.dumps(meta | {"next_id": 10**6 + 1}))
    resign(tiny_tagger_copy)
    refused(tiny_tagger_copy, "ann/items", rf"its ids are not the row positions "
                                           rf"0\.\.{meta['n'] - 1} \(vectors were removed\)")


def test_an_untampered_tagger_still_loads(tiny_tagger_copy):
    resign(tiny_tagger_copy)
    assert Tagger.load(tiny_tagger_copy).predict(["w1x1 w2x3"], k=2)
