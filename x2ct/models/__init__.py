"""Networks that map X-ray views ``(B, V, 1, H, W)`` to CT volumes ``(B, 1, D, H, W)``.

One file per variant; shared pieces live in ``x2ct.models.blocks``; ``interface.py`` is what every model returns
(a ``Reconstruction``) and declares (a ``ReconstructionModel``).
"""

from torch import nn

from x2ct.models.baseline_unet import BaselineUNet
from x2ct.models.hybrid_vit import HybridViT
from x2ct.models.interface import Reconstruction, ReconstructionModel, check_model
from x2ct.models.multires import MultiResCascade
from x2ct.models.registry import MODELS, model_from_name


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` unless ``trainable_only=False``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "BaselineUNet", "HybridViT", "MultiResCascade", "Reconstruction", "ReconstructionModel",
           "check_model", "count_parameters", "model_from_name"]
