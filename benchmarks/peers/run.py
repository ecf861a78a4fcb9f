"""The peers benchmark: metricls against standard extreme multi-label methods on the same split.

    python benchmarks/peers/run.py --configs configs/debtags.yaml,configs/debtags-lexical.yaml

Every method reads the same items (the configs' data, md5 split, train vocabulary, texts of
the configs' text columns), predicts its top-10 labels for the test split, and is scored by
the same `metricls.evaluation.ranking_metrics`. Peers: TF-IDF + one-vs-rest linear SVM
(scikit-learn), TF-IDF + napkinXC PLT, TF-IDF + PECOS XR-Linear (in a virtual environment that
this benchmark creates, `pecos_venv.py`), and a frozen backbone's kNN vote and mean prototypes
(MiniLM with the first config's settings). Each peer's main setting is chosen on valid;
metricls rows come from each config, trained here or, with --reuse, read from
``index/<name>``. Results: peers.json, peers.md, peers.png and
peers.safetensors beside this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `benchmarks`

from benchmarks._common import BENCHMARKS, harness_parser, run_harness
from benchmarks.peers.dense_peers import frozen_embeddings, run_knn, run_metricls, run_prototypes
from benchmarks.peers.peer_run import K, PeerRun
from benchmarks.peers.peers_report import markdown_table, write_markdown, write_plot
from benchmarks.peers.sparse_peers import run_ovr, run_pecos, run_plt, tfidf_features
from metricls import load_config
from metricls.artifacts import save_tensors, write_json
from metricls.bench.machine import machine_info
from metricls.config import Config
from metricls.data.dataset import Dataset
from metricls.errors import InputError
from metricls.evaluation import ranking_metrics
from metricls.manifest import versions
from metricls.validation import parse_csv

__all__ = ["PEERS", "bench_peers", "main", "markdown_table"]

PEERS = ("tfidf-ovr", "napkinxc", "pecos", "knn", "prototypes")
FROZEN = ("minilm", "features")
QUICK = {"train": 2_000, "valid": 500, "test": 500}  # first items of each split in --quick
PACKAGES = ("scikit-learn", "napkinxc", "faiss-cpu", "torch", "sentence-transformers")
OUT = BENCHMARKS / "peers" / "peers"  # the committed results: peers.json, .md, .png, .safetensors
VENV = ".cache/peers-venv"


def bench_peers(configs: Sequence[str | Path], *, peers: Sequence[str] = PEERS,
                out: str | Path = OUT, quick: bool = False, reuse: bool = False,
                frozen: str = "minilm", venv: str | Path = VENV,
                index_root: str | Path = "index") -> dict[str, Any]:
    """Run every peer and every config on the same split; write JSON, markdown and a plot.

    Args:
        configs: metricls config files, one row each; they must share their `data` section.
        peers: which of `PEERS` to run.
        out: path stem: writes OUT.json, OUT.md, OUT.png and OUT.safetensors (each row's
            test top-10 label ids, keyed by row name).
        quick: only the first `QUICK` items of each split (vocabulary unchanged), for tests.
        reuse: evaluate ``index_root/<config name>`` when it was built from the same config
            and data, instead of training (not with `quick`).
        frozen: the backbone of the kNN and prototype peers: "minilm" or "features".
        venv: the virtual environment PECOS runs in (created with pip on first use, see
            `benchmarks.peers.pecos_venv`).
        index_root: where reusable tagger folders are.

    Returns:
        The JSON written: ``machine``, ``versions``, ``data``, ``rows`` (one per method:
        metrics, train_s, featurize_s, predict_s, items_per_s, items_per_s_from_features,
        settings).
    """
    cfgs, peers = _check_args(configs, peers, frozen, quick and reuse)
    data = Dataset.load(cfgs[0].data)
    if quick:
        data = quick_subset(data)
    runs = [run_metricls(cfg, data, reuse=Path(index_root) / cfg.name if reuse else None)
            for cfg in cfgs]
    runs += _peer_runs(peers, cfgs[0], data, frozen=frozen, venv=Path(venv))
    result = {"machine": machine_info(PACKAGES), "versions": versions(),
              "data": data.summary() | {"quick": quick, "split": "test"}, "k": K,
              "frozen_backbone": frozen, "rows": [_row(run, data) for run in runs]}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    save_tensors(out.with_suffix(".safetensors"),
                 {run.name: run.test_ids.astype(np.int32) for run in runs},
                 {"format": "metricls-peers-ids/1", "data_sha256": data.sha256,
                  "n_test": str(len(data.test)), "quick": str(quick)})
    write_markdown(result, out.with_suffix(".md"))
    write_plot(result, out.with_suffix(".png"))
    return result


def _check_args(configs: Sequence[str | Path], peers: Sequence[str], frozen: str,
                quick_reuse: bool) -> tuple[list[Config], list[str]]:
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise InputError(f"--peers: unknown peer {unknown[0]!r}; expected some of {list(PEERS)}")
    if frozen not in FROZEN:
        raise InputError(f"--frozen: expected one of {list(FROZEN)}, got {frozen!r}")
    if quick_reuse:
        raise InputError("--reuse evaluates taggers trained on the full data; drop --quick")
    if not configs:
        raise InputError("--configs: name at least one config file (it also gives the data)")
    cfgs = [load_config(c) for c in configs]
    for path, cfg in zip(configs[1:], cfgs[1:]):
        if cfg.data != cfgs[0].data:
            raise InputError(f"{path}: its data section differs from {configs[0]}'s; the "
                             "benchmark compares methods on one data set")
    names = [cfg.name for cfg in cfgs]
    if len(set(names)) < len(names):
        raise InputError(f"--configs: two configs are named {max(names, key=names.count)!r}; "
                         "each row is named after its config's `name`")
    return cfgs, list(dict.fromkeys(peers))


def quick_subset(data: Dataset) -> Dataset:
    """The first `QUICK` items of each split, with the full data's label vocabulary."""
    parts = {split: getattr(data, split) for split in QUICK}
    return dataclasses.replace(data, **{split: items.subset(np.arange(min(n, len(items))))
                                        for (split, items), n in zip(parts.items(),
                                                                     QUICK.values())})


