"""The MiniLM runtime benchmark (benchmarks/minilm/): torch against ONNX Runtime on a tagger
with a MiniLM backbone, and its errors."""

import json

import pytest
from conftest import MINILM, build_tiny

from benchmarks.minilm.run import bench_minilm, main
from metricls.errors import InputError


@pytest.fixture(scope="module")
def minilm_tagger(tmp_path_factory, synthetic_path, monkeypatch_module):
    monkeypatch_module.setenv("METRICLS_CACHE", str(tmp_path_factory.mktemp("cache")))
    folder = tmp_path_factory.mktemp("minilm") / "tagger"
    build_tiny(folder, synthetic_path, *MINILM)
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_each_runtime_is_timed_and_scored_against_torch(minilm_tagger, tmp_path, capsys):
    out = tmp_path / "minilm.json"
    assert main([str(minilm_tagger), "--runtimes", "torch,onnx", "--limit", "40",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    torch_row, onnx_row = result["rows"]
    assert (torch_row["runtime"], onnx_row["runtime"]) == ("torch", "onnx")
    assert result["texts"] == 40 and torch_row["encoder_speedup"] == 1.0
    for row in result["rows"]:
        assert row["encoder_texts_per_s"] > 0 and row["end_to_end_texts_per_s"] > 0
        assert 0 <= row["P@5"] <= row["P@1"] <= 1
    # the same network in fp32: the same tags
    assert onnx_row["P@5_minus_torch"] == pytest.approx(0.0, abs=0.01)
    assert "| onnx |" in capsys.readouterr().out
    assert out.with_suffix(".md").read_text().startswith("40 test texts")


def test_bad_runtimes_and_taggers_without_minilm_are_refused(minilm_tagger, tiny_tagger_dir,
                                                              tmp_path):
    with pytest.raises(InputError, match="--runtimes: expected some of"):
        bench_minilm(minilm_tagger, runtimes=["tensorrt"], out=tmp_path / "x.json")
    with pytest.raises(InputError, match="its encoder has no minilm backbone"):
        bench_minilm(tiny_tagger_dir, out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
