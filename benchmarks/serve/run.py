"""The serve benchmark: requests/s, texts/s and latency of `metricls serve` under concurrent load.

    python benchmarks/serve/run.py index/debtags-lexical index/debtags --batch 1 --batch 32

The server runs as `metricls serve` in a subprocess on 127.0.0.1; the client sends a bounded
number of POST /tag requests from `concurrency` threads (one keep-alive connection each) and
times each one. Inputs are the tagger's test-split items (all items if it has no test split),
cycled. The run starts once the server's processes have gone idle (`settled_s` after /health first
answered): with several workers, /health answers as soon as the first has loaded its tagger.
Each batch size is timed `--repeats` times (3), one run after the other, and the run with the
median requests/s is reported beside every run's requests/s: runs on a small shared machine vary
by 10 to 25%. Client and server share the machine, so the figures include the client's CPU use;
each run records the 1-minute load average before and after it, since other work on the machine
counts too.

Results beside this script: serve.json. `running_server` also serves the tests of metricls serve.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, harness_parser, run_harness
from metricls.artifacts import read_json, write_json
from metricls.bench.machine import machine_info
from metricls.config import from_dict
from metricls.data.dataset import read_config_items
from metricls.errors import InputError, MetriclsError
from metricls.validation import check_k

__all__ = ["bench_serve", "main", "markdown_summary", "running_server"]

OUT = BENCHMARKS / "serve" / "serve.json"
log = logging.getLogger("benchmarks.serve")


@dataclass
class Server:
    """A running `metricls serve` subprocess."""

    url: str
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(tagger: str | Path, *, args: Sequence[str] = (), port: int | None = None,
                   quiet: bool = True, timeout: float = 180.0) -> Iterator[Server]:
    """`metricls [--quiet] serve TAGGER ARGS` on 127.0.0.1, yielded once GET /health answers.

    `quiet` drops uvicorn's per-request access log. On exit the server gets SIGTERM (uvicorn's
    graceful shutdown), then SIGKILL after 20 s.
    """
    url = f"http://127.0.0.1:{port or free_port()}"
    command = [sys.executable, "-m", "metricls.cli", *(["--quiet"] if quiet else []), "serve",
               str(tagger), "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], *args]
    with tempfile.TemporaryDirectory(prefix="metricls-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with open(log, "wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, process, log, timeout)
            yield Server(url, process, log)
        finally:
            _stop(process)


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise MetriclsError(f"metricls serve exited with code {process.returncode} before "
                                f"answering: {' | '.join(tail)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise MetriclsError(f"metricls serve did not answer {url}/health within {timeout:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by process `pid` and its children (Linux's /proc); None where
    they cannot be read."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ticks = 0
        for member in (pid, *map(int, children)):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, *, timeout: float = 180.0, window: float = 0.5,
                    busy: float = 0.1, quiet_windows: int = 2) -> float:
    """Wait until process `pid` and its direct children (uvicorn's workers) have used less
    than `busy` of a core in each of `quiet_windows` windows of `window` seconds in a row, at
    most `timeout` s; returns the seconds waited. With several workers, /health answers as
    soon as the first has loaded its tagger: the others are still loading, and a run started
    then times one worker competing with the others' loading. Where /proc cannot be read at
    all, waits `timeout` / 6 seconds."""
    start = time.monotonic()
    last = tree_cpu_seconds(pid)
    if last is None:
        time.sleep(timeout / 6)
        return time.monotonic() - start
    quiet = 0
    while quiet < quiet_windows:
        if time.monotonic() - start >= timeout:
            log.warning("the server still used CPU after %.0f s; timing it anyway", timeout)
            break
        time.sleep(window)
        now = tree_cpu_seconds(pid)  # None or less than before: a child came or went
        quiet = quiet + 1 if now is not None and 0 <= now - last < busy * window else 0
        last = now if now is not None else last
    return time.monotonic() - start


def bench_serve(taggers: Sequence[str | Path], *, requests: int = 2000, concurrency: int = 8,
                batches: Sequence[int] = (1, 32), k: int = 5, workers: int = 1,
                repeats: int = 3, out: str | Path = OUT) -> dict[str, Any]:
    """Load-test each tagger's server at each batch size; write and return the JSON result.

    Args:
        taggers: built tagger folders, each served in turn.
        requests: timed requests per run (after `concurrency` untimed warm-up requests).
        concurrency: client threads, each with one request in flight.
        batches: texts (or vectors) per request; one run each.
        k: tags per input.
        workers: server processes (`metricls serve --workers`).
        repeats: timed runs per batch size, one after the other, each going on through the
            inputs where the last stopped; the run with the median requests/s (the upper
            one for an even count) is reported,
            beside every run's requests/s (this machine's runs vary by 10 to 25%).
        out: the JSON path.
    """
    if not batches:
        raise InputError("batch: give at least one batch size")
    for name, value in (("requests", requests), ("concurrency", concurrency),
                        ("workers", workers), ("k", k), ("repeats", repeats),
                        *(("batch", b) for b in batches)):
        check_k(value, name=name)
    runs = []
    for tagger in taggers:
        field, pool = _inputs(Path(tagger))
        limit = str(max(128, *batches))
        with running_server(tagger, args=["--workers", str(workers), "--max-batch", limit,
                                          "--max-k", str(max(100, k))]) as server:
            settled = wait_until_idle(server.process.pid)  # every worker has loaded
            for batch in batches:
                bodies = [json.dumps({field: [pool[(i * batch + j) % len(pool)]
                                              for j in range(batch)], "k": k}).encode()
                          for i in range(requests * repeats + concurrency)]
                _fire(server.url, bodies[:concurrency], concurrency)  # warm-up
                timed = []
                for r in range(repeats):
                    load_before = os.getloadavg()[0]
                    start = time.perf_counter()
                    results = _fire(server.url, bodies[concurrency + r * requests:
                                                       concurrency + (r + 1) * requests],
                                    concurrency)
                    timed.append(_stats(results, time.perf_counter() - start, batch)
                                 | {"loadavg_1m": [load_before, os.getloadavg()[0]]})
                median = sorted(timed, key=lambda t: t["requests_per_s"])[len(timed) // 2]
                runs.append({"tagger": Path(tagger).name, "path": str(tagger), "batch": batch,
                             "concurrency": concurrency, "k": k, "workers": workers,
                             "requests": requests, "settled_s": round(settled, 1), **median,
                             "repeats_requests_per_s": [t["requests_per_s"] for t in timed]})
    result = {"machine": machine_info(("fastapi", "uvicorn", "httptools", "uvloop")),
              "client": f"http.client, {concurrency} threads (one keep-alive connection each), "
                        "same machine",
              "runs": runs}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    return result


def _inputs(folder: Path) -> tuple[str, list]:
    """("texts", texts) or ("vectors", rows) of the tagger's test split (else all its items)."""
    config = from_dict(read_json(folder / "config.json"), source=str(folder / "config.json"))
    items = read_config_items(config.data, require_labels=False)
    test = items.subset("test")
    items = test if len(test) else items
    if "features" not in config.encoder.backbones:
        return "texts", list(items.texts)
    if items.features is None:
        raise InputError(f"{folder}: its data has no feature columns to send as vectors")
    return "vectors", items.features.tolist()


