"""Normalisation layers by name, for 2D and 3D feature maps."""

from __future__ import annotations

import math

from torch import nn

NORMS = ("instance", "batch", "group", "none")


def make_norm(kind: str, channels: int, spatial_dims: int, num_groups: int = 8) -> nn.Module:
    """A normalisation layer for ``(B, channels, *spatial)`` features.

    Args:
        kind: ``"instance"`` (affine, per-sample statistics: what small medical batches usually need),
            ``"batch"``, ``"group"`` or ``"none"`` (identity).
        channels: feature channels.
        spatial_dims: 2 or 3.
        num_groups: groups for ``"group"``; lowered to the largest divisor of ``channels`` that is not above it.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"make_norm: spatial_dims must be 2 or 3, got {spatial_dims}")
    if kind == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, num_groups), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
