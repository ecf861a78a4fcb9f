"""Recall@k and speed of every ANN backend vs exact search: python scripts/bench_recall.py."""

import argparse

from metricls.bench.recall import bench_recall, markdown_summary

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--tagger", default=None, help="a built tagger folder (its prototypes)")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--threads", type=int, default=0)
parser.add_argument("--out", default="benchmarks/recall/recall.json")
args = parser.parse_args()
result = bench_recall(tagger=args.tagger, quick=args.quick, out=args.out, threads=args.threads)
print(markdown_summary(result))
