"""Training objectives. ``ReconstructionLoss`` combines components registered by name in ``registry``.

Importing this package registers every built-in component: add a new component module to the imports below.
"""

from x2ct.losses import l1  # noqa: F401  (registers "l1")
from x2ct.losses.reconstruction import ReconstructionLoss
from x2ct.losses.registry import LOSS_COMPONENTS, build_loss_component, register_loss_component

__all__ = ["LOSS_COMPONENTS", "ReconstructionLoss", "build_loss_component", "register_loss_component"]