def _peer_runs(peers: list[str], cfg: Config, data: Dataset, *, frozen: str,
               venv: Path) -> list[PeerRun]:
    """The peers asked for, in `PEERS` order; features are computed once for all."""
    runs = []
    sparse = [p for p in PEERS[:3] if p in peers]
    if sparse:
        feats = tfidf_features(data)
        fits = {"tfidf-ovr": run_ovr, "napkinxc": run_plt,
                "pecos": lambda f, d: run_pecos(f, d, venv=venv)}
        runs += [fits[p](feats, data) for p in sparse]
    dense = [p for p in PEERS[3:] if p in peers]
    if dense:
        emb = frozen_embeddings(cfg, data, frozen)
        fits = {"knn": run_knn, "prototypes": run_prototypes}
        runs += [fits[p](emb, data) for p in dense]
    return runs


def _row(run: PeerRun, data: Dataset) -> dict[str, Any]:
    """One method's JSON row: test metrics of its saved ids, and its timings."""
    n = len(data.test)
    return {"name": run.name, "description": run.description,
            "metrics": ranking_metrics(run.test_ids, data.test.labels, data.vocab),
            "train_s": round(run.train_s, 3), "featurize_s": round(run.featurize_s, 6),
            "predict_s": round(run.predict_s, 6),
            "items_per_s": round(n / max(run.featurize_s + run.predict_s, 1e-9), 1),
            "items_per_s_from_features": round(n / max(run.predict_s, 1e-9), 1),
            "settings": run.settings}


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/peers/run.py [options]``: run, write, print the markdown table."""
    parser = harness_parser(__doc__)
    parser.add_argument("--configs", default="configs/debtags.yaml,configs/debtags-lexical.yaml",
                        help="comma-separated metricls configs (one row each; they give the data)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, '' for none")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="path stem: writes OUT.json, OUT.md, OUT.png, OUT.safetensors")
    parser.add_argument("--quick", action="store_true",
                        help="the first items of each split only (for tests)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate index/NAME when built from the same config and data")
    parser.add_argument("--frozen", default="minilm",
                        help="backbone of the knn/prototypes peers: minilm|features")
    parser.add_argument("--venv", type=Path, default=Path(VENV),
                        help="the PECOS virtual environment (created with pip on first use)")

    def body(args: argparse.Namespace) -> str:
        return markdown_table(bench_peers(parse_csv(args.configs), peers=parse_csv(args.peers),
                                          out=args.out, quick=args.quick, reuse=args.reuse,
                                          frozen=args.frozen, venv=args.venv))

    return run_harness(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
