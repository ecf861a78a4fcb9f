"""train_embedder: fit the embedding network and the label vectors with PML losses and miners."""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from metricls.artifacts import save_tensors, staged_dir, write_json, write_manifest
from metricls.config import Config, dump_config, to_dict
from metricls.data.dataset import Dataset
from metricls.data.sampler import LabelBatchSampler
from metricls.encoders.model import EmbeddingModel, build_model
from metricls.metrics import recall_at_k
from metricls.miners import LabelMiner, SharedLabelMiner
from metricls.progress import progress
from metricls.training.distributed import (
    DistContext,
    barrier,
    broadcast_float,
    gather_rows,
    main_first,
    process_group,
    shard,
    wrap,
)
from metricls.training.losses import build_loss
from metricls.training.precision import autocast, grad_scaler, resolve_precision

log = logging.getLogger(__name__)
SCORE_BLOCK = 1 << 22  # validation scores computed at most this many (item, label) pairs at a time


@dataclass
class TrainResult:
    """What training produced: the model, one learned vector per label, and the history."""

    model: EmbeddingModel
    label_vectors: np.ndarray  # (L, d) float32, L2-normalised
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class _Trainable(nn.Module):
    """The model and the label vectors as one module, so that DDP averages both gradients."""

    def __init__(self, model: EmbeddingModel, label_vectors: nn.Parameter) -> None:
        super().__init__()
        self.model = model
        self.label_vectors = label_vectors

    def forward(self, prepared: list, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(prepared, idx), F.normalize(self.label_vectors, dim=1)


def _optimizers(model: nn.Module, label_vectors: nn.Parameter, cfg: Config) -> list:
    sparse = [p for n, p in model.named_parameters() if n.endswith("bag.weight")]
    dense = [p for n, p in model.named_parameters() if not n.endswith("bag.weight")]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(
        [*dense, label_vectors], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.train.lexical_lr))
    return opts


def fit(cfg: Config, data: Dataset) -> TrainResult:
    """Train on `data.train`, early-stopping on valid R@10 of the label vectors.

    Args:
        cfg: the resolved config.
        data: the loaded dataset.

    Returns:
        The best model (by validation R@10) and its label vectors.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this: each embeds its shard of the
    same global batch, the shards are gathered so that every process mines and scores the
    whole batch, DDP averages the gradients, and rank 0 validates and broadcasts the score, so
    all processes stop together and return the same best model.
    """
    with process_group(cfg.train.device) as ctx:
        return _fit(cfg, data, ctx)


