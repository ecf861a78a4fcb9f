"""Dataset: a config's items split into train/valid/test, with the label vocabulary of train."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import scipy.sparse as sp

from metricls.artifacts import sha256_file
from metricls.config import DataConfig
from metricls.data.items import Items, read_items, resolve_dataset
from metricls.data.labels import LabelVocab
from metricls.errors import InputError


def read_config_items(cfg: DataConfig, path: str | Path | None = None, *,
                      require_labels: bool = True) -> Items:
    """Read `path` (default `cfg.path`) with the column mapping of `cfg`."""
    return read_items(resolve_dataset(str(path if path is not None else cfg.path)),
                      id_column=cfg.id_column, text_columns=cfg.text_columns,
                      feature_columns=cfg.feature_columns, vector_column=cfg.vector_column,
                      label_column=cfg.label_column, label_delimiter=cfg.label_delimiter,
                      split_column=cfg.split_column, require_labels=require_labels)


@dataclass(frozen=True)
class Dataset:
    """The split items, the training vocabulary and multi-hot label matrices."""

    train: Items
    valid: Items
    test: Items
    vocab: LabelVocab
    source: str
    sha256: str

    @classmethod
    def load(cls, cfg: DataConfig) -> Dataset:
        path = resolve_dataset(cfg.path)
        items = read_config_items(cfg, path)
        train = items.subset("train")
        if len(train) == 0:
            raise InputError(f"{path}: no item falls in the train split")
        vocab = LabelVocab.fit(train.labels, min_count=cfg.min_count)
        return cls(train=train, valid=items.subset("valid"), test=items.subset("test"),
                   vocab=vocab, source=str(cfg.path), sha256=sha256_file(path))

    def labels(self, split: str) -> sp.csr_matrix:
        """(n, L) float32 CSR of a split's known labels."""
        return self.vocab.to_csr(getattr(self, split).labels)[0]

    def summary(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "n_train": len(self.train),
                "n_valid": len(self.valid), "n_test": len(self.test), "n_labels": len(self.vocab)}
