"""metricls against TF-IDF linear, tree and frozen-embedding peers (see metricls bench peers)."""

import argparse

from metricls.bench.peers import PEERS, bench_peers, markdown_table

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--configs", default="configs/debtags.yaml,configs/debtags-lexical.yaml",
                    help="comma-separated metricls configs (one row each; they give the data)")
parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, '' for none")
parser.add_argument("--out", default="bench/peers", help="writes OUT.json, OUT.md, OUT.png")
parser.add_argument("--quick", action="store_true", help="a small subset of each split")
parser.add_argument("--reuse", action="store_true",
                    help="evaluate index/NAME when built from the same config and data")
parser.add_argument("--frozen", default="minilm", help="knn/prototypes backbone: minilm|features")
args = parser.parse_args()
result = bench_peers([c for c in args.configs.split(",") if c.strip()],
                     peers=[p.strip() for p in args.peers.split(",") if p.strip()],
                     out=args.out, quick=args.quick, reuse=args.reuse, frozen=args.frozen)
print(markdown_table(result))
