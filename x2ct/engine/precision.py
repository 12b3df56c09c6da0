"""Where and in which precision the training step runs: the device, the autocast dtype and the GradScaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

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


def resolve_device(accelerator: str, dist: DistInfo) -> torch.device:
    """``cuda`` (this rank's GPU, ``LOCAL_RANK``), ``cpu``, or ``auto``: CUDA when available."""
    if accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.accelerator=cuda but CUDA is not available; use trainer.accelerator=cpu")
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


def in_float32(pred: Any) -> Any:
    """A model's output (a volume, or a dict with the volume and its deep-supervision list) cast to float32, so
    losses are computed in full precision after an autocast forward."""
    def cast(value):
        if isinstance(value, list):
            return [cast(v) for v in value]
        return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    return {key: cast(value) for key, value in pred.items()} if isinstance(pred, dict) else pred.float()
