"""The jobs behind the CLI: evaluate a tagger folder, and run the whole pipeline end to end."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from metricls.artifacts import write_json
from metricls.build import build_index, untrained_baseline
from metricls.config import load_config
from metricls.data.dataset import Dataset, read_config_items
from metricls.data.items import Items
from metricls.data.splits import SPLITS
from metricls.errors import InputError
from metricls.evaluation import evaluate
from metricls.tagger import Tagger
from metricls.training.trainer import train_embedder
from metricls.validation import describe

log = logging.getLogger(__name__)
BASELINES = ("untrained", "none")


def check_baseline(baseline: str | None) -> None:
    """Refuse a `--baseline` other than "untrained", "none" or None."""
    if baseline is not None and baseline not in BASELINES:
        raise InputError(f"--baseline: expected one of {list(BASELINES)}, got {baseline!r}")


def load_for_evaluation(tagger_dir: str | Path, *, data: str | None = None,
                        split: str = "all") -> tuple[Tagger, Items]:
    """The tagger of a folder and the items of one split of `data` (default: its training file).

    The split is checked before anything is read.
    """
    if split not in (*SPLITS, "all"):
        raise InputError(f"--split: expected one of {[*SPLITS, 'all']}, got {split!r}")
    tagger = Tagger.load(tagger_dir)
    return tagger, read_config_items(tagger.config.data, data).subset(split)


def evaluate_folder(tagger_dir: str | Path, *, data: str | None = None, split: str = "all",
                    baseline: str | None = None, out: str | Path | None = None) -> dict:
    """Evaluate a tagger folder on `data` (default: its training file) and one split.

    Args:
        tagger_dir: a built tagger folder.
        data: a file with the tagger's column mapping (default: the config's data path).
        split: "test", "valid", "train" or "all".
        baseline: "untrained" to evaluate the frozen-MiniLM baseline on the same items
            ("none" or None: no baseline).
        out: where to write the JSON report (atomically), if given.

    Returns:
        {name: report} for "metricls" and, if asked, "baseline:untrained".
    """
    check_baseline(baseline)
    tagger, items = load_for_evaluation(tagger_dir, data=data, split=split)
    reports = {"metricls": evaluate(tagger, items)}
    if baseline == "untrained":
        base, _ = untrained_baseline(tagger.config, Dataset.load(tagger.config.data))
        reports["baseline:untrained"] = evaluate(base, items, cache=True)
    for report in reports.values():
        report["split"] = split
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), reports)
    return reports


def run_pipeline(config: str | Path, *, overrides: Sequence[str] = (),
                 out: str | Path | None = None, baseline: str | None = "untrained",
                 show: int = 5, overwrite: bool = False) -> dict:
    """Train, build the index, evaluate on the test split, and tag `show` test items.

    Every argument (the config and its overrides, `baseline`, `show`) is checked before
    any training.

    Returns:
        {"folder", "reports", "examples", "json"}; the reports are also written as JSON
        beside the tagger folder (``<folder>-evaluation.json``).
    """
    check_baseline(baseline)
    if isinstance(show, bool) or not isinstance(show, int) or show < 0:
        raise InputError(f"--show: expected an int >= 0, got {describe(show)}")
    cfg = load_config(config, overrides)
    folder = train_embedder(cfg, out=out, overwrite=overwrite)
    tagger = build_index(folder)
    json_path = folder.parent / f"{folder.name}-evaluation.json"
    reports = evaluate_folder(folder, split="test", baseline=baseline, out=json_path)
    test = read_config_items(cfg.data).subset("test")
    picked = list(range(min(show, len(test))))
    sample = test.subset(picked) if picked else test
    tags = tagger.predict(sample, k=5, threshold=None) if picked else []
    examples = [{"id": sample.ids[i], "text": (sample.texts or [""] * len(sample))[i],
                 "true": sample.labels[i], "tags": tags[i]} for i in range(len(picked))]
    return {"folder": str(folder), "reports": reports, "examples": examples,
            "json": str(json_path)}
