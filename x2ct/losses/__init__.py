"""Training objectives. ``ReconstructionLoss`` combines components registered by name in ``registry``.

Importing this package registers every built-in component: add a new component module to the imports below.
"""

from x2ct.losses import deep_supervision, edge, frequency, l1, perceptual, projection, ssim  # noqa: F401  (register components)
from x2ct.losses.reconstruction import ReconstructionLoss
from x2ct.losses.registry import LOSS_COMPONENTS, LossComponent, build_loss_component, register_loss_component

__all__ = ["LOSS_COMPONENTS", "LossComponent", "ReconstructionLoss", "build_loss_component",
           "register_loss_component"]
