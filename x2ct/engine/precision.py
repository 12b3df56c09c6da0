"""Where and in which precision the training step runs: the device, the autocast dtype and the GradScaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from x2ct.engine.distributed import DistInfo


@dataclass(frozen=True)
class Precision:
    """How forward passes run: autocast dtype (None = full precision) and whether fp16 needs a GradScaler."""

    name: str
    autocast_dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        return self.autocast_dtype == torch.float16


DEVICES = ("auto", "cuda", "cpu")


def resolve_device(accelerator: str, dist: DistInfo, key: str = "trainer.accelerator") -> torch.device:
    """``cuda`` (this rank's GPU, ``LOCAL_RANK``), ``cpu``, or ``auto``: CUDA when available. ``key`` is the setting
    the choice came from (a config key or a command-line option), named in the error."""
    if accelerator not in DEVICES:
        raise ValueError(f"{key}={accelerator!r}: expected one of {list(DEVICES)}")
    if accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"{key}=cuda but CUDA is not available; use {key}=cpu")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``auto``: bf16 autocast on CUDA, fp32 on the CPU. fp16 also runs on the CPU (CPU autocast has float16 and
    GradScaler a CPU backend), slowly: it is there so the scaler's path can be tested without a GPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"trainer.precision={precision!r}; expected one of auto, {', '.join(dtypes)}")
    return Precision(precision, dtypes[precision])


def make_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if precision.needs_scaler else None


def autocast(device: torch.device, precision: Precision):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)