def _fire(url: str, bodies: list[bytes], concurrency: int) -> list[dict[str, Any]]:
    """POST each body to /tag from `concurrency` threads, each over one keep-alive connection
    of the standard library's `http.client` (a light client: it shares the machine's two cores
    with the server); one record per request."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    todo: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for body in bodies:
        todo.put(body)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            while True:
                try:
                    body = todo.get_nowait()
                except queue.Empty:
                    return
                start = time.perf_counter()
                try:
                    connection.request("POST", "/tag", body,
                                       {"content-type": "application/json"})
                    response = connection.getresponse()
                    payload = json.loads(response.read())
                    record = {"ms": (time.perf_counter() - start) * 1e3,
                              "status": response.status}
                    record |= ({"server_ms": payload["took_ms"]} if response.status == 200
                               else {"error": f"{response.status}: {payload.get('detail')}"})
                except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                    connection.close()  # a fresh connection for the next request
                    record = {"ms": (time.perf_counter() - start) * 1e3, "status": None,
                              "error": f"{type(exc).__name__}: {exc}"}
                with lock:
                    results.append(record)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 3),
            "p95": round(float(np.percentile(arr, 95)), 3),
            "p99": round(float(np.percentile(arr, 99)), 3),
            "mean": round(float(arr.mean()), 3), "max": round(float(arr.max()), 3)}


def _stats(results: list[dict[str, Any]], seconds: float, batch: int) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    return {"count": len(results), "errors": len(errors),
            "error_examples": list(dict.fromkeys(errors))[:3], "seconds": round(seconds, 6),
            "requests_per_s": round(len(ok) / seconds, 2),
            "texts_per_s": round(len(ok) * batch / seconds, 1),
            "latency_ms": _percentiles([r["ms"] for r in results]),
            "server_ms": _percentiles([r["server_ms"] for r in ok])}


def markdown_summary(result: dict[str, Any]) -> str:
    """One table row per run: throughput, latency percentiles and errors."""
    lines = ["| tagger | batch | concurrency | requests/s | texts/s | p50 ms | p95 ms | p99 ms "
             "| server p50 ms | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lat, server = r["latency_ms"], r["server_ms"]
        lines.append(f"| {r['tagger']} | {r['batch']} | {r['concurrency']} | "
                     f"{r['requests_per_s']:,.1f} | {r['texts_per_s']:,.0f} | {lat['p50']:.1f} | "
                     f"{lat['p95']:.1f} | {lat['p99']:.1f} | {server.get('p50', 0):.1f} | "
                     f"{r['errors']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/serve/run.py TAGGER... [options]``: run, write, print the table."""
    parser = harness_parser(__doc__)
    parser.add_argument("taggers", type=Path, nargs="+", metavar="TAGGER",
                        help="built tagger folders, each served in turn")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per run")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--batch", type=int, action="append", default=None,
                        help="texts per request; repeat for several runs (none given: 1 and 32)")
    parser.add_argument("-k", type=int, default=5, help="tags per input")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per batch size; the median one is reported")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON report")

    def body(args: argparse.Namespace) -> str:
        return markdown_summary(bench_serve(args.taggers, requests=args.requests,
                                            concurrency=args.concurrency,
                                            batches=args.batch or (1, 32), k=args.k,
                                            workers=args.workers, repeats=args.repeats,
                                            out=args.out))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
