"""metricls: multi-label tagging with a learned metric space and an ANN index of prototypes."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Tagger", "__version__", "build_index", "evaluate", "load_config", "train_embedder"]


def __getattr__(name: str):
    if name == "Tagger":
        from metricls.tagger import Tagger

        return Tagger
    if name == "load_config":
        from metricls.config import load_config

        return load_config
    if name == "train_embedder":
        from metricls.training.trainer import train_embedder

        return train_embedder
    if name == "build_index":
        from metricls.build import build_index

        return build_index
    if name == "evaluate":
        from metricls.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'metricls' has no attribute {name!r}")
