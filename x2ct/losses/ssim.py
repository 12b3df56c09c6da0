"""Structural dissimilarity ``1 - SSIM``: the validation metric ``ssim3d`` made a training objective.

Training on the quantity that validation reports keeps the two consistent; the formula lives in
``x2ct.ops.metrics`` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from x2ct.losses.registry import LossComponent, register_loss_component
from x2ct.ops.metrics import ssim3d


@register_loss_component("ssim")
class SSIMLoss(LossComponent):
    """``1 - mean_b ssim3d(pred_b, target_b)`` for ``(B, 1, D, H, W)`` volumes; 0 for identical volumes.

    Args:
        data_range: width of the value range (1 for volumes in [0, 1]); sets SSIM's stabilising constants.
        sigma: standard deviation of the Gaussian window in voxels (1.5: an 11-voxel window, as the metric).

    Computed in the inputs' dtype (float32 in training; half precision is promoted to float32, where the
    variances would lose their digits), differentiably. Every axis must be at least the window's length,
    else ``ssim3d`` raises a ValueError naming the shape and the window.
    """

    def __init__(self, data_range: float = 1.0, sigma: float = 1.5) -> None:
        super().__init__()
        self.data_range = float(data_range)
        self.sigma = float(sigma)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        dtype = torch.promote_types(pred.dtype, torch.float32)
        return 1.0 - ssim3d(pred, target, data_range=self.data_range, sigma=self.sigma, dtype=dtype).mean()
