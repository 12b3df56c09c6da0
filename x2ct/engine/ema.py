"""Exponential moving average of a model's weights (often the better model to evaluate and keep).

After each optimizer step, ``update`` does, for every floating-point parameter ``p`` and its average ``a``::

    a <- decay * a + (1 - decay) * p

Buffers (BatchNorm running statistics, counters) are copied, not averaged: they describe the data, not the
optimisation path.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from x2ct.engine.distributed import unwrap_model


class ModelEMA:
    """Holds ``module``, an averaged copy of ``model`` in eval mode with gradients off.

    Args:
        model: the model being trained (DDP / ``torch.compile`` wrappers are stripped). The copy lives on the
            model's device and dtype at construction.
        decay: weight of the old average per update, in [0, 1]; 0 copies the model, 1 freezes the average.
            Typical values: 0.999-0.9999 (the average spans about ``1 / (1 - decay)`` updates).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        self.module.requires_grad_(False)
        self._source: nn.Module | None = None  # the model last averaged, and its tensors paired with ours
        self._pairs: tuple[list, list, list, list] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module, applied: torch.Tensor | None = None) -> None:
        """Move the average toward ``model``'s current weights (call after ``optimizer.step()``).

        ``applied``: a 0-dim 0/1 tensor on the model's device, 0 when the optimizer step was skipped on device
        (non-finite gradients); the average then stays put, without the host reading the flag. All parameters move
        in a few fused ``torch._foreach_*`` kernels, not one small kernel per tensor.
        """
        source = unwrap_model(model)
        if self._pairs is None or self._source is not source:
            self._pairs = self._match(source)
            self._source = source
        averaged, current, int_avg, int_cur = self._pairs
        if averaged:
            weight = 1.0 - self.decay
            if applied is None:
                torch._foreach_lerp_(averaged, current, weight)
            else:  # a <- a + w * applied * (p - a), per dtype group as foreach needs
                step = torch._foreach_sub(current, averaged)
                torch._foreach_mul_(step, applied.to(averaged[0].dtype) * weight)
                torch._foreach_add_(averaged, step)
        for avg, cur in zip(int_avg, int_cur, strict=True):
            avg.copy_(cur)
        self.updates += 1

    def _match(self, source: nn.Module) -> tuple[list, list, list, list]:
        """(averaged float tensors, their sources, copied tensors, their sources): parameters are averaged when
        floating point, buffers (BatchNorm statistics, counters) copied."""
        params, buffers = dict(source.named_parameters()), dict(source.named_buffers())
        averaged, current, copied, copied_from = [], [], [], []
        for kind, own, theirs in (("parameter", self.module.named_parameters(), params),
                                  ("buffer", self.module.named_buffers(), buffers)):
            for name, avg in own:
                if name not in theirs:
                    raise KeyError(f"EMA {kind} {name!r} not found in the model; was the model rebuilt differently?")
                if kind == "parameter" and avg.is_floating_point():
                    averaged.append(avg)
                    current.append(theirs[name])  # the Parameter itself: .data may be swapped by .to()
                else:
                    copied.append(avg)
                    copied_from.append(theirs[name])
        return averaged, current, copied, copied_from

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "updates", "module": averaged weights}``: plain values and tensors (weights_only safe)."""
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged weights and update count; the configured ``decay`` is kept (the config rules)."""
        missing = [k for k in ("updates", "module") if k not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing}; expected a ModelEMA.state_dict()")
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
