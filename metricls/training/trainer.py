"""train_embedder: fit the embedding network and the label vectors with PML losses and miners."""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity
from torch import nn

from metricls.config import Config, dump_config
from metricls.data.dataset import Dataset
from metricls.data.descriptions import label_text
from metricls.data.sampler import LabelBatchSampler
from metricls.encoders.model import EmbeddingModel, build_model
from metricls.errors import ConfigError
from metricls.folder import write_trained
from metricls.metrics import recall_at_k
from metricls.miners import LabelMiner, SharedLabelMiner
from metricls.outputs import check_output
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
    label_bias: np.ndarray | None = None  # (L,) float32 with train.label_bias, else None
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


LABEL_TEXTS_PER_STEP = 256  # label texts in each step's label-text loss (a seeded draw)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class _Trainable(nn.Module):
    """The model, the label vectors and their biases as one module, so that DDP averages every
    gradient.

    With `label_bias`, forward returns the label vectors extended by a bias column, and
    `extend` adds a constant-1 column to item embeddings: their dot product is then
    cos(item, label) + bias, which the loss compares with `DotProductSimilarity`.
    """

    def __init__(self, model: EmbeddingModel, label_vectors: nn.Parameter,
                 label_bias: nn.Parameter | None = None) -> None:
        super().__init__()
        self.model = model
        self.label_vectors = label_vectors
        self.label_bias = label_bias

    def forward(self, prepared: list, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = F.normalize(self.label_vectors, dim=1)
        if self.label_bias is not None:
            vectors = torch.cat([vectors, self.label_bias[:, None]], dim=1)
        return self.model(prepared, idx), vectors

    def extend(self, emb: torch.Tensor) -> torch.Tensor:
        """Item embeddings as the label side expects them: a 1 appended with label biases."""
        if self.label_bias is None:
            return emb
        return torch.cat([emb, emb.new_ones(len(emb), 1)], dim=1)


def _optimizers(net: _Trainable, cfg: Config) -> list:
    """AdamW for the dense parameters (label vectors and biases included), SparseAdam for the
    lexical bag."""
    sparse = [p for n, p in net.named_parameters() if n.endswith("bag.weight")]
    dense = [p for n, p in net.named_parameters() if not n.endswith("bag.weight")]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(
        dense, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.train.lexical_lr))
    return opts


