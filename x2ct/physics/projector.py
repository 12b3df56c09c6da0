"""Batched, differentiable DRR rendering: line integrals of attenuation along every detector ray.

Method (Joseph's method): every ray is sampled once per voxel plane along the volume axis it runs most
parallel to, with bilinear interpolation inside each plane. A ray crossing ``N`` planes costs ``N`` bilinear
samples (four reads each) rather than trilinear samples at sub-voxel steps, and the sum times the ray length per
plane is the line integral of the piecewise-bilinear volume. The planes go to ``grid_sample`` as its batch, so one
call samples all planes of a chunk of rays; autograd gives gradients with respect to the volume (and to the
geometry) for free.

Memory is bounded: rays are processed in chunks so that ``planes x batch x rays`` stays under ``max_elements``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from x2ct.physics.geometry import ProjectionGeometry

# Elements (planes x batch x rays) per chunk. On CPU, temporaries above glibc's mmap threshold are mapped and
# page-faulted afresh for every chunk, which costs 2-4x (benchmarks/results/drr_cpu.md); GPUs like big chunks.
DEFAULT_MAX_ELEMENTS = {"cpu": 2**22, "cuda": 2**26}

# For rays that run mostly along volume dim `a` (2=D/z, 3=H/y, 4=W/x of (B, 1, D, H, W)): the two in-plane
# dims in (rows, cols) order of the 2D plane that grid_sample reads, and the world-axis index (x=0, y=1, z=2)
# of each of them and of `a`.
_PLANE_LAYOUT = {
    # plane dim: ((row dim, col dim), world axis of planes, world axis of rows, world axis of cols)
    4: ((2, 3), 0, 2, 1),  # planes along x; each plane is (D, H): rows z, cols y
    3: ((2, 4), 1, 2, 0),  # planes along y; each plane is (D, W): rows z, cols x
    2: ((3, 4), 2, 1, 0),  # planes along z; each plane is (H, W): rows y, cols x
}
_WORLD_AXIS_TO_DIM = {0: 4, 1: 3, 2: 2}


def render_drr(
    volume: torch.Tensor,
    spacing_mm: Sequence[float],
    geometry: ProjectionGeometry,
    *,
    rays: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_elements: int | None = None,
) -> torch.Tensor:
    """Render line integrals ``sum(mu * length)`` through ``volume`` for every view of ``geometry``.

    Args:
        volume: ``(B, 1, D, H, W)`` linear attenuation in 1/mm, axes as in ``CTVolume`` (D superior, H anterior,
            W patient right), centred on the isocentre.
        spacing_mm: voxel size ``(D, H, W)`` in mm; anisotropic is fine.
        geometry: source/detector layout and gantry angles.
        rays: optional precomputed ``geometry.rays(...)`` on the volume's device and dtype (saves recomputation).
        max_elements: bound on ``planes * batch * rays`` per chunk, which bounds peak memory; ``None`` takes
            ``DEFAULT_MAX_ELEMENTS`` for the volume's device type.

    Returns:
        ``(B, V, rows, cols)`` line integrals (dimensionless), float64 for a float64 volume, else float32
        (half-precision volumes, e.g. under autocast, are rendered in float32).
    """
    if volume.ndim != 5 or volume.shape[1] != 1:
        raise ValueError(f"render_drr expects a volume of shape (B, 1, D, H, W), got {tuple(volume.shape)}")
    if len(spacing_mm) != 3 or min(float(s) for s in spacing_mm) <= 0:
        raise ValueError(f"render_drr: spacing_mm must be three positive values (D, H, W), got {spacing_mm}")
    if not volume.is_floating_point():
        raise TypeError(f"render_drr: volume must be a floating-point tensor, got {volume.dtype}")
    volume = volume.to(working_dtype(volume.dtype))
    batch = volume.shape[0]
    sizes = volume.shape[2:]  # (D, H, W)
    # half extents per world axis (x, y, z), voxel edge to voxel edge
    half = [sizes[2] * float(spacing_mm[2]) / 2, sizes[1] * float(spacing_mm[1]) / 2,
            sizes[0] * float(spacing_mm[0]) / 2]
    _check_source_outside(geometry, half)

    if max_elements is None:
        max_elements = DEFAULT_MAX_ELEMENTS.get(volume.device.type, DEFAULT_MAX_ELEMENTS["cuda"])
    if rays is None:
        rays = geometry.rays(dtype=volume.dtype, device=volume.device)
    origins, directions = (r.reshape(-1, 3) for r in rays)
    rows, cols = geometry.detector_shape
    out = volume.new_zeros(batch, origins.shape[0])

    principal = directions.abs().argmax(dim=1)  # world axis each ray runs most parallel to
    for world_axis in range(3):
        idx = torch.nonzero(principal == world_axis).squeeze(1)
        if idx.numel() == 0:
            continue
        out = out.index_copy(1, idx, _integrate_along(volume, spacing_mm, half, world_axis, origins[idx],
                                                      directions[idx], max_elements))
    return out.reshape(batch, geometry.num_views, rows, cols)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Ray positions in half precision would be off by up to a voxel: low-precision volumes render in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _integrate_along(volume, spacing_mm, half, world_axis, origins, directions, max_elements):
    """Joseph sums for rays that all run mostly along ``world_axis``. Returns ``(B, R)``."""
    plane_dim = _WORLD_AXIS_TO_DIM[world_axis]
    (row_dim, col_dim), _, row_axis, col_axis = _PLANE_LAYOUT[plane_dim]
    n_planes = volume.shape[plane_dim]
    step = float(spacing_mm[plane_dim - 2])
    # (P, B, rows, cols): planes become grid_sample's batch, the volume batch its channels.
    # contiguous once here, or grid_sample copies the whole volume for every chunk
    planes = volume[:, 0].permute(plane_dim - 1, 0, row_dim - 1, col_dim - 1).contiguous()
    plane_coord = (torch.arange(n_planes, dtype=volume.dtype, device=volume.device) - (n_planes - 1) / 2) * step

    batch = volume.shape[0]
    chunk = max(1, max_elements // (n_planes * max(batch, 2)))
    results = []
    for start in range(0, origins.shape[0], chunk):
        o = origins[start:start + chunk]
        d = directions[start:start + chunk]
        t = (plane_coord[:, None] - o[None, :, world_axis]) / d[None, :, world_axis]  # (P, R)
        # normalised grid_sample coordinates (align_corners=False: +-1 at the volume's outer voxel edges)
        gx = (o[None, :, col_axis] + t * d[None, :, col_axis]) / half[col_axis]
        gy = (o[None, :, row_axis] + t * d[None, :, row_axis]) / half[row_axis]
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(2)  # (P, R, 1, 2)
        samples = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        length_per_plane = step * d.norm(dim=1) / d[:, world_axis].abs()  # (R,)
        results.append(samples.sum(dim=0)[:, :, 0] * length_per_plane)  # (B, R)
    return torch.cat(results, dim=1)


def _check_source_outside(geometry: ProjectionGeometry, half: list[float]) -> None:
    if geometry.kind != "cone":
        return
    reach = (half[0] ** 2 + half[1] ** 2) ** 0.5
    if geometry.source_to_isocenter_mm <= reach:
        raise ValueError(
            f"cone-beam source at {geometry.source_to_isocenter_mm} mm from the isocentre lies inside or on the "
            f"volume (in-plane half-diagonal {reach:.1f} mm); increase source_to_isocenter_mm or shrink the volume")
    detector_distance = geometry.source_to_detector_mm - geometry.source_to_isocenter_mm
    if detector_distance <= reach:
        raise ValueError(
            f"cone-beam detector at {detector_distance} mm from the isocentre cuts through the volume (in-plane "
            f"half-diagonal {reach:.1f} mm); increase source_to_detector_mm or shrink the volume")


class DRRProjector(nn.Module):
    """``render_drr`` with fixed geometry and spacing, caching the rays per device and dtype.

    Use it as a layer (e.g. a projection-consistency loss): ``proj(volume (B,1,D,H,W)) -> (B, V, rows, cols)``.
    """

    def __init__(self, geometry: ProjectionGeometry, spacing_mm: Sequence[float],
                 max_elements: int | None = None) -> None:
        super().__init__()
        self.geometry = geometry
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.max_elements = max_elements
        self._rays: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        key = (volume.device, working_dtype(volume.dtype))
        if key not in self._rays:
            self._rays[key] = self.geometry.rays(dtype=key[1], device=volume.device)
        return render_drr(volume, self.spacing_mm, self.geometry, rays=self._rays[key],
                          max_elements=self.max_elements)
