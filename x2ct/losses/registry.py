"""Loss components by name, so a config can pick them: ``{"l1": 1.0, "ssim": 0.5}``.

A component is an ``nn.Module`` whose ``forward(pred, target)`` returns a scalar tensor (lower is better).
New components register themselves with ``@register_loss_component("name")`` in their own module, which
``x2ct/losses/__init__.py`` imports so that the registry is complete once ``x2ct.losses`` is imported.

Two class attributes ask ``ReconstructionLoss`` for other inputs: ``uses_deep_supervision = True`` (the list of
coarser volumes instead of the final one) and ``uses_views = True`` (``forward(pred, views, angles_deg,
target)`` with the model's input views; built with ``input_spec=`` the data set's ``input_spec()``), e.g.
``"projection"`` (``x2ct/losses/projection.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

LOSS_COMPONENTS: dict[str, type[nn.Module]] = {}


def register_loss_component(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a loss component constructible by ``name``."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSS_COMPONENTS and LOSS_COMPONENTS[name] is not cls:
            raise ValueError(f"loss component {name!r} is already registered by {LOSS_COMPONENTS[name].__qualname__}")
        LOSS_COMPONENTS[name] = cls
        return cls

    return register


def build_loss_component(name: str, **kwargs) -> nn.Module:
    """A fresh component by name; ``kwargs`` go to its constructor."""
    if name not in LOSS_COMPONENTS:
        raise ValueError(f"unknown loss component {name!r}; known components: {sorted(LOSS_COMPONENTS)}")
    return LOSS_COMPONENTS[name](**kwargs)
