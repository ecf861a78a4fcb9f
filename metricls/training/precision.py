"""Training precision (``train.precision``): fp32, or bf16 / fp16 autocast on CUDA.

fp16 trains with a gradient scaler; bf16 needs none. On the CPU training runs in fp32: a
requested bf16 or fp16 falls back with a warning. "auto" is bf16 on CUDA (fp32 when the older
``train.amp`` is false or the GPU lacks bf16) and fp32 on the CPU, silently.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

import torch

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, amp: bool, device: torch.device) -> str:
    """The precision training runs in on `device`: "fp32", "bf16" or "fp16".

    Args:
        name: ``train.precision`` ("auto", "fp32", "bf16" or "fp16").
        amp: ``train.amp``; false makes "auto" mean fp32.
        device: the training device.
    """
    if device.type != "cuda":
        if name in DTYPES:
            log.warning("train.precision=%s needs CUDA: training in fp32 on the %s", name,
                        device.type)
        return "fp32"
    bf16 = torch.cuda.is_bf16_supported()
    if name == "auto":
        return "bf16" if amp and bf16 else "fp32"
    if name == "bf16" and not bf16:
        log.warning("train.precision=bf16 but this GPU has no bf16: training in fp32 "
                    "(train.precision=fp16 is the other mixed precision)")
        return "fp32"
    return name


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of a resolved precision (nothing for fp32)."""
    if precision not in DTYPES:
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (a pass-through otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")
