"""Lift 2D view features into the 3D volume, placed where each view's rays run.

Two frames meet here. A **view block** ``(B, C, T, R, K)`` holds features on the rays of one view:

- ``T``: position along the ray, from the source side (``t = 0``) to the detector side;
- ``R``: image row, head to feet (as the image is displayed);
- ``K``: image column, as displayed (PA: patient right to left; left lateral: anterior to posterior).

The **volume frame** ``(B, C, D, H, W)`` is that of ``CTVolume``: D toward superior, H toward anterior, W toward
patient right. For gantry angle ``a`` (``x2ct.physics.geometry``: rays run along ``(-sin a, cos a, 0)`` in RAS
``(x, y, z)``, columns along ``(-cos a, -sin a, 0)``, rows along ``-z``):

=======  ===========================  =============================
angle    rows, columns                ray (source -> detector)
=======  ===========================  =============================
0 (PA)   decreasing D, decreasing W   increasing H (posterior -> anterior)
90 (LL)  decreasing D, decreasing H   decreasing W (right -> left)
180 (AP) decreasing D, increasing W   decreasing H
270      decreasing D, increasing H   increasing W
=======  ===========================  =============================

The ``parallel`` and ``learned`` lifts assume each image spans the volume's extent with parallel rays (cone-beam
magnification is left for the network to absorb). Multiples of 90 degrees map by exact permutes and flips; other
angles rotate about the D axis with trilinear ``grid_sample``, and volume corners that no ray of the block reaches
read zero. The ``geometric`` lift follows the true rays (``cone_lift.py``); the names: ``lift_names.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.norm import make_norm
from x2ct.models.view_blocks.cone_lift import ConeBeamLift, sample_views
from x2ct.models.view_blocks.lift_names import check_lift
from x2ct.ops.patches import patch_coordinates
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.view_angles import batch_angles

# Quarter turns: (permutation of the view block's dims (B, C, T, R, K) into (D, H, W), dims to flip afterwards).
_QUARTER_TURNS = {
    0: ((0, 1, 3, 2, 4), (2, 4)),      # D <- -R, H <- T, W <- -K
    1: ((0, 1, 3, 4, 2), (2, 3, 4)),   # D <- -R, H <- -K, W <- -T
    2: ((0, 1, 3, 2, 4), (2, 3)),      # D <- -R, H <- -T, W <- K
    3: ((0, 1, 3, 4, 2), (2,)),        # D <- -R, H <- K, W <- T
}
_QUARTER_TURN_TOLERANCE_DEG = 1e-6


def view_to_volume(block: Tensor, angle_deg: float, exact_quarter_turns: bool = True) -> Tensor:
    """Place a view block in the volume frame: ``(B, C, T, R, K) -> (B, C, R, K, K)`` as ``(B, C, D, H, W)``.

    Needs ``T == K`` (the rotation turns the T-K plane into the H-W plane). ``exact_quarter_turns=False`` sends
    multiples of 90 degrees through the general ``grid_sample`` path too (tests compare the two).
    """
    if block.ndim != 5:
        raise ValueError(f"view_to_volume expects a view block (B, C, T, R, K), got shape {tuple(block.shape)}")
    if block.shape[2] != block.shape[4]:
        raise ValueError(f"view_to_volume needs as many ray samples as image columns (T == K), got block shape "
                         f"{tuple(block.shape)}")
    turns = angle_deg / 90.0
    if exact_quarter_turns and abs(turns - round(turns)) * 90.0 < _QUARTER_TURN_TOLERANCE_DEG:
        order, flips = _QUARTER_TURNS[round(turns) % 4]
        return block.permute(order).flip(flips)
    return _rotate_about_d(block, math.radians(angle_deg))


def _rotate_about_d(block: Tensor, angle_rad: float) -> Tensor:
    b, _, _, r, k = block.shape
    # grid and samples in float32 even for a half-precision block under autocast (a bf16 grid misplaces the rays by
    # up to 0.3 / 0.5 / 1 voxel at 64 / 128 / 256), rounded to the block's dtype once
    work = block.dtype if block.dtype in (torch.float32, torch.float64) else torch.float32
    grid = rotation_grid(angle_rad, r, k, device=block.device, dtype=work).expand(b, -1, -1, -1, -1)
    rotated = F.grid_sample(block.to(work), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated.to(block.dtype)


def rotation_grid(angle_rad: float, depth: int, side: int, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``(1, depth, side, side, 3)`` ``grid_sample`` grid (``align_corners=False``) that turns a view block
    ``(B, C, side, depth, side)`` about the D axis into the volume frame ``(B, C, depth, side, side)``.

    For every output voxel at normalised coordinates (x=W, y=H, z=D), the view-frame coordinates to read:
    ``K = -x cos a - y sin a``, ``R = -z``, ``T = -x sin a + y cos a`` (the grid's last dim is ordered K, R, T).
    ``F.affine_grid`` of that matrix, built from element-wise operations alone: autocast lowers ``affine_grid``'s
    matrix product to half precision even for a float32 matrix.
    """
    c, s = math.cos(angle_rad), math.sin(angle_rad)

    def centres(n: int) -> Tensor:  # voxel centres in (-1, 1)
        return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1

    z, y, x = centres(depth)[:, None, None], centres(side)[None, :, None], centres(side)[None, None, :]
    shape = (depth, side, side)
    grid = torch.stack([(-c * x - s * y).expand(shape), (-z).expand(shape), (-s * x + c * y).expand(shape)], dim=-1)
    return grid[None]


