"""Call a model on a batch's views, with their gantry angles when the model takes them.

Models that accept ``angles_deg`` in ``forward`` (every registered model) get the batch's angles, so a model
trained with a random subset of views per batch (view dropout, ``data.view_dropout``) knows which views it sees.
A model whose ``forward`` takes the views alone (a user's own, or an older one) is called with the views only.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel


def _innermost(model: nn.Module) -> nn.Module:
    """The module under any stack of DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)
    wrappers, in either order. Explicit checks: ``a or b`` would call ``bool()`` on a wrapper module."""
    while True:
        if isinstance(model, DistributedDataParallel | DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def takes_angles(model: nn.Module) -> bool:
    """Whether ``model.forward`` (of the module itself, under any DDP / compile wrapper) accepts ``angles_deg``."""
    inner = _innermost(model)
    try:
        return "angles_deg" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_views(model: nn.Module, views: Tensor, angles_deg: Tensor | None, method: str = "__call__") -> Any:
    """``model(views, angles_deg=angles_deg)`` or ``model(views)``; ``method`` another entry point, e.g.
    ``"stage_outputs"`` (called on ``model`` as given)."""
    fn = getattr(model, method)
    if angles_deg is not None and takes_angles(model):
        return fn(views, angles_deg=angles_deg)
    return fn(views)
