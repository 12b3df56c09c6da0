"""Normalisation layers by name, for 2D and 3D feature maps.

Only ``"layer"`` (and ``"none"``) compute nothing over space: a block made with them gives a voxel the same value
whether it runs on the whole volume or on a patch around that voxel, which patch-trained refiners need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("instance", "instance_group", "batch", "group", "layer", "none")


def make_norm(kind: str, channels: int, spatial_dims: int, num_groups: int = 8) -> nn.Module:
    """A normalisation layer for ``(B, channels, *spatial)`` features.

    Args:
        kind: ``"instance"`` (affine, per-sample statistics: what small medical batches usually need),
            ``"instance_group"`` (the same maths and parameters as ``"instance"``, computed as ``GroupNorm`` with one
            group per channel, for ``trainer.memory_format=channels_last_3d``: on the CPU it returns a channels-last
            input channels-last, where ``InstanceNorm`` returns it contiguous; eager CUDA ``group_norm`` makes its
            input contiguous in the PyTorch sources, so on a GPU the layout is kept only where ``torch.compile``
            generates the norm), ``"batch"``, ``"group"``, ``"layer"`` (``ChannelLayerNorm``: over the channels of
            each voxel alone, so independent of the spatial extent) or ``"none"`` (identity).
        channels: feature channels.
        spatial_dims: 2 or 3.
        num_groups: groups for ``"group"``; lowered to the largest divisor of ``channels`` that is not above it.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"make_norm: spatial_dims must be 2 or 3, got {spatial_dims}")
    if kind == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "instance_group":  # InstanceNorm's default eps and affine weight/bias: state dicts load either way
        return nn.GroupNorm(channels, channels, eps=1e-5, affine=True)
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, num_groups), channels)
    if kind == "layer":
        return ChannelLayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel / voxel: ``(B, C, *S) -> (B, C, *S)``, affine per channel.

    The statistics are those of one position's ``C`` features (ConvNeXt's channels-first LayerNorm), never of the
    spatial extent: a patch and the whole volume normalise a voxel alike.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.movedim(1, -1), (self.channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"