def _fit(cfg: Config, data: Dataset, ctx: DistContext) -> TrainResult:
    """`fit` in one process of `ctx` (the only one when ``ctx.world_size`` is 1)."""
    start = time.perf_counter()
    seed_everything(cfg.train.seed)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = ctx.device
    feature_dim = data.train.features.shape[1] if data.train.features is not None else None
    model = build_model(cfg.encoder, feature_dim=feature_dim).to(device)
    y_train, y_valid = data.labels("train"), data.labels("valid")
    with main_first(ctx):  # rank 0 fills the frozen-embedding cache, the others read it
        prepared = model.prepare(data.train.texts, data.train.features, cache=True)
        prepared_valid = (model.prepare(data.valid.texts, data.valid.features, cache=True)
                          if ctx.is_main else None)
    label_vectors = nn.Parameter(torch.randn(len(data.vocab), model.out_dim, device=device) * 0.05)
    net = wrap(_Trainable(model, label_vectors), ctx)  # DDP when several processes
    loss_fn, triplets = build_loss(cfg.loss)
    m = cfg.miner
    label_miner = LabelMiner(hard_negatives=m.label_hard_negatives, triplets=triplets)
    item_miner = SharedLabelMiner(min_jaccard=m.min_jaccard, hard_negatives=m.item_hard_negatives,
                                  triplets=triplets)
    sampler = LabelBatchSampler(y_train, cfg.train.batch_size, cfg.train.labels_per_batch,
                                cfg.train.label_power, cfg.train.seed)
    optimizers = _optimizers(model, label_vectors, cfg)
    precision = resolve_precision(cfg.train.precision, cfg.train.amp, device)
    scaler = grad_scaler(precision)
    best, best_state, history, bad_epochs, best_epoch = -1.0, None, [], 0, 0
    epochs = progress(range(cfg.train.epochs), desc="train", leave=True)
    for epoch in epochs:
        sampler.set_epoch(epoch)
        net.train()
        losses = []
        batches = progress(sampler, desc=f"epoch {epoch + 1}", total=len(sampler))
        for idx in batches:
            yb = torch.from_numpy(y_train[idx].toarray()).to(device)  # (B, L)
            local, sizes = shard(idx, ctx)
            with autocast(precision, device):
                emb, vectors = net(prepared, local)
                emb = gather_rows(emb, sizes, ctx)  # every shard, in the order of idx
                loss = m.label_weight * loss_fn(
                    emb, indices_tuple=label_miner(emb, yb, ref_emb=vectors), ref_emb=vectors)
                if m.item_weight > 0:
                    loss = loss + m.item_weight * loss_fn(
                        emb, indices_tuple=item_miner(emb, yb))
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            batches.set_postfix(loss=f"{losses[-1]:.4f}")
        score = broadcast_float(  # rank 0 validates; every process takes the same decision
            _valid_recall(model, prepared_valid, len(data.valid), label_vectors, y_valid)
            if ctx.is_main else 0.0, ctx)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "valid_R@10": score})
        epochs.set_postfix(loss=f"{history[-1]['loss']:.4f}", valid_R10=f"{score:.4f}")
        log.info("epoch %d: loss %.4f valid R@10 %.4f", epoch + 1, history[-1]["loss"], score)
        if score > best:
            best, bad_epochs = score, 0
            best_state = (copy.deepcopy(model.state_dict()), label_vectors.detach().clone())
            best_epoch = epoch + 1
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.train.patience:
                log.info("early stop after epoch %d (best %d)", epoch + 1, best_epoch)
                break
    model.load_state_dict(best_state[0])
    model.eval()
    vectors = F.normalize(best_state[1], dim=1).cpu().numpy().astype(np.float32)
    return TrainResult(model.cpu(), vectors, history, best_epoch, time.perf_counter() - start)


def _valid_recall(model: EmbeddingModel, prepared: list, n: int, label_vectors: torch.Tensor,
                  y_valid: sp.csr_matrix) -> float:
    """Validation R@10 of prototype-only scores (the label vectors as they are now)."""
    if n == 0:
        return 0.0
    emb = model.embed_prepared(prepared, n)
    vectors = F.normalize(label_vectors.detach(), dim=1).cpu().numpy()
    k = min(10, len(vectors))
    rows = max(1, SCORE_BLOCK // len(vectors))  # never a whole (n, L) score matrix
    ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, rows):
        scores = emb[start:start + rows] @ vectors.T  # (rows, L)
        ids[start:start + rows] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return recall_at_k(ids, y_valid, k)


def train_embedder(cfg: Config, out: str | Path | None = None) -> Path:
    """Train the embedding network and label vectors; write them into a tagger folder.

    Args:
        cfg: the resolved config (see `load_config`).
        out: the tagger folder (default ``index/<cfg.name>``); replaced atomically.

    Returns:
        The folder, ready for `build_index`.

    Example:
        >>> train_embedder(load_config("configs/debtags.yaml"), out="index/debtags")
    """
    folder = Path(out) if out is not None else Path("index") / cfg.name
    with process_group(cfg.train.device) as ctx:  # one process unless started by torchrun
        log.info("resolved config:\n%s", dump_config(cfg))
        data = Dataset.load(cfg.data)
        result = fit(cfg, data)
        if ctx.is_main:  # rank 0 writes the folder; the other processes wait for it
            _write_tagger(folder, cfg, data, result)
        barrier(ctx)
    return folder


def _write_tagger(folder: Path, cfg: Config, data: Dataset, result: TrainResult) -> None:
    """Write the trained embedder and label vectors into `folder`, atomically."""
    with staged_dir(folder) as tmp:
        write_json(tmp / "config.json", to_dict(cfg))
        write_json(tmp / "labels.json", data.vocab.to_dict())
        result.model.save(tmp / "encoder")
        save_tensors(tmp / "label_vectors.safetensors", {"label_vectors": result.label_vectors},
                     {"format": "metricls-label-vectors/1"})
        write_json(tmp / "training.json", {"history": result.history,
                                           "best_epoch": result.best_epoch,
                                           "seconds": round(result.seconds, 1)})
        best = result.history[result.best_epoch - 1] if result.history else {}
        write_manifest(tmp, data=data.summary(), metrics={"train": best})
