"""Multi-process training under torchrun: process group, batch shards, gathers and broadcasts.

One process per device (``torchrun --nproc_per_node N -m metricls.cli train CONFIG``). Every
process draws the same global batch and embeds its contiguous shard of it; `gather_rows`
(gradient-carrying) puts the shards back together, so each process mines and computes the
loss of the whole batch, and DistributedDataParallel averages the parameter gradients: the
update is the one a single process would make on that batch. Without ``WORLD_SIZE`` > 1 every
helper here is a no-op and training is the plain single-process loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from metricls.errors import ConfigError
from metricls.progress import set_quiet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the launch: its device, rank and the number of processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, logs and writes the tagger folder."""
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """"auto" = CUDA when present, else CPU; "cuda" without CUDA falls back to CPU with a log."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        log.warning("train.device=cuda but CUDA is not available: training on the CPU")
    return torch.device("cpu")


def launch_ranks(env: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) when absent.

    Raises:
        ConfigError: a variable that is not an integer, or a rank outside [0, WORLD_SIZE).
    """
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = env.get(name, "").strip()
        try:
            values[name] = int(text) if text else default
        except ValueError:
            raise ConfigError(f"environment variable {name}={text!r}: expected an integer "
                              "(as set by torchrun)") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"environment variables RANK={rank}, WORLD_SIZE={world}, "
                          f"LOCAL_RANK={local}: expected 0 <= RANK < WORLD_SIZE and "
                          "LOCAL_RANK >= 0")
    return rank, world, local


@contextmanager
def process_group(device_name: str = "auto") -> Iterator[DistContext]:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU) and leave it at the end.

    Re-entrant: inside an already initialised group it only describes this process. Ranks
    other than 0 are made quiet (no progress bars, warnings only).

    Args:
        device_name: ``train.device`` ("auto", "cpu" or "cuda").
    """
    device = pick_device(device_name)
    if dist.is_available() and dist.is_initialized():
        yield _describe(device)
        return
    _, world, local = launch_ranks()
    if world == 1:
        yield DistContext(device=device)
        return
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA "
                              "devices: start at most that many processes per node")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    except (ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"WORLD_SIZE={world}: cannot join the process group ({reason}); "
                          "start the processes with torchrun --nproc_per_node N") from None
    try:
        ctx = _describe(device)
        if not ctx.is_main:
            set_quiet(True)
            logging.getLogger("metricls").setLevel(logging.WARNING)
        yield ctx
        barrier(ctx)  # leave together: no process tears down links another still uses
    finally:
        dist.destroy_process_group()


def _describe(device: torch.device) -> DistContext:
    """The context of this process inside an initialised group."""
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return DistContext(device, dist.get_rank(), dist.get_world_size())


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """`module` in DistributedDataParallel when several processes train, else itself."""
    if not ctx.active:
        return module
    return nn.parallel.DistributedDataParallel(module)  # inputs stay where forward puts them


def shard(idx: np.ndarray, ctx: DistContext) -> tuple[np.ndarray, list[int]]:
    """This process's contiguous part of the global batch `idx`, and every part's size."""
    if not ctx.active:
        return idx, [len(idx)]
    parts = np.array_split(idx, ctx.world_size)
    return parts[ctx.rank], [len(p) for p in parts]


class _GatherRows(torch.autograd.Function):
    """All-gather of row blocks of unequal sizes; the backward sums the gradients over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        ctx.sizes, ctx.rank = list(sizes), dist.get_rank()
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total)  # every rank's loss depends on this rank's rows
        start = sum(ctx.sizes[: ctx.rank])
        return total[start:start + ctx.sizes[ctx.rank]], None


def gather_rows(x: torch.Tensor, sizes: Sequence[int], ctx: DistContext) -> torch.Tensor:
    """Every process's rows of `x` in rank order (gradients flow back to each process's rows).

    Args:
        x: this process's (sizes[rank], ...) rows.
        sizes: the row count of every rank (from `shard`).
        ctx: the process context; a single process gets `x` back.
    """
    if not ctx.active:
        return x
    return _GatherRows.apply(x, list(sizes))


def broadcast_float(value: float, ctx: DistContext) -> float:
    """Rank 0's `value`, on every process."""
    if not ctx.active:
        return value
    box = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.broadcast(box, src=0)
    return float(box.item())


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here."""
    if ctx.active:
        dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. to fill an on-disk cache); the others run it after."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)
