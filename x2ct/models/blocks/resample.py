"""Down- and up-sampling stages between resolution levels of an encoder or decoder, 2D or 3D."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from x2ct.models.blocks.conv import ConvNormAct

INTERPOLATION = {2: "bilinear", 3: "trilinear"}


class Downsample(nn.Module):
    """``(B, in_channels, *S) -> (B, out_channels, *S / 2)``: a strided 3x3(x3) ConvNormAct (learned pooling)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "instance",
                 act: str = "leaky_relu") -> None:
        super().__init__()
        self.conv = ConvNormAct(spatial_dims, in_channels, out_channels, stride=2, norm=norm, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """``(B, in_channels, *S) -> (B, out_channels, *S * scale)``: (bi/tri)linear interpolation, then ConvNormAct.

    Interpolation then convolution rather than a transposed convolution, which leaves checkerboard artefacts
    in 3D volumes.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2,
                 norm: str = "instance", act: str = "leaky_relu") -> None:
        super().__init__()
        self.mode = INTERPOLATION[spatial_dims]
        self.scale = scale
        self.conv = ConvNormAct(spatial_dims, in_channels, out_channels, norm=norm, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False))


def resize2d(x: Tensor, size: int) -> Tensor:
    """``(B, C, h, w) -> (B, C, size, size)``: area averaging when shrinking (anti-aliased), bilinear otherwise."""
    if x.shape[-2:] == (size, size):
        return x
    if x.shape[-2] >= size and x.shape[-1] >= size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
