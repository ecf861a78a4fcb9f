"""metricls's benchmark harnesses: scripts beside the results they wrote (not installed).

Each folder holds one harness, run from the repository root as ``python benchmarks/NAME/run.py``
(see benchmarks/README.md), and its committed results.
"""
