"""The serve benchmark (benchmarks/serve/): a short load run on the tiny tagger, by its script."""

import json

import pytest

from benchmarks.serve.run import main


def test_bench_serve_cli(tiny_tagger_dir, tmp_path, capsys):
    out = tmp_path / "serve.json"
    status = main([str(tiny_tagger_dir), "--requests", "12", "--concurrency", "3", "--batch", "1",
                   "--batch", "4", "--out", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    runs = json.loads(out.read_text())["runs"]
    assert [run["batch"] for run in runs] == [1, 4]
    for run in runs:
        assert run["count"] == run["requests"] == 12 and run["errors"] == 0
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert run["server_ms"]["p50"] <= lat["p50"]  # the round trip holds the server's time
        assert run["requests_per_s"] == pytest.approx(12 / run["seconds"], rel=0.01)
        assert run["texts_per_s"] == pytest.approx(run["requests_per_s"] * run["batch"], rel=0.01)
    assert "| tiny | 4 | 3 |" in printed.out


def test_bench_serve_cli_refuses_a_bad_count(tiny_tagger_dir, tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main([str(tiny_tagger_dir), "--requests", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: requests")
    assert not out.exists()
