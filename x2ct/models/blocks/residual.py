"""Residual block (two 3x3(x3) convolutions and an identity or 1x1 shortcut), 2D or 3D."""

from __future__ import annotations

from torch import Tensor, nn

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.conv import CONV, ConvNormAct
from x2ct.models.blocks.layout import as_layout_of
from x2ct.models.blocks.norm import make_norm

DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


class ResidualBlock(nn.Module):
    """``(B, in_channels, *S) -> (B, out_channels, *S)``: ``act(x' + norm(conv(drop(act(norm(conv(x))))))``.

    ``x'`` is ``x`` when the channel counts match, else a bias-free 1x1 convolution of it. ``dropout`` drops whole
    channels (``Dropout2d``/``Dropout3d``) between the two convolutions; 0 disables it.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int | None = None,
                 norm: str = "instance", act: str = "leaky_relu", dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResidualBlock: dropout must be in [0, 1), got {dropout}")
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, norm=norm, act=act)
        self.drop = DROPOUT[spatial_dims](dropout) if dropout > 0 else nn.Identity()
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, norm=norm, act=None)
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Sequential(CONV[spatial_dims](in_channels, out_channels, 1, bias=False),
                                            make_norm(norm, out_channels, spatial_dims)))
        self.act = make_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        x = as_layout_of(x, self.conv1.conv.weight)  # the convolutions' layout, kept by the shortcut's sum
        return self.act(self.shortcut(x) + self.conv2(self.drop(self.conv1(x))))
