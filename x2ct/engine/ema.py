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

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights (call after ``optimizer.step()``)."""
        source = unwrap_model(model)
        params = dict(source.named_parameters())
        buffers = dict(source.named_buffers())
        for name, avg in self.module.named_parameters():
            if name not in params:
                raise KeyError(f"EMA parameter {name!r} not found in the model; was the model rebuilt differently?")
            if avg.is_floating_point():
                avg.lerp_(params[name].detach(), 1.0 - self.decay)
            else:
                avg.copy_(params[name])
        for name, avg in self.module.named_buffers():
            if name not in buffers:
                raise KeyError(f"EMA buffer {name!r} not found in the model; was the model rebuilt differently?")
            avg.copy_(buffers[name])
        self.updates += 1

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
