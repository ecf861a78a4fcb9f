"""`metricls bench recall` (recall.py) and the machine description every benchmark records
(machine.py). The other benchmark harnesses live in the repository's benchmarks/ folder."""
