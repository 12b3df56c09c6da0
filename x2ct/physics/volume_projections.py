"""A [0, 1] volume's projections, rendered as the data set's input views were: what the projection-consistency
loss compares with the input views and what the projection discriminator sees.

Volumes go through the same pipeline that made the training views (`x2ct.data.views.render_views` then
`PatientDRRDataset`'s normalisation): [0, 1] -> HU -> mu -> line integrals -> normalised views. Everything is
differentiable with respect to the volume, so a loss on the views reaches the model through the projector.

This runs at every training step on the same few geometries, so the geometry-only part of rendering (the ray
plan) is built once per geometry, volume shape, spacing, device and dtype and kept in a small LRU cache.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from x2ct.ops.hu_window import denormalise
from x2ct.physics.attenuation import hu_to_mu
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import BACKENDS, Backend, RayPlan, plan_rays, render_drr, working_dtype
from x2ct.physics.radiograph import Normalisation, normalise_views

# Plans kept at once: the input views' angles, the discriminator's and a few novel-view draws. A plan holds
# about 30 bytes per detector pixel (2 views of 512^2: 15 MB), so the cache stays small next to the model.
RAY_PLAN_CACHE_SIZE = 8


def render_projections(volume01: Tensor, hu_window: Sequence[float], mu_water: float, spacing_mm: Sequence[float],
                       geometry: ProjectionGeometry, normalisation: Normalisation,
                       scale: float | None, backend: Backend = "grid_sample") -> Tensor:
    """Normalised views ``(B, V, rows, cols)`` of volumes ``(B, 1, D, H, W)`` in [0, 1] at ``geometry``'s angles.

    Args:
        volume01: the HU window mapped onto [0, 1] (the model's output space). Not clamped: values below 0 give
            HU below the window and are clipped to mu = 0 only where they fall under -1000 HU.
        hu_window: (min, max) HU of the data set (``PatientDRRDataset.hu_window``).
        mu_water: attenuation of water in 1/mm (the data set manifest's ``mu_water``).
        spacing_mm: voxel size (D, H, W) in mm (``ct.fov_mm / ct.size`` of the manifest).
        geometry: the data set's stored geometry, e.g. ``dataset.geometry.with_angles(angles)``.
        normalisation, scale: the data set's view normalisation and scale (``dataset.normalisation``,
            ``dataset.view_scale``).
        backend: ``render_drr``'s ray summation: ``"grid_sample"`` (any device, deterministic on the CPU),
            ``"triton"`` (the fused kernels: CUDA, or CPU under ``TRITON_INTERPRET=1``) or ``"auto"``.

    The stored views may differ slightly from these where the protocol rendered a larger detector and
    resampled it (``view_size``): this renders directly on the stored detector. CTs with HU outside the window
    also differ, since [0, 1] volumes are clipped to it.
    """
    if volume01.ndim != 5 or volume01.shape[1] != 1:
        raise ValueError(f"render_projections expects volumes of shape (B, 1, D, H, W), got {tuple(volume01.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"render_projections: backend must be one of {BACKENDS}, got {backend!r}")
    mu = hu_to_mu(denormalise(volume01, hu_window), mu_water)
    spacing = tuple(float(s) for s in spacing_mm)
    dtype = working_dtype(mu.dtype)
    if torch.compiler.is_compiling():  # traced into the graph: a Python-side cache would not survive there
        plan = plan_rays(geometry, mu.shape[2:], spacing, dtype=dtype, device=mu.device)
    else:
        plan = _cached_ray_plan(geometry, tuple(mu.shape[2:]), spacing, dtype, mu.device)
    return normalise_views(render_drr(mu, spacing, geometry, plan=plan, backend=backend), normalisation, scale)



@functools.lru_cache(maxsize=RAY_PLAN_CACHE_SIZE)
def _cached_ray_plan(geometry: ProjectionGeometry, volume_shape: tuple[int, ...], spacing_mm: tuple[float, ...],
                     dtype: torch.dtype, device: torch.device) -> RayPlan:
    """``plan_rays`` once per distinct (hashable) set of arguments; nothing in a plan depends on the volume."""
    with torch.inference_mode(False):  # a plan first made under inference_mode must still serve training steps
        return plan_rays(geometry, volume_shape, spacing_mm, dtype=dtype, device=device)

