"""Edge loss: L1 between 3D Sobel gradient magnitudes, to keep organ and bone boundaries sharp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from x2ct.losses.registry import LossComponent, register_loss_component

SOBEL_DERIVATIVE = (-0.5, 0.0, 0.5)  # central difference [-1, 0, 1] / 2
SOBEL_SMOOTHING = (0.25, 0.5, 0.25)  # [1, 2, 1] / 4


def sobel_kernels(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """``(3, 1, 3, 3, 3)`` kernels for d/dD, d/dH, d/dW: derivative along one axis, smoothing along the other two.

    Normalised (derivative halved, smoothing summing to 1) so that a linear ramp of slope ``s`` per voxel gives a
    response of exactly ``s`` (the unnormalised [-1, 0, 1] x [1, 2, 1] x [1, 2, 1] kernel gives ``32 s``).
    """
    derivative = torch.tensor(SOBEL_DERIVATIVE, dtype=dtype, device=device)
    smoothing = torch.tensor(SOBEL_SMOOTHING, dtype=dtype, device=device)
    kernels = [torch.einsum("i,j,k->ijk", *[derivative if axis == a else smoothing for axis in range(3)])
               for a in range(3)]
    return torch.stack(kernels).unsqueeze(1)


def sobel_magnitude(volume: Tensor, eps: float, kernels: Tensor | None = None) -> Tensor:
    """``(B, 1, D, H, W) -> (B, 1, D-2, H-2, W-2)``: ``sqrt(gD^2 + gH^2 + gW^2 + eps)`` on the valid region.

    No padding: the border voxels, whose neighbourhood would be invented, are left out. ``kernels``: the
    ``sobel_kernels()`` built once (a caller's buffer), else built here.
    """
    kernels = sobel_kernels(volume.dtype, volume.device) if kernels is None else kernels.to(volume)
    gradients = F.conv3d(volume, kernels)  # (B, 3, D-2, H-2, W-2)
    return (gradients.square().sum(dim=1, keepdim=True) + eps).sqrt()


@register_loss_component("edge")
class SobelEdgeLoss(LossComponent):
    """``mean(|sobel_magnitude(pred) - sobel_magnitude(target)|)`` for ``(B, 1, D, H, W)`` volumes.

    Args:
        eps: added under the square root so that the gradient stays finite where the volume is flat (the
            magnitude of a flat region is ``sqrt(eps)``, the same in both volumes). 1e-8 floors magnitudes at
            1e-4 per voxel, well below one HU step of a [0, 1] CT window.

    Magnitudes are in intensity units per voxel (see ``sobel_kernels``). Computed in at least float32. A perfectly
    flat prediction gets no gradient from this term (the magnitude is stationary there); the voxel terms move it.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        if not float(eps) > 0:
            raise ValueError(f"edge loss: eps must be positive (it keeps sqrt differentiable at 0), got {eps}")
        self.eps = float(eps)
        self.register_buffer("kernels", sobel_kernels(), persistent=False)  # built once, moves with .to(device)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 5 or pred.shape[1] != 1 or min(pred.shape[2:]) < 3:
            raise ValueError(f"edge loss: expected pred and target of one shape (B, 1, D, H, W) with every axis "
                             f">= 3 voxels, got {tuple(pred.shape)} and {tuple(target.shape)}")
        dtype = torch.promote_types(pred.dtype, torch.float32)
        both = sobel_magnitude(torch.cat([pred, target]).to(dtype), self.eps, self.kernels)
        pred_edges, target_edges = both.chunk(2)
        return (pred_edges - target_edges).abs().mean()
