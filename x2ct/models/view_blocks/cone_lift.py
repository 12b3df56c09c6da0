"""Lift per-view 2D feature maps into the volume along the true cone-beam (or parallel) rays.

Why: a feature at detector pixel ``(r, c)`` was made by the X-rays that crossed the patient along that pixel's
ray, so it belongs on the voxels that ray passes through. Projecting every voxel centre into every view and
reading the view's feature map there (as DIF-Net and C2RV do) puts each feature exactly on its ray, with the
magnification and the divergence of the cone beam, at any gantry angle and any number of views. ``ViewLift``
(``lift.py``) assumes parallel rays at the volume's scale instead and leaves magnification to the network.

Conventions: the volume ``(D, H, W)`` is that of ``CTVolume`` (D superior, H anterior, W patient right), spans
``fov_mm`` ``(D, H, W)`` centred on the isocentre; voxel ``(d, h, w)``'s centre is at
``z = (d + 0.5) * fov_d / D - fov_d / 2`` (and alike for ``y`` from ``h``, ``x`` from ``w``), as in
``x2ct.physics.projector``. Detector coordinates come from ``ProjectionGeometry.project`` alone. A feature map
``(h, w)`` is taken to cover the whole detector uniformly (the detector resampled to ``h x w``), so detector
coordinate ``(row, col)`` reads the feature map at normalised ``((col + 0.5) / cols * 2 - 1,
(row + 0.5) / rows * 2 - 1)`` with the *detector's* ``rows, cols`` (``align_corners=False``), whatever ``h, w``.

Sampling is bilinear. Voxels that project outside the detector (or lie behind a cone-beam source) read exactly
zero and have mask 0; inside the detector, the outer half-pixel band reads the edge pixel (border behaviour), so
a constant feature map lifts to that constant on every voxel the view sees.

Shapes: ``features (B, V, C, h, w) -> (B, V, C, D, H, W)``; mask ``(B, V, 1, D, H, W)``.

The sampling grids depend only on the angles and the feature-map size: they are cached per
``(angles, (h, w), device, dtype)`` in a small LRU cache (each entry holds ``V * D * H * W * 3`` values).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.view_angles import batch_angles

# Normalised grid_sample coordinate for "no reading": far enough outside any map that bilinear weights are zero.
_OUTSIDE = -4.0


def voxel_centres(volume_size: Sequence[int], fov_mm: Sequence[float], dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None) -> Tensor:
    """World RAS ``(x, y, z)`` mm of every voxel centre of a ``(D, H, W)`` grid over ``fov_mm``: ``(D, H, W, 3)``."""
    axes = [(torch.arange(n, dtype=torch.float64, device=device) + 0.5) * (f / n) - f / 2
            for n, f in zip(volume_size, fov_mm, strict=True)]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1).to(dtype)


def patch_voxel_centres(origins: Tensor, patch_size: Sequence[int], volume_size: Sequence[int],
                        fov_mm: Sequence[float]) -> Tensor:
    """``voxel_centres`` of one patch per sample: origins ``(B, 3)`` (first voxel, D, H, W) -> ``(B, d, h, w, 3)``
    float64, exactly the whole grid's centres cropped (no whole grid is built)."""
    axes = [(origins[:, k, None].double() + torch.arange(p, dtype=torch.float64, device=origins.device) + 0.5)
            * (f / n) - f / 2 for k, (p, n, f) in enumerate(zip(patch_size, volume_size, fov_mm, strict=True))]
    b, (d, h, w) = origins.shape[0], patch_size
    z = axes[0][:, :, None, None].expand(b, d, h, w)
    y = axes[1][:, None, :, None].expand(b, d, h, w)
    x = axes[2][:, None, None, :].expand(b, d, h, w)
    return torch.stack([x, y, z], dim=-1)