def _schedulers(optimizers: list, cfg: Config, steps: int) -> list:
    """Per-step learning-rate schedules: none for "constant"; for "cosine", a linear warm-up
    over `train.warmup` of all steps, then cosine decay to 0 at the last step of `epochs`."""
    if cfg.train.schedule == "constant":
        return []
    warmup = int(cfg.train.warmup * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]


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
    label_texts = None
    if cfg.miner.label_text_weight > 0 and model.needs == {"texts"}:
        texts = [label_text(n, data.descriptions.get(n)) for n in data.vocab.names]
        label_texts = model.prepare(texts, None, cache=True)
        text_rng = np.random.default_rng(cfg.train.seed)
    label_vectors = nn.Parameter(torch.randn(len(data.vocab), model.out_dim, device=device) * 0.05)
    label_bias = (nn.Parameter(torch.zeros(len(data.vocab), device=device))
                  if cfg.train.label_bias else None)
    trainable = _Trainable(model, label_vectors, label_bias)
    net = wrap(trainable, ctx)  # DDP when several processes
    # embeddings are unit vectors, so a dot product is their cosine; with label biases the
    # extended vectors' dot product is cos + bias (see _Trainable)
    similarity = DotProductSimilarity() if label_bias is not None else CosineSimilarity()
    loss_fn, triplets = build_loss(cfg.loss, similarity)
    m = cfg.miner
    label_miner = LabelMiner(hard_negatives=m.label_hard_negatives, triplets=triplets,
                             distance=similarity)
    item_miner = SharedLabelMiner(min_jaccard=m.min_jaccard, hard_negatives=m.item_hard_negatives,
                                  triplets=triplets)
    sampler = LabelBatchSampler(y_train, cfg.train.batch_size, cfg.train.labels_per_batch,
                                cfg.train.label_power, cfg.train.seed)
    optimizers = _optimizers(trainable, cfg)
    schedulers = _schedulers(optimizers, cfg, cfg.train.epochs * len(sampler))
    precision = resolve_precision(cfg.train.precision, cfg.train.amp, device)
    scaler = grad_scaler(precision)
    best, best_state, history, bad_epochs, best_epoch = -1.0, None, [], 0, 0
    epochs = progress(range(cfg.train.epochs), desc="train", leave=True)
    for epoch in epochs:
        sampler.set_epoch(epoch)
        net.train()
        losses = []
        batches = progress(sampler, desc=f"epoch {epoch + 1}", total=len(sampler))
        for step, idx in enumerate(batches, start=1):
            yb = torch.from_numpy(y_train[idx].toarray()).to(device)  # (B, L)
            local, sizes = shard(idx, ctx)
            with autocast(precision, device):
                emb, vectors = net(prepared, local)
                emb = gather_rows(emb, sizes, ctx)  # every shard, in the order of idx
                query = trainable.extend(emb)
                loss = m.label_weight * loss_fn(
                    query, indices_tuple=label_miner(query, yb, ref_emb=vectors), ref_emb=vectors)
                if m.item_weight > 0:
                    loss = loss + m.item_weight * loss_fn(
                        emb, indices_tuple=item_miner(emb, yb))
                if label_texts is not None:  # each label's text is an item carrying it alone
                    picked = np.sort(text_rng.permutation(len(vectors))[:LABEL_TEXTS_PER_STEP])
                    own = trainable.extend(trainable.model(label_texts, picked))
                    carried = torch.zeros(len(picked), len(vectors), device=device)
                    carried[torch.arange(len(picked)), torch.from_numpy(picked)] = 1.0
                    loss = loss + m.label_text_weight * loss_fn(
                        own, indices_tuple=label_miner(own, carried, ref_emb=vectors),
                        ref_emb=vectors)
            value = float(loss.detach())
            if not math.isfinite(value):  # stop before the step writes NaN into every weight
                raise _diverged(cfg, precision, f"epoch {epoch + 1}, step {step}: loss is {value}")
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
            for sched in schedulers:
                sched.step()
            losses.append(value)
            batches.set_postfix(loss=f"{losses[-1]:.4f}")
        if not _all_finite(trainable):  # a finite loss can still step into inf/NaN weights
            raise _diverged(cfg, precision, f"epoch {epoch + 1}: weights are not finite")
        score = broadcast_float(  # rank 0 validates; every process takes the same decision
            _valid_recall(model, prepared_valid, len(data.valid), label_vectors, y_valid,
                          label_bias)
            if ctx.is_main else 0.0, ctx)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "valid_R@10": score})
        epochs.set_postfix(loss=f"{history[-1]['loss']:.4f}", valid_R10=f"{score:.4f}")
        log.info("epoch %d: loss %.4f valid R@10 %.4f", epoch + 1, history[-1]["loss"], score)
        if score > best:
            best, bad_epochs = score, 0
            best_state = (copy.deepcopy(model.state_dict()), label_vectors.detach().clone(),
                          None if label_bias is None else label_bias.detach().clone())
            best_epoch = epoch + 1
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.train.patience:
                log.info("early stop after epoch %d (best %d)", epoch + 1, best_epoch)
                break
    model.load_state_dict(best_state[0])
    model.eval()
    vectors = F.normalize(best_state[1], dim=1).cpu().numpy().astype(np.float32)
    bias = None if best_state[2] is None else best_state[2].cpu().numpy().astype(np.float32)
    return TrainResult(model.cpu(), vectors, bias, history, best_epoch,
                       time.perf_counter() - start)


def _all_finite(module: nn.Module) -> bool:
    """Whether every parameter of `module` is finite (no NaN or inf)."""
    return all(bool(torch.isfinite(p.detach()).all()) for p in module.parameters())


