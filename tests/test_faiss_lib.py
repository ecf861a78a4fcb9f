"""FAISS runs on torch's OpenMP runtime in every process that loads it through metricls.

Two OpenMP runtimes in one process (faiss-cpu's and torch's libgomp) each keep worker threads
spinning and slow small batches down several times; `metricls.ann.faiss_lib` loads torch first
so that FAISS binds to torch's. Each check runs in a fresh interpreter, where the import order
is still open.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENTRY_POINTS = ["metricls.ann", "metricls.tagger", "metricls.catalog", "metricls.serve",
                "metricls.bench.vectors", "metricls.ann.tuning"]


def _run(code: str) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "4"}  # a default above 1 on any machine
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    return out.stdout.strip()


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_faiss_shares_torchs_openmp_runtime(module):
    # one runtime: the thread count torch sets is the one FAISS's parallel searches see
    code = (f"import sys, {module}\n"
            "assert 'faiss' in sys.modules, 'the module did not load faiss'\n"
            "import torch\n"
            "from metricls.ann.faiss_lib import faiss\n"
            "torch.set_num_threads(1)\n"
            "print(faiss.omp_get_max_threads())")
    assert _run(code) == "1"


def test_faiss_imported_first_keeps_its_own_runtime():
    # what the module guards against, so the check above can tell the two cases apart
    code = ("import faiss, torch\n"
            "torch.set_num_threads(1)\n"
            "print(faiss.omp_get_max_threads())")
    assert _run(code) == "4"
