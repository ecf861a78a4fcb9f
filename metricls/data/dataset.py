"""Dataset: a config's items split into train/valid/test, with the label vocabulary of train."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import scipy.sparse as sp

from metricls.artifacts import sha256_file
from metricls.config import DataConfig
from metricls.data.descriptions import read_descriptions
from metricls.data.items import Items, read_items, resolve_dataset
from metricls.data.labels import LabelVocab
from metricls.errors import InputError


def read_config_items(cfg: DataConfig, path: str | Path | None = None, *,
                      require_labels: bool = True) -> Items:
    """Read `path` (default `cfg.path`) with the column mapping of `cfg`.

    `cfg.features_path` belongs to `cfg.path` (row i = its row i), so it is read with that file
    only, never with another one that merely has as many rows.
    """
    own = path is None or _same_file(path, cfg.path)
    return read_items(resolve_dataset(str(path if path is not None else cfg.path)),
                      id_column=cfg.id_column, text_columns=cfg.text_columns,
                      feature_columns=cfg.feature_columns, vector_column=cfg.vector_column,
                      label_column=cfg.label_column, label_delimiter=cfg.label_delimiter,
                      split_column=cfg.split_column, require_labels=require_labels,
                      features_path=cfg.features_path if own else None)


@dataclass(frozen=True)
class Dataset:
    """The split items, the training vocabulary and multi-hot label matrices."""

    train: Items
    valid: Items
    test: Items
    vocab: LabelVocab
    source: str
    sha256: str
    features_sha256: str | None = None  # of `data.features_path`, when the config has one
    descriptions: dict[str, str] = field(default_factory=dict)  # of `data.label_table`

    @classmethod
    def load(cls, cfg: DataConfig) -> Dataset:
        path = resolve_dataset(cfg.path)
        items = read_config_items(cfg, path)
        train = items.subset("train")
        if len(train) == 0:
            raise InputError(f"{path}: no item falls in the train split")
        vocab = LabelVocab.fit(_without(train.labels, cfg.exclude_labels, path),
                               min_count=cfg.min_count)
        return cls(train=train, valid=items.subset("valid"), test=items.subset("test"),
                   vocab=vocab, source=str(cfg.path), sha256=sha256_file(path),
                   features_sha256=sha256_file(Path(cfg.features_path).expanduser())
                   if cfg.features_path else None,
                   descriptions=_descriptions(cfg.label_table))

    def labels(self, split: str) -> sp.csr_matrix:
        """(n, L) float32 CSR of a split's known labels."""
        return self.vocab.to_csr(getattr(self, split).labels)[0]

    def summary(self) -> dict:
        features = {"features_sha256": self.features_sha256} if self.features_sha256 else {}
        described = sum(name in self.descriptions for name in self.vocab.names)
        table = {"labels_described": described} if self.descriptions else {}
        return {"source": self.source, "sha256": self.sha256, **features, **table,
                "n_train": len(self.train), "n_valid": len(self.valid), "n_test": len(self.test),
                "n_labels": len(self.vocab)}


def _without(label_lists: list[list[str]], excluded: tuple[str, ...],
             path: Path) -> list[list[str]]:
    """Label lists minus the `data.exclude_labels`, each of which must occur in them."""
    if not excluded:
        return label_lists
    seen = {label for row in label_lists for label in row}
    unknown = [label for label in excluded if label not in seen]
    if unknown:
        raise InputError(f"data.exclude_labels: {unknown[0]!r} is not a label of the train "
                         f"split of {path}")
    drop = set(excluded)
    return [[label for label in row if label not in drop] for row in label_lists]


def _descriptions(label_table: str | None) -> dict[str, str]:
    """The config's label table ({} without one); its errors name the config key."""
    if not label_table:
        return {}
    try:
        return read_descriptions(label_table)
    except InputError as exc:
        raise InputError(f"data.label_table: {exc}") from None


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths or dataset names ("debtags") name the same file."""
    return resolve_dataset(a).resolve() == resolve_dataset(b).resolve()
