"""PatchGAN discriminators (Isola et al. 2017, pix2pix) for volumes (3D) and projections (2D).

One implementation, `PatchDiscriminator`, parameterised by ``spatial_dims``; `PatchGAN3D` and `PatchGAN2D` fix
it for configs. The network is ``num_layers`` stride-2 convolutions (kernel 4, LeakyReLU 0.2, no norm on the
first), a stride-1 convolution, and a 1-channel stride-1 convolution: every output logit judges one patch of
``receptive_field(num_layers)`` voxels per side (16, 34, 70 for 1, 2, 3 layers), so D scores local texture and
leaves global structure to the reconstruction losses. Configs may give the patch instead of the layers
(``receptive_field``: a fraction of the input's side or a number of voxels); `resolve_patch_layers` turns it into
``num_layers`` for the data's volume / detector size, so a 32^3 volume does not get 70^3 "patches".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def layers_for_receptive_field(field: float, side: int, unit: str = "voxels", key: str = "receptive_field") -> int:
    """The most stride-2 layers (at least 1) whose patch is at most ``field``: a fraction in (0, 1] of an input
    ``side`` long (a float) or a number of voxels / pixels (an int >= 1). Raises ValueError naming ``key`` for
    other values and when even one layer's 16 is too many."""
    is_fraction = isinstance(field, float) and 0.0 < field <= 1.0
    is_count = isinstance(field, int) and not isinstance(field, bool) and field >= 1
    if not (is_fraction or is_count):
        raise ValueError(f"{key} must be a fraction in (0, 1] of the side or a whole number of {unit} >= 1, "
                         f"got {field!r}")
    limit = field * side if is_fraction else field
    if receptive_field(1) > limit:
        of_side = f" of a {side}-{unit[:-1]} side" if is_fraction else ""
        raise ValueError(f"{key}={field!r} allows {limit:g} {unit}{of_side}, less than the {receptive_field(1)} of "
                         f"one layer (the smallest PatchGAN); raise it or set num_layers instead")
    layers = 1
    while receptive_field(layers + 1) <= limit:
        layers += 1
    return layers


def resolve_patch_layers(spec: dict[str, Any], side: int, key: str, unit: str = "voxels") -> dict[str, Any]:
    """A copy of discriminator config ``spec`` with ``num_layers`` set from ``receptive_field`` (then dropped) for
    inputs ``side`` long; ``key`` (e.g. ``adversarial.discriminators.volume``) names the config in errors.

    Exactly one of the two keys may be set; a spec with neither key keeps the class default."""
    out = dict(spec)
    field = out.pop("receptive_field", None)
    num_layers = out.get("num_layers")
    if field is not None and num_layers is not None:
        raise ValueError(f"{key}: num_layers={num_layers} and receptive_field={field!r} are both set; set one and "
                         f"the other to null ({key}.receptive_field=null to keep num_layers)")
    if field is None:
        if "num_layers" in out and num_layers is None:
            raise ValueError(f"{key}: num_layers and receptive_field are both null; set one (e.g. "
                             f"{key}.receptive_field=0.5: patches half the input's side)")
        return out
    out["num_layers"] = layers_for_receptive_field(field, side, unit, f"{key}.receptive_field")
    return out


def patch_summary(net: PatchDiscriminator, input_shape: Sequence[int]) -> str:
    """What one logit judges, for the start-up log: ``2 layers, receptive field 34 voxels of a 64^3 volume (14^3
    logits)`` (``input_shape``: the spatial shape, (D, H, W) or (rows, cols))."""
    layers = f"{net.num_layers} layer{'' if net.num_layers == 1 else 's'}"
    if net.spatial_dims == 3:
        what = f"voxels of a {_shape_text(input_shape)} volume"
    else:
        what = f"pixels of {_shape_text(input_shape)} views"
    return (f"{layers}, receptive field {net.receptive_field} {what} "
            f"({_shape_text(net.logit_shape(input_shape))} logits)")


def _shape_text(shape: Sequence[int]) -> str:
    """``32^3`` for a cube, ``64x48`` otherwise."""
    shape = [int(n) for n in shape]
    return f"{shape[0]}^{len(shape)}" if len(set(shape)) == 1 else "x".join(map(str, shape))


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

    def logit_shape(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape ``S'`` of the logits for inputs of spatial shape ``size`` (``S``), without a forward pass."""
        out = []
        for n in size:
            n = int(n)
            for stride in [2] * self.num_layers + [1, 1]:
                n = (n + 2 * PADDING - KERNEL_SIZE) // stride + 1
            out.append(n)
        return tuple(out)

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
