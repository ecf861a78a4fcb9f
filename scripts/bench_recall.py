"""Recall@k and speed of every ANN backend vs exact search: python scripts/bench_recall.py.

On your own data: --tagger TAGGER --texts FILE (or --vectors FILE.npy); see
`metricls bench recall --help`, which takes the same options.
"""

import argparse

from metricls.bench.recall import bench_recall, markdown_summary

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--tagger", default=None, help="a built tagger folder")
parser.add_argument("--texts", default=None, help="your texts, embedded by --tagger")
parser.add_argument("--vectors", default=None, help="your vectors, a .npy file")
parser.add_argument("--queries", type=int, default=1000)
parser.add_argument("--size", type=int, default=None)
parser.add_argument("--matched", action="store_true")
parser.add_argument("--backends", default=None, help="comma-separated")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--threads", type=int, default=0)
parser.add_argument("--out", default="benchmarks/recall/recall.json")
args = parser.parse_args()
result = bench_recall(tagger=args.tagger, texts=args.texts, vectors=args.vectors,
                      queries=args.queries, size=args.size, matched=args.matched,
                      quick=args.quick, out=args.out, threads=args.threads,
                      backends=args.backends.split(",") if args.backends else None)
print(markdown_summary(result))
