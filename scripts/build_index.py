"""Build the ANN indexes of a trained tagger: python scripts/build_index.py index/debtags."""

import argparse

from metricls import build_index

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("tagger")
parser.add_argument("--backend", choices=["auto", "hnsw", "flat", "ivf", "scann"], default=None)
parser.add_argument("--prototypes", choices=["learned", "mean"], default=None)
parser.add_argument("--target-recall", type=float, default=None)
args = parser.parse_args()
print(build_index(args.tagger, backend=args.backend, prototypes=args.prototypes,
                  target_recall=args.target_recall))
