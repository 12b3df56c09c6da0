"""Batched, differentiable DRR rendering: line integrals of attenuation along every detector ray.

Method (Joseph's method): every ray is sampled once per voxel plane along the volume axis it runs most
parallel to, with bilinear interpolation inside each plane. A ray crossing ``N`` planes costs ``N`` bilinear
samples (four reads each) rather than trilinear samples at sub-voxel steps, and the sum times the ray length per
plane is the line integral of the piecewise-bilinear volume. The planes go to ``grid_sample`` as its batch, so one
call samples all planes of a chunk of rays; autograd gives gradients with respect to the volume (and to the
geometry) for free.

Memory is bounded: rays are processed in chunks so that ``planes x batch x rays`` stays under ``max_elements``.

Everything that depends on the geometry alone (which axis each ray marches along, where it crosses each plane,
its length per plane) is a ``RayPlan`` (``plan_rays``), so a caller that renders the same geometry many times,
e.g. a loss at every training step, can build it once and pass it in.

``backend`` picks how each ray group is summed: ``"grid_sample"`` (above; the CPU path, differentiable with
respect to volume and geometry) or ``"triton"`` (the same sums as one fused kernel per ray group, volume gradient
only, by atomic adds: x2ct/physics/fused_projector.py, needs the optional ``triton`` package and CUDA).
``"auto"`` takes Triton on CUDA where it is installed, unless the geometry needs a gradient. Only the CPU's
grid_sample backward is deterministic (on CUDA both add gradients with atomics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Literal

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

Backend = Literal["grid_sample", "triton", "auto"]
BACKENDS = ("grid_sample", "triton", "auto")
# looked up without importing triton (which is optional), once, so that "auto" costs nothing per call
_TRITON_INSTALLED = find_spec("triton") is not None


@dataclass(frozen=True)
class RayGroup:
    """The rays that run mostly along one world axis, as the plane march reads them; ``R`` rays, ``P`` planes.

    A ray crosses the plane at ``plane_mm[p]`` at grid_sample coordinates ``base + plane_mm[p] * slope``
    (one fused multiply-add per sample instead of intersecting each ray with each plane at every call).
    """

    world_axis: int  # 0 = x (planes along W), 1 = y (H), 2 = z (D)
    index: torch.Tensor  # (R,) int64: the rays' positions among all V * rows * cols
    base: torch.Tensor  # (R, 2) normalised (col, row) position in the plane through the isocentre
    slope: torch.Tensor  # (R, 2) change of that position per mm along world_axis
    length_per_plane: torch.Tensor  # (R,) mm of ray between neighbouring planes
    plane_mm: torch.Tensor  # (P,) world coordinate of each voxel plane along world_axis


@dataclass(frozen=True)
class RayPlan:
    """What ``render_drr`` needs of the geometry for one volume shape and spacing, on one device and dtype."""

    geometry: ProjectionGeometry
    volume_shape: tuple[int, int, int]  # (D, H, W)
    spacing_mm: tuple[float, float, float]
    groups: tuple[RayGroup, ...]


def plan_rays(
    geometry: ProjectionGeometry,
    volume_shape: Sequence[int],
    spacing_mm: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    rays: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> RayPlan:
    """The ``RayPlan`` of ``geometry``'s rays through a ``(D, H, W)`` volume of voxel size ``spacing_mm``.

    ``dtype`` and ``device`` must be those the volume renders in (``working_dtype`` of its dtype). ``rays``: the
    ``geometry.rays(...)`` to use instead (e.g. to differentiate with respect to them); the plan then lives on
    their device. Computed in float64, stored in ``dtype``: it costs O(rays), not O(rays x planes).
    """
    sizes = tuple(int(n) for n in volume_shape)
    spacing = tuple(float(s) for s in spacing_mm)
    if len(sizes) != 3 or len(spacing) != 3:
        raise ValueError(f"plan_rays: volume_shape and spacing_mm must be (D, H, W), got {sizes} and {spacing}")
    half = _half_extents(sizes, spacing)
    if rays is None:
        rays = geometry.rays(dtype=torch.float64, device=device)
    origins, directions = (r.reshape(-1, 3).to(torch.float64) for r in rays)
    principal = directions.abs().argmax(dim=1)  # world axis each ray runs most parallel to
    groups = []
    for world_axis in range(3):
        idx = torch.nonzero(principal == world_axis).squeeze(1)
        if idx.numel() == 0:
            continue
        plane_dim = _WORLD_AXIS_TO_DIM[world_axis]
        _, _, row_axis, col_axis = _PLANE_LAYOUT[plane_dim]
        o, d = origins[idx], directions[idx]
        along = d[:, world_axis]
        sideways = d[:, [col_axis, row_axis]] / along[:, None]  # (R, 2) mm across per mm along
        at_zero = o[:, [col_axis, row_axis]] - o[:, world_axis, None] * sideways  # crossing of the plane at 0 mm
        # normalised grid_sample coordinates (align_corners=False: +-1 at the volume's outer voxel edges)
        scale = torch.tensor([1 / half[col_axis], 1 / half[row_axis]], dtype=torch.float64, device=o.device)
        n_planes, step = sizes[plane_dim - 2], spacing[plane_dim - 2]
        plane_mm = (torch.arange(n_planes, dtype=torch.float64, device=o.device) - (n_planes - 1) / 2) * step
        groups.append(RayGroup(
            world_axis=world_axis, index=idx, base=(at_zero * scale).to(dtype), slope=(sideways * scale).to(dtype),
            length_per_plane=(step * d.norm(dim=1) / along.abs()).to(dtype), plane_mm=plane_mm.to(dtype)))
    return RayPlan(geometry=geometry, volume_shape=sizes, spacing_mm=spacing, groups=tuple(groups))


def render_drr(
    volume: torch.Tensor,
    spacing_mm: Sequence[float],
    geometry: ProjectionGeometry,
    *,
    rays: tuple[torch.Tensor, torch.Tensor] | None = None,
    plan: RayPlan | None = None,
    max_elements: int | None = None,
    backend: Backend = "grid_sample",
) -> torch.Tensor:
    """Render line integrals ``sum(mu * length)`` through ``volume`` for every view of ``geometry``.

    Args:
        volume: ``(B, 1, D, H, W)`` linear attenuation in 1/mm, axes as in ``CTVolume`` (D superior, H anterior,
            W patient right), centred on the isocentre.
        spacing_mm: voxel size ``(D, H, W)`` in mm; anisotropic is fine.
        geometry: source/detector layout and gantry angles.
        rays: optional precomputed ``geometry.rays(...)`` on the volume's device and dtype (saves recomputation).
        plan: optional precomputed ``plan_rays(geometry, (D, H, W), spacing_mm, ...)`` in the volume's working
            dtype and on its device (saves more: the image is identical to the one rendered without it).
        max_elements: bound on ``planes * batch * rays`` per chunk, which bounds peak memory; ``None`` takes
            ``DEFAULT_MAX_ELEMENTS`` for the volume's device type. The ``"triton"`` backend needs no chunks.
        backend: ``"grid_sample"``, ``"triton"`` (fused kernels; CUDA, volume gradient only, not deterministic)
            or ``"auto"`` (``"triton"`` on CUDA when it is installed and applies, else ``"grid_sample"``).

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
    if backend not in BACKENDS:
        raise ValueError(f"render_drr: backend must be one of {BACKENDS}, got {backend!r}")
    volume = volume.to(working_dtype(volume.dtype))
    batch = volume.shape[0]
    sizes = tuple(volume.shape[2:])  # (D, H, W)
    _check_source_outside(geometry, _half_extents(sizes, spacing_mm))

    if max_elements is None:
        max_elements = DEFAULT_MAX_ELEMENTS.get(volume.device.type, DEFAULT_MAX_ELEMENTS["cuda"])
    if plan is None:
        plan = plan_rays(geometry, sizes, spacing_mm, dtype=volume.dtype, device=volume.device, rays=rays)
    else:
        if rays is not None:
            raise ValueError("render_drr: pass rays or plan, not both (a plan already holds its rays)")
        _check_plan(plan, volume, spacing_mm, geometry)
    integrate = _fused_integrator() if _use_triton(backend, volume, plan) else _integrate_group
    rows, cols = geometry.detector_shape
    out = volume.new_zeros(batch, geometry.num_views * rows * cols)
    for group in plan.groups:
        out = out.index_copy(1, group.index, integrate(volume, group, max_elements))
    return out.reshape(batch, geometry.num_views, rows, cols)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """Ray positions in half precision would be off by up to a voxel: low-precision volumes render in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _half_extents(sizes: Sequence[int], spacing_mm: Sequence[float]) -> list[float]:
    """Half extents (mm) per world axis (x, y, z) of a (D, H, W) volume, voxel edge to voxel edge."""
    return [sizes[2] * float(spacing_mm[2]) / 2, sizes[1] * float(spacing_mm[1]) / 2,
            sizes[0] * float(spacing_mm[0]) / 2]


def _check_plan(plan: RayPlan, volume: torch.Tensor, spacing_mm: Sequence[float],
                geometry: ProjectionGeometry) -> None:
    """Name what differs between a precomputed plan and the call it is passed to."""
    spacing = tuple(float(s) for s in spacing_mm)
    if plan.volume_shape != tuple(volume.shape[2:]) or plan.spacing_mm != spacing:
        raise ValueError(f"render_drr: plan was made for volume shape {plan.volume_shape} and spacing "
                         f"{plan.spacing_mm}, got {tuple(volume.shape[2:])} and {spacing}")
    if plan.geometry is not geometry and plan.geometry != geometry:
        raise ValueError(f"render_drr: plan was made for another geometry ({plan.geometry}), got {geometry}")
    tensor = plan.groups[0].base
    if tensor.dtype != volume.dtype or tensor.device != volume.device:
        raise ValueError(f"render_drr: plan is {tensor.dtype} on {tensor.device}, the volume renders in "
                         f"{volume.dtype} on {volume.device} (plan_rays(..., dtype=working_dtype(volume.dtype)))")


def _integrate_group(volume: torch.Tensor, group: RayGroup, max_elements: int) -> torch.Tensor:
    """Joseph sums for the rays of ``group`` through ``volume`` (B, 1, D, H, W). Returns ``(B, R)``."""
    plane_dim = _WORLD_AXIS_TO_DIM[group.world_axis]
    (row_dim, col_dim), _, _, _ = _PLANE_LAYOUT[plane_dim]
    n_planes = volume.shape[plane_dim]
    # (P, B, rows, cols): planes become grid_sample's batch, the volume batch its channels.
    # contiguous once here, or grid_sample copies the whole volume for every chunk
    planes = volume[:, 0].permute(plane_dim - 1, 0, row_dim - 1, col_dim - 1).contiguous()
    plane_mm = group.plane_mm[:, None, None]  # (P, 1, 1)

    batch = volume.shape[0]
    chunk = max(1, max_elements // (n_planes * max(batch, 2)))
    results = []
    for start in range(0, group.index.shape[0], chunk):
        end = start + chunk
        grid = torch.addcmul(group.base[None, start:end], plane_mm, group.slope[None, start:end])  # (P, R, 2)
        samples = F.grid_sample(planes, grid.unsqueeze(2), mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (P, B, R, 1)
        results.append(samples.sum(dim=0)[:, :, 0] * group.length_per_plane[start:end])  # (B, R)
    return torch.cat(results, dim=1)


def _use_triton(backend: Backend, volume: torch.Tensor, plan: RayPlan) -> bool:
    """``"auto"`` resolved: Triton only where it is installed, runs (CUDA) and gives every gradient asked for."""
    if backend != "auto":
        return backend == "triton"
    geometry_needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for g in plan.groups for t in (g.base, g.slope, g.length_per_plane, g.plane_mm))
    return _TRITON_INSTALLED and volume.device.type == "cuda" and not geometry_needs_grad


def _fused_integrator():
    """``_integrate_group``'s counterpart on the fused Triton kernels, imported on first use (triton is optional)."""
    from x2ct.physics.fused_projector import line_integrals

    def integrate(volume: torch.Tensor, group: RayGroup, max_elements: int) -> torch.Tensor:
        plane_dim = _WORLD_AXIS_TO_DIM[group.world_axis]
        (row_dim, col_dim), _, _, _ = _PLANE_LAYOUT[plane_dim]
        planes = volume[:, 0].permute(plane_dim - 1, 0, row_dim - 1, col_dim - 1)  # (P, B, rows, cols), a view
        return line_integrals(planes, group.base, group.slope, group.length_per_plane, group.plane_mm)

    return integrate


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
                 max_elements: int | None = None, backend: Backend = "grid_sample") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"DRRProjector: backend must be one of {BACKENDS}, got {backend!r}")
        self.geometry = geometry
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.max_elements = max_elements
        self.backend = backend
        self._rays: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        key = (volume.device, working_dtype(volume.dtype))
        if key not in self._rays:
            self._rays[key] = self.geometry.rays(dtype=key[1], device=volume.device)
        return render_drr(volume, self.spacing_mm, self.geometry, rays=self._rays[key],
                          max_elements=self.max_elements, backend=self.backend)
