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
from metricls.outputs import check_output
from metricls.tagger import Tagger
from metricls.training.trainer import data_files, train_embedder
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
    _check_split(split)
    tagger = Tagger.load(tagger_dir)
    return tagger, _split_items(tagger, data, split)


def _check_split(split: str) -> None:
    if split not in (*SPLITS, "all"):
        raise InputError(f"--split: expected one of {[*SPLITS, 'all']}, got {split!r}")


def _split_items(tagger: Tagger, data: str | None, split: str) -> Items:
    """The items of one split of `data` (default: the tagger's training file)."""
    return read_config_items(tagger.config.data, data).subset(split)


def evaluate_folder(tagger_dir: str | Path, *, data: str | None = None, split: str = "all",
                    baseline: str | None = None, out: str | Path | None = None,
                    tagger: Tagger | None = None, dataset: Dataset | None = None) -> dict:
    """Evaluate a tagger folder on `data` (default: its training file) and one split.

    Args:
        tagger_dir: a built tagger folder.
        data: a file with the tagger's column mapping (default: the config's data path).
        split: "test", "valid", "train" or "all".
        baseline: "untrained" to evaluate the frozen-MiniLM baseline on the same items
            ("none" or None: no baseline).
        out: where to write the JSON report (atomically), if given.
        tagger: the folder's tagger, when the caller has already loaded it.
        dataset: the tagger's training data (`Dataset.load` of its `data` config), when the
            caller has already loaded it: its split is evaluated (not with `data`, nor with
            split "all"), and the baseline is built from it.

    Returns:
        {name: report} for "metricls" and, if asked, "baseline:untrained".
    """
    check_baseline(baseline)
    _check_split(split)
    if dataset is not None and (data is not None or split == "all"):
        raise InputError("evaluate_folder: pass dataset only with split 'train', 'valid' or "
                         "'test' and no data file")
    tagger = tagger if tagger is not None else Tagger.load(tagger_dir)
    items = getattr(dataset, split) if dataset is not None else _split_items(tagger, data, split)
    reports = {"metricls": evaluate(tagger, items)}
    if baseline == "untrained":
        known = dataset if dataset is not None else Dataset.load(tagger.config.data)
        base, _ = untrained_baseline(tagger.config, known)
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
    # the output is refused before the data is read, as `train_embedder` alone would
    check_output(Path(out) if out is not None else Path("index") / cfg.name, "tagger",
                 overwrite=overwrite, inputs=data_files(cfg))
    data = Dataset.load(cfg.data)  # the one read of the data file: every step below shares it
    folder = train_embedder(cfg, out=out, overwrite=overwrite, data=data)
    tagger = build_index(folder, data=data)  # the one load of the built tagger
    json_path = folder.parent / f"{folder.name}-evaluation.json"
    reports = evaluate_folder(folder, split="test", baseline=baseline, out=json_path,
                              tagger=tagger, dataset=data)
    test = data.test
    picked = list(range(min(show, len(test))))
    sample = test.subset(picked) if picked else test
    tags = tagger.predict(sample, k=5, threshold=None) if picked else []
    examples = [{"id": sample.ids[i], "text": (sample.texts or [""] * len(sample))[i],
                 "true": sample.labels[i], "tags": tags[i]} for i in range(len(picked))]
    return {"folder": str(folder), "reports": reports, "examples": examples,
            "json": str(json_path)}
