"""One optimizer step of supervised training, written so the host never waits for the device inside it.

``TrainStep.__call__`` takes the micro-batches of one accumulation group and does, top to bottom: forward under
autocast, loss in float32 (``ForwardAndLoss``, compiled as one with ``trainer.compile_loss``), backward
(``no_sync`` on all micro-batches but the last, each loss divided by the group's own length), unscale (fp16),
clip, the optimizer step, the schedule, the EMA.

A step whose loss or gradients are not finite is skipped, on every rank at once, without a ``.item()``: the flag is
all-reduced on the device and handed to the fused optimizer, which skips on the device (as GradScaler
does); only optimizers without a fused kernel fall back to reading the flag. The skipped step keeps its slot in
the learning-rate schedule. Losses and counters stay on the device and are read once per logging window
(``read_window``), where ``max_nonfinite_steps`` in a row stop the run.

With fp16, a gradient overflow while GradScaler settles its scale is normal: the scaler skips that step and lowers
the scale, and it is not counted as non-finite; only a non-finite loss is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from x2ct.engine.distributed import is_dist_ready
from x2ct.engine.ema import ModelEMA
from x2ct.engine.precision import Precision, autocast
from x2ct.losses import ReconstructionLoss
from x2ct.models import Reconstruction

# extra loss on the generator's volume (the adversarial hook): (volume, views, angles) -> (loss, parts)
ExtraLoss = Callable[[Tensor, Tensor, Any], tuple[Tensor, dict[str, Any]]]


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


@dataclass
class StepResult:
    """What the hooks after a step need: the last micro-batch's predicted volume and target (as the adversarial
    hooks judge them: `judged_on_scanned`), views and angles."""

    volume: Tensor
    target: Tensor
    views: Tensor
    angles: Any
    samples: int


class ForwardAndLoss(nn.Module):
    """The model's forward under autocast, then the objective in float32: one module, so that ``torch.compile`` can
    trace the two (and their backward) together (``trainer.compile_loss``; ``x2ct.engine.build``).

    ``forward(views (B, V, 1, h, w), angles, target (B, 1, D, H, W), scanned)`` returns ``(pred, loss, parts)``: the
    model's ``Reconstruction``, the total loss and its detached parts (``ReconstructionLoss.forward``).
    """

    def __init__(self, train_model: nn.Module, criterion: ReconstructionLoss, device: torch.device,
                 precision: Precision) -> None:
        super().__init__()
        self.train_model, self.criterion = train_model, criterion
        self.device, self.precision = device, precision

    def forward(self, views: Tensor, angles: Any, target: Tensor,
                scanned: Tensor | None) -> tuple[Reconstruction, Tensor, dict[str, Tensor]]:
        with autocast(self.device, self.precision):
            pred = self.train_model(views, angles_deg=angles)
        loss, parts = self.criterion(pred.float(), target, views=views, angles_deg=angles, scanned=scanned)
        return pred, loss, parts


class TrainStep:
    """The training step of ``model`` (bare, for clipping and the EMA) called as ``train_model`` (DDP / compiled).

    ``forward_and_loss``: a compiled ``ForwardAndLoss`` of ``train_model`` and ``criterion`` (``trainer.compile_loss``);
    None calls the two one after the other, uncompiled.
    """

    def __init__(self, model: nn.Module, train_model: nn.Module, criterion: ReconstructionLoss,
                 optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler | None,
                 ema: ModelEMA | None, device: torch.device, precision: Precision, grad_clip_norm: float | None,
                 world_size: int, forward_and_loss: nn.Module | None = None) -> None:
        self.model, self.train_model, self.criterion = model, train_model, criterion
        self.forward_and_loss = (forward_and_loss if forward_and_loss is not None
                                 else ForwardAndLoss(train_model, criterion, device, precision))
        self.optimizer, self.scheduler, self.scaler, self.ema = optimizer, scheduler, scaler, ema
        self.device, self.precision, self.world_size = device, precision, world_size
        self.grad_clip_norm = grad_clip_norm or math.inf
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.window = DeviceMeter(device)
        self.nonfinite_run = torch.zeros((), dtype=torch.long, device=device)  # non-finite steps in a row, now
        self.worst_run = torch.zeros((), dtype=torch.long, device=device)      # ... the most in this window
        self.grad_norm = torch.zeros((), device=device)

    def __call__(self, micro_batches: list[dict[str, Any]], extra_loss: ExtraLoss | None = None) -> StepResult:
        n = len(micro_batches)
        loss_finite = torch.ones((), dtype=torch.bool, device=self.device)
        samples = 0
        for k, batch in enumerate(micro_batches):
            views = batch["views"].to(self.device, non_blocking=True)
            target = batch["ct"].to(self.device, non_blocking=True)
            angles = batch["angles_deg"]
            scanned = batch.get("scanned")
            scanned = None if scanned is None else scanned.to(self.device, non_blocking=True)
            last = k == n - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.train_model.no_sync()
            with sync:
                pred, loss, parts = self.forward_and_loss(views, angles, target, scanned)
                volume = pred.volume
                if self.criterion.scanned_only:
                    volume, target = judged_on_scanned(volume, target, scanned)
                if extra_loss is not None:
                    extra, extra_parts = extra_loss(volume, views, angles)
                    loss, parts = loss + extra, parts | extra_parts
                loss_finite &= torch.isfinite(loss)
                (self.scaler.scale(loss / n) if self.scaler else loss / n).backward()
            # a non-finite micro-batch is counted as skipped, not averaged into the window's losses
            self.window.add({"loss": loss.detach(), **{f"loss_{name}": v for name, v in parts.items()}},
                            weight=torch.isfinite(loss.detach()))
            samples += len(target)

        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        self.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm)
        applied = _all_ranks(loss_finite & torch.isfinite(self.grad_norm))
        # fp16: an overflow (finite loss, infinite gradients) is the scaler's business, not a non-finite step
        bad = ~_all_ranks(loss_finite) if self.scaler else ~applied
        self.nonfinite_run = torch.where(bad, self.nonfinite_run + 1, 0)
        self.worst_run = torch.maximum(self.worst_run, self.nonfinite_run)
        self.window.add({"skipped_nonfinite": bad.float()}, summed=True)
        self._optimizer_step(applied)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, applied=applied)
        return StepResult(volume.detach(), target, views, angles, samples * self.world_size)

    def _optimizer_step(self, applied: Tensor) -> None:
        optimizer = self.optimizer
        if self.scaler:
            self.scaler.step(optimizer)  # skips on infinite gradients (on the device with a fused optimizer)
            self.scaler.update()
        elif getattr(optimizer, "_step_supports_amp_scaling", False):
            # fused optimizers take GradScaler's found_inf flag and skip on the device
            optimizer.grad_scale, optimizer.found_inf = None, (~applied).float()
            try:
                optimizer.step()
            finally:
                del optimizer.grad_scale, optimizer.found_inf
        elif applied.item():  # an optimizer without a fused kernel: the host must decide
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def read_window(self) -> dict[str, float]:
        """The logging window's mean losses, skipped steps, last gradient norm (and fp16 scale), and
        ``nonfinite_in_a_row`` (the longest run of skipped steps in the window, for the caller to stop on), read
        from the device; resets the window."""
        values = self.window.read()
        values["grad_norm"] = float(self.grad_norm)
        if self.scaler:
            values["grad_scale"] = float(self.scaler.get_scale())
        values["nonfinite_in_a_row"] = int(self.worst_run)
        self.worst_run = self.nonfinite_run.clone()
        return values


class DeviceMeter:
    """Weighted sums of named scalars kept on the device; ``read`` returns means (or sums) as floats in one
    transfer. A weight of 0 (a non-finite loss) leaves the value out of its mean."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.weights: dict[str, Tensor] = {}
        self.summed: set[str] = set()

    def add(self, values: dict[str, Any], summed: bool = False, weight: Tensor | None = None) -> None:
        w = torch.ones((), device=self.device) if weight is None else weight.to(self.device, torch.float32)
        for name, value in values.items():
            value = torch.as_tensor(value, device=self.device).detach().float()
            value = torch.where(w > 0, value, 0.0) * w
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.weights[name] = self.weights[name] + w if name in self.weights else w
            if summed:
                self.summed.add(name)

    def read(self) -> dict[str, float]:
        if not self.sums:
            return {}
        names = list(self.sums)
        sums = torch.stack([self.sums[n] for n in names])
        means = sums / torch.stack([self.weights[n] for n in names])
        totals = torch.where(torch.tensor([n in self.summed for n in names], device=self.device), sums, means)
        out = dict(zip(names, totals.tolist(), strict=True))  # the one host-device transfer
        self.sums, self.weights = {}, {}
        return out


def judged_on_scanned(volume: Tensor, target: Tensor, scanned: Tensor | None) -> tuple[Tensor, Tensor]:
    """The prediction and the target as the adversarial hooks judge them: both 0 (the HU window's floor) where
    nobody scanned, so a discriminator never sees, and the generator never learns from, what lies beyond the scan.
    ``volume``, ``target`` (B, 1, D, H, W); ``scanned`` the same shape, bool, or None (everything scanned). A patch
    (a cascade's training output, smaller than the target) is returned as it is."""
    if scanned is None or volume.shape != target.shape:
        return volume, target
    return (torch.where(scanned, volume, torch.zeros((), dtype=volume.dtype, device=volume.device)),
            torch.where(scanned, target, torch.zeros((), dtype=target.dtype, device=target.device)))


def _all_ranks(flag: Tensor) -> Tensor:
    """``flag`` (0-dim bool) and-ed over ranks, on the device (no host sync with NCCL)."""
    if not is_dist_ready():
        return flag
    value = flag.to(torch.float32)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
    return value > 0
