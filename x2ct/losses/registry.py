"""Loss components by name, so a config can pick them: ``{"l1": 1.0, "ssim": 0.5}``.

A component is a ``LossComponent`` whose ``forward(pred, target)`` returns a scalar tensor (lower is better).
New components register themselves with ``@register_loss_component("name")`` in their own module, which
``x2ct/losses/__init__.py`` imports so that the registry is complete once ``x2ct.losses`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import nn


class LossComponent(nn.Module):
    """What ``ReconstructionLoss`` hands a component, declared by the class: by default ``forward(pred, target)``
    with the final volume. ``uses_deep_supervision``: the list of coarser volumes instead (``forward(outputs,
    target, regions=, scanned=)``). ``uses_views``: ``forward(pred, views, angles_deg, target)`` with the model's
    input views, the component built with ``input_spec=`` the data set's ``input_spec()`` (``"projection"``)."""

    uses_deep_supervision: ClassVar[bool] = False
    uses_views: ClassVar[bool] = False


LOSS_COMPONENTS: dict[str, type[LossComponent]] = {}


def register_loss_component(name: str) -> Callable[[type[LossComponent]], type[LossComponent]]:
    """Class decorator: make a loss component constructible by ``name``."""

    def register(cls: type[LossComponent]) -> type[LossComponent]:
        if not (isinstance(cls, type) and issubclass(cls, LossComponent)):
            raise TypeError(f"loss component {name!r}: {getattr(cls, '__qualname__', cls)} must subclass "
                            "x2ct.losses.LossComponent (which declares the inputs it takes)")
        if name in LOSS_COMPONENTS and LOSS_COMPONENTS[name] is not cls:
            raise ValueError(f"loss component {name!r} is already registered by {LOSS_COMPONENTS[name].__qualname__}")
        LOSS_COMPONENTS[name] = cls
        return cls

    return register


def build_loss_component(name: str, **kwargs) -> LossComponent:
    """A fresh component by name; ``kwargs`` go to its constructor."""
    if name not in LOSS_COMPONENTS:
        raise ValueError(f"unknown loss component {name!r}; known components: {sorted(LOSS_COMPONENTS)}")
    return LOSS_COMPONENTS[name](**kwargs)