def copy_along_rays(features: Tensor, depth: int) -> Tensor:
    """``(B, C, R, K) -> (B, C, depth, R, K)`` view block: every pixel's feature copied along its whole ray (the
    ``parallel`` lift: unfiltered backprojection, parameter-free, so it suits skip connections at high resolution).
    """
    return repeat(features, "b c r k -> b c t r k", t=depth)  # a view: no copy until the rotation


class ChannelsToDepth(nn.Module):
    """``(B, in_channels, R, K) -> (B, out_channels, depth, R, K)`` view block, learned per ray position.

    A 1x1 convolution makes ``out_channels * depth`` channels that are split into ``depth`` slices along the ray
    (the X2CT-GAN lift), followed by a 3D normalisation and activation.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, norm: str = "instance",
                 act: str = "leaky_relu") -> None:
        super().__init__()
        self.out_channels, self.depth = out_channels, depth
        self.conv = nn.Conv2d(in_channels, out_channels * depth, kernel_size=1)
        self.norm = make_norm(norm, out_channels, spatial_dims=3)
        self.act = make_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(rearrange(self.conv(x), "b (c t) r k -> b c t r k", t=self.depth)))


class ViewLift(nn.Module):
    """All views into the volume frame: ``(B, V, C_in, n, n) -> (B, V, C_out, n, n, n)``.

    Args:
        angles_deg: gantry angle of each view (``V`` values), as in ``ProjectionGeometry``: the default when
            ``forward`` is given no angles.
        mode: ``"geometric"`` (every voxel centre projected into every view with the true cone-beam geometry,
            ``view_blocks/cone_lift.py``; no parameters, ``C_out = C_in``), ``"parallel"`` (copied along the ray,
            parallel rays spanning the volume; no parameters, ``C_out = C_in``) or ``"learned"``
            (``ChannelsToDepth``; weights shared by all views). The names of ``lift_names.py``.
        in_channels, out_channels: feature channels before and after (``out_channels`` defaults to
            ``in_channels``).
        grid_size: ``n``, the side of the square feature maps and of the cubic volume grid.
        geometry, fov_mm: for ``"geometric"``: the data set's ``ProjectionGeometry`` (or its dict) and the
            volume's extent (D, H, W) in mm, centred on the isocentre.
    """

    def __init__(self, angles_deg: Sequence[float], mode: str, in_channels: int, grid_size: int,
                 out_channels: int | None = None, norm: str = "instance", act: str = "leaky_relu",
                 geometry: ProjectionGeometry | dict | None = None, fov_mm: Sequence[float] | None = None) -> None:
        super().__init__()
        check_lift(mode, "ViewLift", key="mode")
        out_channels = out_channels or in_channels
        if mode in ("parallel", "geometric") and out_channels != in_channels:
            raise ValueError(f"lift mode {mode!r} keeps the channels: in_channels={in_channels} but "
                             f"out_channels={out_channels}")
        if mode == "geometric" and (geometry is None or fov_mm is None):
            raise ValueError("lift mode 'geometric' needs the imaging geometry and the volume's field of view "
                             "(geometry=, fov_mm=; the trainer fills model.geometry and model.volume_fov_mm from "
                             "the data set)")
        self.angles_deg = tuple(float(a) for a in angles_deg)
        self.mode, self.grid_size = mode, grid_size
        self.to_depth = (ChannelsToDepth(in_channels, out_channels, grid_size, norm=norm, act=act)
                         if mode == "learned" else None)
        self.cone = ConeBeamLift(geometry, grid_size, fov_mm) if mode == "geometric" else None

    def forward(self, features: Tensor, angles_deg: Sequence[float] | Tensor | None = None,
                return_mask: bool = False, region: tuple[Tensor, Sequence[int]] | None = None
                ) -> Tensor | tuple[Tensor, Tensor | None]:
        """``features`` (B, V, C, n, n); ``angles_deg`` (V,) or (B, V) with equal rows (default: the
        constructor's), so one model serves any subset of views. ``return_mask``: also the geometric lift's
        (B, V, 1, n, n, n) mask of the voxels each view sees (None for the other modes: every view covers all).
        ``region``: ``(origins (B, 3) long, (d, h, w))``, one patch of the ``n^3`` grid per sample: the lift is
        computed at those voxels alone, ``(B, V, C, d, h, w)``, equal to the whole lift cropped there (the
        parameter-free modes; a patch of 64^3 at 256^3 costs 1/64 of the whole lift's memory)."""
        b, v, _, h, w = features.shape
        angles = self.angles_deg if angles_deg is None else batch_angles(angles_deg)
        if v != len(angles) or (h, w) != (self.grid_size, self.grid_size):
            raise ValueError(f"ViewLift expects (B, {len(angles)}, C, {self.grid_size}, {self.grid_size}) "
                             f"features (one view per angle {angles}), got {tuple(features.shape)}")
        if self.cone is not None:
            return self.cone(features, angles, return_mask=return_mask, region=region)
        if region is not None:
            if self.to_depth is not None:
                raise ValueError("ViewLift: the learned lift normalises over the whole block, so it has no "
                                 "patch-local form; use 'parallel' or 'geometric'")
            volumes = parallel_copy_at(features, angles, region[0], tuple(int(p) for p in region[1]))
            return (volumes, None) if return_mask else volumes
        maps = rearrange(features, "b v c r k -> (b v) c r k")
        blocks = self.to_depth(maps) if self.to_depth is not None else copy_along_rays(maps, self.grid_size)
        blocks = rearrange(blocks, "(b v) c t r k -> b v c t r k", b=b)
        volumes = torch.stack([view_to_volume(blocks[:, i], a) for i, a in enumerate(angles)], dim=1)
        return (volumes, None) if return_mask else volumes


def parallel_copy_at(features: Tensor, angles_deg: Sequence[float], origins: Tensor, size: Sequence[int]) -> Tensor:
    """The parallel copy (``copy_along_rays`` then ``view_to_volume``) at one patch per sample, without the whole grid:
    features ``(B, V, C, n, n)``, origins ``(B, 3)`` -> ``(B, V, C, d, h, w)``.

    Every voxel reads its view's map where ``rotation_grid`` puts it (``K = -x cos a - y sin a``, ``R = -z``), with
    bilinear weights and zeros outside, times the weight that trilinear sampling of a block constant along ``T``
    (``T = -x sin a + y cos a``) gives to ray samples inside the block: trilinear sampling is separable, so this
    is the whole-volume ``grid_sample`` (and, at quarter turns, its exact permutation) cropped, to float rounding.
    """
    n = features.shape[-1]
    coords = patch_coordinates(origins.to(features.device), tuple(size), (n, n, n)).double()  # (B, 3, d, h, w)
    z, y, x = coords[:, 0], coords[:, 1], coords[:, 2]
    rad = torch.tensor([math.radians(a) for a in angles_deg], dtype=torch.float64, device=features.device)
    cos, sin = rad.cos()[None, :, None, None, None], rad.sin()[None, :, None, None, None]
    x, y = x[:, None], y[:, None]                                          # (B, 1, d, h, w)
    k = -x * cos - y * sin                                                 # (B, V, d, h, w)
    r = (-z)[:, None].expand_as(k)
    t = ((-x * sin + y * cos) + 1) * n / 2 - 0.5                           # ray sample index, continuous
    t0 = t.floor()
    frac = t - t0
    coverage = ((t0 >= 0) & (t0 <= n - 1)) * (1 - frac) + ((t0 + 1 >= 0) & (t0 + 1 <= n - 1)) * frac
    work = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    grid = rearrange(torch.stack([k, r], dim=-1), "b v d h w kr -> (b v) 1 (d h w) kr").to(work)
    lifted = sample_views(features, grid, size, work) * rearrange(coverage.to(work), "b v d h w -> b v 1 d h w")
    return lifted.to(features.dtype)

