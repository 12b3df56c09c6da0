"""PatchGAN discriminators (Isola et al. 2017, pix2pix) for volumes (3D) and projections (2D).

One implementation, `PatchDiscriminator`, parameterised by ``spatial_dims``; `PatchGAN3D` and `PatchGAN2D` fix
it for configs. The network is ``num_layers`` stride-2 convolutions (kernel 4, LeakyReLU 0.2, no norm on the
first), a stride-1 convolution, and a 1-channel stride-1 convolution: every output logit judges one patch of
``receptive_field(num_layers)`` voxels per side (70 for the usual 3 layers), so D scores local texture and
leaves global structure to the reconstruction losses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.conv import CONV
from x2ct.models.blocks.norm import make_norm

KERNEL_SIZE = 4  # pix2pix: even kernel, padding 1, so a stride-2 layer halves even sizes
PADDING = 1
MAX_CHANNEL_MULTIPLIER = 8  # widths double per layer up to 8 x base_channels, as in pix2pix


def receptive_field(num_layers: int) -> int:
    """Side length in input voxels / pixels of the patch one output logit sees."""
    strides = [2] * num_layers + [1, 1]
    size = 1
    for stride in reversed(strides):
        size = (size - 1) * stride + KERNEL_SIZE
    return size


class PatchDiscriminator(nn.Module):
    """``(B, in_channels, *S)`` (+ optional condition ``(B, condition_channels, *S)``) -> ``(B, 1, *S')``.

    ``S'`` is about ``S / 2**num_layers - 2`` per axis; the input must be at least ``2**num_layers * 4`` per
    axis for a non-empty map.

    Args:
        spatial_dims: 3 for volumes ``(B, C, D, H, W)``, 2 for images ``(B, C, rows, cols)``.
        in_channels: channels of the judged sample (1 for a volume or a projection).
        condition_channels: channels of the condition concatenated to the sample (a conditional GAN: D judges
            whether the sample fits *this* input, e.g. the back-projected views); 0 for an unconditional D.
        base_channels: width of the first layer; widths double per layer up to 8x.
        num_layers: stride-2 layers; sets the patch size (`receptive_field`).
        norm: ``make_norm`` kind for all but the first layer; ``"none"`` with spectral norm (a norm layer
            rescales the activations and undoes the Lipschitz bound spectral norm is for).
        spectral_norm: wrap every convolution in ``torch.nn.utils.parametrizations.spectral_norm`` (Miyato et
            al. 2018): the reshaped ``(out, in * k^d)`` weight is divided by its largest singular value,
            estimated by one power iteration per training forward pass.
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, condition_channels: int = 0,
                 base_channels: int = 32, num_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False) -> None:
        super().__init__()
        if spatial_dims not in CONV:
            raise ValueError(f"PatchDiscriminator: spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_layers < 1:
            raise ValueError(f"PatchDiscriminator: num_layers must be >= 1, got {num_layers}")
        if in_channels < 1 or condition_channels < 0 or base_channels < 1:
            raise ValueError(f"PatchDiscriminator: need in_channels >= 1, condition_channels >= 0, base_channels "
                             f">= 1; got {in_channels}, {condition_channels}, {base_channels}")
        self.spatial_dims = spatial_dims
        self.condition_channels = condition_channels
        self.num_layers = num_layers
        self.receptive_field = receptive_field(num_layers)

        def conv(cin: int, cout: int, stride: int, bias: bool) -> nn.Module:
            layer = CONV[spatial_dims](cin, cout, KERNEL_SIZE, stride=stride, padding=PADDING, bias=bias)
            return _spectral_norm(layer) if spectral_norm else layer

        widths = [base_channels * min(2**i, MAX_CHANNEL_MULTIPLIER) for i in range(num_layers + 1)]
        # a norm's shift replaces the bias, as in ConvNormAct
        bias = norm == "none"
        layers: list[nn.Module] = [conv(in_channels + condition_channels, widths[0], 2, True),
                                   make_activation("leaky_relu")]
        for i in range(1, num_layers):
            layers += [conv(widths[i - 1], widths[i], 2, bias), make_norm(norm, widths[i], spatial_dims),
                       make_activation("leaky_relu")]
        layers += [conv(widths[num_layers - 1], widths[num_layers], 1, bias),
                   make_norm(norm, widths[num_layers], spatial_dims), make_activation("leaky_relu"),
                   conv(widths[num_layers], 1, 1, True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Patch logits ``(B, 1, *S')`` for samples ``x`` ``(B, in_channels, *S)`` given ``condition``."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"{type(self).__name__}: expected a {self.spatial_dims + 2}-D input (B, C, *S), "
                             f"got shape {tuple(x.shape)}")
        if self.condition_channels:
            if condition is None:
                raise ValueError(f"{type(self).__name__} was built with condition_channels="
                                 f"{self.condition_channels}; pass the condition tensor")
            if condition.shape[0] != x.shape[0] or condition.shape[2:] != x.shape[2:]:
                raise ValueError(f"{type(self).__name__}: condition shape {tuple(condition.shape)} does not match "
                                 f"the input {tuple(x.shape)} in batch and spatial size")
            x = torch.cat([x, condition], dim=1)
        elif condition is not None:
            raise ValueError(f"{type(self).__name__} was built with condition_channels=0 but got a condition")
        return self.net(x)


class PatchGAN3D(PatchDiscriminator):
    """Conditional 3D PatchGAN on volumes ``(B, 1, D, H, W)`` -> patch logits ``(B, 1, d, h, w)``."""

    def __init__(self, in_channels: int = 1, condition_channels: int = 0, base_channels: int = 32,
                 num_layers: int = 3, norm: str = "instance", spectral_norm: bool = False) -> None:
        super().__init__(3, in_channels, condition_channels, base_channels, num_layers, norm, spectral_norm)


class PatchGAN2D(PatchDiscriminator):
    """2D PatchGAN on projections ``(B * V, 1, rows, cols)`` -> patch logits ``(B * V, 1, r, c)``."""

    def __init__(self, in_channels: int = 1, base_channels: int = 32, num_layers: int = 3,
                 norm: str = "instance", spectral_norm: bool = False) -> None:
        super().__init__(2, in_channels, 0, base_channels, num_layers, norm, spectral_norm)
