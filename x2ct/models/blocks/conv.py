"""Convolution -> normalisation -> activation, the unit every encoder and decoder stage is made of."""

from __future__ import annotations

from torch import Tensor, nn

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.norm import make_norm

CONV = {2: nn.Conv2d, 3: nn.Conv3d}


class ConvNormAct(nn.Module):
    """``(B, in_channels, *S) -> (B, out_channels, *S / stride)`` for ``spatial_dims`` 2 or 3.

    "Same" padding, so a stride of 1 keeps the size and a stride of 2 halves even sizes. The convolution has no
    bias when a normalisation follows (the norm's shift replaces it).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, norm: str = "instance", act: str | None = "leaky_relu") -> None:
        super().__init__()
        if spatial_dims not in CONV:
            raise ValueError(f"ConvNormAct: spatial_dims must be 2 or 3, got {spatial_dims}")
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvNormAct: kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = CONV[spatial_dims](in_channels, out_channels, kernel_size, stride=stride,
                                       padding=kernel_size // 2, bias=norm == "none")
        self.norm = make_norm(norm, out_channels, spatial_dims)
        self.act = make_activation(act) if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))
