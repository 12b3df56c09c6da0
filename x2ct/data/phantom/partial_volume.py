"""Sampling SDFs on the voxel grid with partial volume: the grid, the edge ramp, painting HU over HU.

A voxel takes the fraction ``clip(0.5 - sdf / w, 0, 1)`` of a structure, with ``w`` one voxel: the exact coverage
of a planar edge. Thin tubes and small spheres are drawn with a shrunken radius, or a reduced contrast when
thinner than a voxel, so their total attenuation does not depend on the voxel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates in RAS mm: x (W,), y (H,), z (D,) ascending; spacing (D, H, W); ramp width."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float]
    edge_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.size, self.y.size, self.x.size)

    def box(self, xlim: tuple[float, float], ylim: tuple[float, float], zlim: tuple[float, float]):
        """Slices of the voxels whose centres lie in the mm box, and their broadcastable coordinates.

        Returns (slices (D, H, W), x (1, 1, w), y (1, h, 1), z (d, 1, 1)) or None for an empty box.
        """
        sl = []
        for axis, (lo, hi) in zip((self.z, self.y, self.x), (zlim, ylim, xlim), strict=True):
            i0, i1 = np.searchsorted(axis, lo, "left"), np.searchsorted(axis, hi, "right")
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
        sz, sy, sx = sl
        return (sz, sy, sx), self.x[sx][None, None, :], self.y[sy][None, :, None], self.z[sz][:, None, None]

    def full(self):
        """Every voxel, in the form ``box`` returns."""
        return self.box((-np.inf, np.inf), (-np.inf, np.inf), (-np.inf, np.inf))

    def points(self, k: np.ndarray, j: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) mm (N,) of the voxel centres with indices (k, j, i) (N,) along (D, H, W)."""
        return self.x[i], self.y[j], self.z[k]


def ramp(sdf: np.ndarray, width: float) -> np.ndarray:
    """Voxel fraction inside a structure whose edge is locally planar (box-filtered step)."""
    return np.clip(0.5 - sdf / width, 0.0, 1.0)


def paint(hu: np.ndarray, sl: tuple[slice, ...], frac: np.ndarray, value: float) -> None:
    """Blend ``value`` over what is already there, by the voxel fraction ``frac`` (painter's order)."""
    region = hu[sl]
    region += frac * (value - region)


def tube_render(radius: ArrayLike, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(radius to draw, contrast scale) so a ramp-drawn tube holds exactly pi r^2 of material per unit length.

    A ramp of width w around a circle of radius r' covers pi (r'^2 + w^2 / 12), so r' = sqrt(r^2 - w^2 / 12).
    Below r' = w / 2 the ramp's peak would not reach 1: such tubes are drawn at r' = w / 2, contrast scaled.
    """
    radius = np.asarray(radius, dtype=np.float64)
    thick = radius * radius >= width * width / 3.0
    drawn = np.where(thick, np.sqrt(np.maximum(radius * radius - width * width / 12.0, 0.0)), 0.5 * width)
    scale = np.where(thick, 1.0, 3.0 * radius * radius / (width * width))
    return drawn, scale


def sphere_render(radius: float, width: float) -> tuple[float, float]:
    """As ``tube_render`` for a sphere: the ramp covers 4/3 pi (r'^3 + r' w^2 / 4), solved for r'."""
    if radius**3 <= width**3 / 4.0:
        return 0.5 * width, 4.0 * radius**3 / width**3
    p, q = width * width / 4.0, radius**3  # r'^3 + p r' - q = 0, one real root (Cardano)
    s = math.sqrt(q * q / 4.0 + p**3 / 27.0)
    return float(np.cbrt(q / 2.0 + s) + np.cbrt(q / 2.0 - s)), 1.0


def plate_render(thickness: float, width: float) -> tuple[float, float]:
    """As ``tube_render`` for a plate: (thickness to draw, contrast scale) holding ``thickness`` of material.

    A ramp of width w around a plate of thickness t' >= w holds exactly t'; thinner plates are drawn at w with
    their contrast scaled by t / w.
    """
    return (thickness, 1.0) if thickness >= width else (width, thickness / width)


def checked_seed_and_grid(caller: str, seed, shape, spacing_mm, fov_mm: tuple[float, float, float],
                          edge_width_voxels: float) -> tuple[int, Grid]:
    """A generator's arguments checked (errors name ``caller``), and its grid centred on the world origin:
    ``spacing_mm`` None spreads ``fov_mm`` over ``shape``."""
    from x2ct.data.phantom.config import check_positive_triple

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"{caller}: seed must be a non-negative integer, got {seed!r}")
    if len(tuple(shape)) != 3 or not all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        raise ValueError(f"{caller}: shape must be 3 positive integers (D, H, W), got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if spacing_mm is None:
        spacing = tuple(f / n for f, n in zip(fov_mm, shape, strict=True))
    else:
        spacing = check_positive_triple(f"{caller}: spacing_mm", spacing_mm)
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing, strict=True)]
    return int(seed), Grid(x=axes[2], y=axes[1], z=axes[0], spacing=spacing,
                           edge_mm=edge_width_voxels * float(np.mean(spacing)))
