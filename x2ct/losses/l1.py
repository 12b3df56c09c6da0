"""Voxel-wise mean absolute error."""

from __future__ import annotations

from torch import Tensor

from x2ct.losses.registry import LossComponent, register_loss_component


@register_loss_component("l1")
class L1Loss(LossComponent):
    """``mean(|pred - target|)`` over all elements; ``pred`` and ``target`` of the same shape, e.g. ``(B, 1, D, H, W)``.

    Robust to outliers and sharper than L2 for intensity regression, the usual voxel term of CT reconstruction.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"l1 loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        return (pred - target).abs().mean()
