"""Residual dense block (Zhang et al. 2018, RDN; Wang et al. 2018, ESRGAN), 3D.

Every layer sees the block input and all earlier layers' outputs, so fine detail from the input reaches the fusion
unchanged next to features with a growing receptive field; the local residual keeps a stack of blocks trainable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.layout import as_layout_of

MIN_GROWTH = 8  # default growth floor: thin blocks still add a useful number of features per layer


class ResidualDenseBlock3D(nn.Module):
    """``(B, C, D, H, W) -> (B, C, D, H, W)``: ``x + residual_scale * fuse(cat[x, y_1, ..., y_L])``.

    Layer ``i`` (0-based) is a 3x3x3 ConvNormAct from ``C + i * growth`` channels (``cat[x, y_1, ..., y_i]``) to
    ``growth``; ``fuse`` is a plain 1x1x1 convolution (with bias, no norm or activation) from
    ``C + layers * growth`` back to ``C``, so zeroing it makes the block the identity. The channel order of the
    concatenation is ``[x, y_1, ..., y_L]``. With ``L`` layers the receptive field is ``(2L + 1)^3``.

    Args:
        channels: ``C``, in and out channels.
        growth: channels each layer adds; default ``max(channels // 2, MIN_GROWTH)`` (ESRGAN uses 32 for 64).
        layers: densely connected convolutions ``L``.
        norm, act: for each layer (see ``make_norm``, ``make_activation``).
        residual_scale: multiplies the fused branch; ESRGAN uses 0.2 to stabilise deep stacks.
    """

    def __init__(self, channels: int, growth: int | None = None, layers: int = 4, norm: str = "instance",
                 act: str = "leaky_relu", residual_scale: float = 1.0) -> None:
        super().__init__()
        growth = growth if growth is not None else max(channels // 2, MIN_GROWTH)
        if growth < 1 or layers < 1:
            raise ValueError(f"ResidualDenseBlock3D: growth and layers must be >= 1, got growth={growth}, "
                             f"layers={layers}")
        self.channels, self.growth, self.residual_scale = channels, growth, residual_scale
        self.layers = nn.ModuleList(
            ConvNormAct(3, channels + i * growth, growth, kernel_size=3, norm=norm, act=act) for i in range(layers))
        self.fuse = nn.Conv3d(channels + layers * growth, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.channels:
            raise ValueError(f"ResidualDenseBlock3D: expected (B, {self.channels}, D, H, W), got {tuple(x.shape)}")
        # in the layers' layout from the start: a contiguous x would make every concatenation contiguous
        x = as_layout_of(x, self.layers[0].conv.weight)
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.residual_scale * self.fuse(torch.cat(features, dim=1))
