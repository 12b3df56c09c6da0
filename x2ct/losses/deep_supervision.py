"""Deep supervision: L1 between a decoder's coarse auxiliary outputs and the target averaged down to their size.

Supervising the coarse scales gives the early decoder stages a direct gradient and makes them commit to the
global shape before the fine stages add detail.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from x2ct.losses.registry import LossComponent, register_loss_component
from x2ct.ops.patches import crop_patches


@register_loss_component("deep_supervision")
class DeepSupervisionLoss(LossComponent):
    """``sum_i w_i L1(aux_i, area(target, size_i)) / sum_i w_i`` over the auxiliary outputs of a model.

    ``forward(aux_outputs, target)``: ``aux_outputs`` the list a model returns under ``"deep_supervision"``,
    ``[(B, 1, d_1, h_1, w_1), ...]`` finest first; ``target`` ``(B, 1, D, H, W)``. ``ReconstructionLoss`` passes
    the list instead of the volume because of ``uses_deep_supervision``.

    The target is brought to each size with ``F.interpolate(mode="area")``: for integer factors the mean of each
    block of voxels (average pooling), the value a perfect coarse prediction would hold; for other sizes adaptive
    average pooling over overlapping blocks, which still works.

    Args:
        scale_weights: one weight >= 0 per auxiliary output, finest first; None weighs the scales equally.
    """

    uses_deep_supervision = True

    def __init__(self, scale_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if scale_weights is not None:
            scale_weights = [float(w) for w in scale_weights]
            if not scale_weights or min(scale_weights) < 0 or sum(scale_weights) <= 0:
                raise ValueError(f"deep_supervision loss: scale_weights must be >= 0 with a positive sum, "
                                 f"got {scale_weights}")
        self.scale_weights = scale_weights

    def forward(self, aux_outputs: Sequence[Tensor], target: Tensor,
                regions: Sequence[tuple[Tensor, int] | None] | None = None, scanned: Tensor | None = None) -> Tensor:
        """``regions``: per output, None (a whole volume) or ``(origins (B, 3), n)`` for one patch per sample of an
        ``n^3`` stage (a cascade's patch-trained stage): the target is area-averaged to ``n^3`` and cropped there.
        ``scanned`` (B, 1, D, H, W) bool: a coarse voxel counts only when every fine voxel under it was scanned;
        elsewhere the output takes the coarse target's value (no error, no gradient)."""
        if isinstance(aux_outputs, Tensor) or len(aux_outputs) == 0:
            got = f"a tensor {tuple(aux_outputs.shape)}" if isinstance(aux_outputs, Tensor) else "an empty list"
            raise ValueError(f"deep_supervision loss needs the list of auxiliary outputs of a model with deep "
                             f"supervision (training mode), got {got}")
        weights = self.scale_weights or [1.0] * len(aux_outputs)
        if len(weights) != len(aux_outputs):
            raise ValueError(f"deep_supervision loss: {len(weights)} scale_weights for {len(aux_outputs)} "
                             f"auxiliary outputs")
        regions = list(regions) if regions is not None else [None] * len(aux_outputs)
        if len(regions) != len(aux_outputs):
            raise ValueError(f"deep_supervision loss: {len(regions)} regions for {len(aux_outputs)} auxiliary outputs")
        losses = []
        for i, (aux, region) in enumerate(zip(aux_outputs, regions, strict=True)):
            if aux.ndim != 5 or aux.shape[:2] != target.shape[:2] or any(
                    a > t for a, t in zip(aux.shape[2:], target.shape[2:], strict=True)):
                raise ValueError(f"deep_supervision loss: auxiliary output {i} of shape {tuple(aux.shape)} must "
                                 f"match target {tuple(target.shape)} in batch and channels and be no larger")
            with torch.no_grad():
                coarse = _coarse(target.to(aux.dtype), aux.shape[2:], region)
                whole = None if scanned is None else _coarse(scanned.to(aux.dtype), aux.shape[2:], region) >= 1 - 1e-6
            if whole is not None:
                aux = torch.where(whole, aux, coarse)
            losses.append((aux - coarse).abs().mean())
        return sum(w * loss for w, loss in zip(weights, losses, strict=True)) / sum(weights)


def _coarse(volume: Tensor, size: Sequence[int], region: tuple[Tensor, int] | None) -> Tensor:
    """``volume`` area-averaged to ``size``, or to ``n^3`` and cropped at the patch origins of ``region``."""
    if region is None:
        return F.interpolate(volume, size=tuple(size), mode="area")
    origins, n = region
    return crop_patches(F.interpolate(volume, size=(int(n),) * 3, mode="area"), origins, tuple(size))