def sample_views(features: Tensor, grid: Tensor, size: Sequence[int], work: torch.dtype) -> Tensor:
    """Features ``(B, V, C, h, w)`` read bilinearly (zeros outside) at ``grid`` ``(B*V, 1, d*h*w, 2)``, the points
    of a ``size = (d, h, w)`` grid of voxels per sample and view: ``(B, V, C, d, h, w)`` in ``work`` precision."""
    maps = rearrange(features, "b v c r k -> (b v) c r k").to(work)
    read = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    d, h, _ = size
    return rearrange(read, "(b v) c 1 (d h w) -> b v c d h w", b=features.shape[0], d=d, h=h)


class ConeBeamLift(nn.Module):
    """Back-project view features onto their rays: ``(B, V, C, h, w) -> (B, V, C, D, H, W)``. No parameters.

    Args:
        geometry: detector and distances (a ``ProjectionGeometry`` or its ``to_dict()``); its angles are the
            default angles of ``forward``.
        volume_size: ``n`` or ``(D, H, W)`` voxels.
        fov_mm: ``(D, H, W)`` extent of the volume in mm, centred on the isocentre.
        cache_size: how many angle sets (per feature size, device and dtype) keep their sampling grids.
    """

    def __init__(self, geometry: ProjectionGeometry | dict, volume_size: int | Sequence[int],
                 fov_mm: Sequence[float], cache_size: int = 8) -> None:
        super().__init__()
        self.geometry = geometry if isinstance(geometry, ProjectionGeometry) else ProjectionGeometry.from_dict(
            dict(geometry))
        size = (volume_size,) * 3 if isinstance(volume_size, int) else tuple(int(n) for n in volume_size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"ConeBeamLift: volume_size must be n or (D, H, W) >= 1, got {volume_size}")
        fov = tuple(float(f) for f in fov_mm)
        if len(fov) != 3 or min(fov) <= 0:
            raise ValueError(f"ConeBeamLift: fov_mm must be three positive extents (D, H, W) in mm, got {fov_mm}")
        if cache_size < 1:
            raise ValueError(f"ConeBeamLift: cache_size must be >= 1, got {cache_size}")
        self.volume_size, self.fov_mm, self.cache_size = size, fov, cache_size
        self._cache: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()

    def forward(self, features: Tensor, angles_deg: Sequence[float] | Tensor | None = None,
                return_mask: bool = False, region: tuple[Tensor, Sequence[int]] | None = None
                ) -> Tensor | tuple[Tensor, Tensor]:
        """Lift ``features (B, V, C, h, w)`` seen at ``angles_deg`` (``V`` values; ``None``: the geometry's).

        Returns ``(B, V, C, D, H, W)``, and with ``return_mask`` also the ``(B, V, 1, D, H, W)`` mask (1 where
        the voxel projects inside that view's detector; an expanded view, do not write to it).
        ``region``: ``(origins (B, 3), (d, h, w))``, one patch per sample: only its voxels are projected and read,
        ``(B, V, C, d, h, w)`` (and mask), equal to the whole lift cropped; nothing of the whole grid is built.
        """
        if features.ndim != 5:
            raise ValueError(f"ConeBeamLift expects features (B, V, C, h, w), got shape {tuple(features.shape)}")
        b, v, _, h, w = features.shape
        angles = self.geometry.angles_deg if angles_deg is None else batch_angles(angles_deg)
        if len(angles) != v:
            raise ValueError(f"ConeBeamLift: features have {v} views (shape {tuple(features.shape)}) but "
                             f"{len(angles)} angles were given: {angles}")
        # half-precision grid coordinates would be off by pixels on large detectors: sample in float32 then
        work = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
        if region is not None:
            return self._lift_region(features, angles, region, work, return_mask)
        grid, mask = self.sampling_grid(angles, (h, w), features.device, work)
        grid = repeat(grid, "v 1 n xy -> (b v) 1 n xy", b=b)
        lifted = sample_views(features, grid, self.volume_size, work).to(features.dtype)
        if not return_mask:
            return lifted
        return lifted, repeat(mask.to(features.dtype), "v 1 d h w -> b v 1 d h w", b=b)

    def sampling_grid(self, angles_deg: Sequence[float], feature_size: tuple[int, int],
                      device: torch.device | str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Cached ``grid_sample`` grid ``(V, 1, D*H*W, 2)`` for ``(h, w) = feature_size`` maps and the
        ``(V, 1, D, H, W)`` mask of voxels inside each view's detector.
        """
        key = (tuple(float(a) for a in angles_deg), tuple(feature_size), torch.device(device), dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        entry = self._make_grid(key[0], feature_size, torch.device(device), dtype)
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def _lift_region(self, features: Tensor, angles: tuple[float, ...], region: tuple[Tensor, Sequence[int]],
                     work: torch.dtype, return_mask: bool) -> Tensor | tuple[Tensor, Tensor]:
        """One patch per sample: ``(B, V, C, d, h, w)`` (and the ``(B, V, 1, d, h, w)`` mask)."""
        b, h, w = features.shape[0], features.shape[3], features.shape[4]
        origins, size = region[0].to(features.device), tuple(int(p) for p in region[1])
        if origins.shape != (b, 3) or len(size) != 3:
            raise ValueError(f"ConeBeamLift: region must be (origins (B={b}, 3), (d, h, w)), got origins of shape "
                             f"{tuple(origins.shape)} and size {size}")
        points = patch_voxel_centres(origins, size, self.volume_size, self.fov_mm)        # (B, d, h, w, 3)
        grid, mask = self._grid_at(angles, points, (h, w), work)                     # (V, B, d, h, w, 2)
        # sample b's view v reads its own patch's points
        grid = rearrange(grid, "v b d h w xy -> (b v) 1 (d h w) xy")
        lifted = sample_views(features, grid, size, work).to(features.dtype)
        if not return_mask:
            return lifted
        return lifted, rearrange(mask, "v b d h w -> b v 1 d h w").to(features.dtype)

    def _grid_at(self, angles: tuple[float, ...], points: Tensor, feature_size: tuple[int, int],
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """World points ``(*S, 3)`` -> their ``grid_sample`` coordinates in every view ``(V, *S, 2)`` (outside the
        detector: a coordinate that reads nothing) and the inside-the-detector mask ``(V, *S)``."""
        rows, cols = self.geometry.detector_shape
        proj = self.geometry.with_angles(angles).project(points)
        row, col = proj[..., 0], proj[..., 1]  # (V, *S) float64; NaN behind a cone-beam source
        inside = (row >= -0.5) & (row <= rows - 0.5) & (col >= -0.5) & (col <= cols - 0.5)  # False for NaN
        gx = (col + 0.5) / cols * 2 - 1
        gy = (row + 0.5) / rows * 2 - 1
        # Inside the detector, stay within the feature map's pixel centres (border behaviour at the edge band);
        # outside it, read nothing.
        h, w = feature_size
        gx = torch.where(inside, gx.clamp(-1 + 1 / w, 1 - 1 / w), _OUTSIDE)
        gy = torch.where(inside, gy.clamp(-1 + 1 / h, 1 - 1 / h), _OUTSIDE)
        return torch.stack([gx, gy], dim=-1).to(dtype), inside.to(dtype)

    def _make_grid(self, angles: tuple[float, ...], feature_size: tuple[int, int], device: torch.device,
                   dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        grid, inside = self._grid_at(angles, voxel_centres(self.volume_size, self.fov_mm, device=device),
                                     feature_size, dtype)  # (V, D, H, W, 2), (V, D, H, W)
        return rearrange(grid, "v d h w xy -> v 1 (d h w) xy"), rearrange(inside, "v d h w -> v 1 d h w")

    def extra_repr(self) -> str:
        return (f"kind={self.geometry.kind}, detector={self.geometry.detector_shape}, "
                f"volume_size={self.volume_size}, fov_mm={self.fov_mm}")
