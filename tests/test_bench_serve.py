"""The serve benchmark (benchmarks/serve/): a short load run on the tiny tagger, by its script."""

import json

import pytest

from benchmarks.serve.run import main


def test_bench_serve_cli(tiny_tagger_dir, tmp_path, capsys):
    out = tmp_path / "serve.json"
    status = main([str(tiny_tagger_dir), "--requests", "12", "--concurrency", "3", "--batch", "1",
                   "--batch", "4", "--repeats", "3", "--out", str(out)])
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
        assert len(run["repeats_requests_per_s"]) == 3  # the reported run is their median
        assert sorted(run["repeats_requests_per_s"])[1] == run["requests_per_s"]
    assert "| tiny | 4 | 3 |" in printed.out


def test_bench_serve_cli_refuses_a_bad_count(tiny_tagger_dir, tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main([str(tiny_tagger_dir), "--requests", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: requests")
    assert not out.exists()


def test_the_run_waits_until_every_worker_has_loaded():
    """With several workers /health answers once the first is up; the run waits until the
    server's process tree is idle: here a child busy for 1.5 s, as a worker loading its tagger."""
    import subprocess
    import sys
    import time

    from benchmarks.serve.run import tree_cpu_seconds, wait_until_idle

    busy = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\ntime.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               f"subprocess.Popen([sys.executable, '-c', {busy!r}]); "
                               "time.sleep(60)"])
    try:
        time.sleep(0.3)  # the parent has started its busy child
        start = time.monotonic()
        waited = wait_until_idle(parent.pid, timeout=30)
        assert 1.0 <= time.monotonic() - start == pytest.approx(waited, abs=0.1)
        assert waited < 10
        assert tree_cpu_seconds(parent.pid) >= 0.3  # the child's CPU counts (the parent: ~0.05)
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
