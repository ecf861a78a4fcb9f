"""Train the embedder of a config into a tagger folder: python scripts/train_embedder.py CONFIG.

Multi-process: torchrun --nproc_per_node N scripts/train_embedder.py CONFIG
"""

import argparse

from metricls import load_config, train_embedder
from metricls.training.distributed import launch_ranks

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("config")
parser.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override, e.g. train.lr=3e-4")
parser.add_argument("--out", default=None, help="tagger folder (default index/NAME)")
parser.add_argument("--overwrite", action="store_true",
                    help="replace an existing tagger folder there (never another kind)")
args = parser.parse_args()
folder = train_embedder(load_config(args.config, args.overrides), out=args.out,
                        overwrite=args.overwrite)
if launch_ranks()[0] == 0:
    print(folder)