def _diverged(cfg: Config, precision: str, where: str) -> ConfigError:
    """The one-line error of a diverged run, naming the settings that most likely caused it."""
    loss, lr = cfg.loss, f"train.lr ({cfg.train.lr:g})"
    if loss.name == "multi_similarity":
        hint = f"lower loss.alpha ({loss.alpha:g}), loss.beta ({loss.beta:g}) or {lr}"
    elif loss.name == "decoupled_softmax":
        hint = f"raise loss.temperature ({loss.temperature:g}) or lower {lr}"
    else:
        hint = f"lower {lr}"
    if precision == "fp16":
        hint += ", or set train.precision=fp32"
    return ConfigError(f"training diverged at {where}; {hint}; nothing was saved")


def _valid_recall(model: EmbeddingModel, prepared: list, n: int, label_vectors: torch.Tensor,
                  y_valid: sp.csr_matrix, label_bias: torch.Tensor | None = None) -> float:
    """Validation R@10 of prototype-only scores (the label vectors and biases as they are)."""
    if n == 0:
        return 0.0
    emb = model.embed_prepared(prepared, n)
    vectors = F.normalize(label_vectors.detach(), dim=1).cpu().numpy()
    bias = 0.0 if label_bias is None else label_bias.detach().cpu().numpy()
    k = min(10, len(vectors))
    rows = max(1, SCORE_BLOCK // len(vectors))  # never a whole (n, L) score matrix
    ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, rows):
        scores = emb[start:start + rows] @ vectors.T + bias  # (rows, L)
        ids[start:start + rows] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return recall_at_k(ids, y_valid, k)


def train_embedder(cfg: Config, out: str | Path | None = None, *,
                   overwrite: bool = False, data: Dataset | None = None) -> Path:
    """Train the embedding network and label vectors; write them into a tagger folder.

    Args:
        cfg: the resolved config (see `load_config`).
        out: the tagger folder (default ``index/<cfg.name>``), written atomically.
        overwrite: replace an existing tagger folder there (any other folder is never
            replaced, see `outputs.check_output`); checked before training.
        data: `Dataset.load(cfg.data)` when the caller has already loaded it (read once).

    Returns:
        The folder, ready for `build_index`.

    Example:
        >>> train_embedder(load_config("configs/debtags.yaml"), out="index/debtags")
    """
    folder = Path(out) if out is not None else Path("index") / cfg.name
    check_output(folder, "tagger", overwrite=overwrite, inputs=data_files(cfg))
    with process_group(cfg.train.device) as ctx:  # one process unless started by torchrun
        log.info("resolved config:\n%s", dump_config(cfg))
        data = data if data is not None else Dataset.load(cfg.data)
        result = fit(cfg, data)
        if ctx.is_main:  # rank 0 writes the folder; the other processes wait for it
            _write_tagger(folder, cfg, data, result, overwrite)
        barrier(ctx)
    return folder


def data_files(cfg: Config) -> tuple[str, ...]:
    """The files training reads (a packaged dataset name is no file)."""
    return tuple(path for path in (cfg.data.path, cfg.data.features_path)
                 if path and os.path.exists(path))


def _write_tagger(folder: Path, cfg: Config, data: Dataset, result: TrainResult,
                  overwrite: bool) -> None:
    """Write the trained embedder and label vectors into `folder`, atomically, after checking
    again under its lock that it may be replaced (something may have landed there meanwhile)."""
    best = result.history[result.best_epoch - 1] if result.history else {}
    write_trained(folder, config=cfg, vocab=data.vocab, model=result.model,
                  label_vectors=result.label_vectors, label_bias=result.label_bias,
                  training={"history": result.history, "best_epoch": result.best_epoch,
                            "seconds": round(result.seconds, 1)},
                  data=data.summary(), metrics={"train": best},
                  check=lambda: check_output(folder, "tagger", overwrite=overwrite,
                                             inputs=data_files(cfg)))
