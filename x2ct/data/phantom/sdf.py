"""Signed distance functions (mm, negative inside) of the shapes the anatomy is built from.

Arguments broadcast: the grid passes x (1, 1, W), y (1, H, 1), z (D, 1, 1) in RAS mm; points pass (N,). The
distances are exact to first order near a boundary, which is all the partial-volume ramp needs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

BIG_MM = 1.0e4  # "far outside" for SDFs of structures that are absent at a point
MIN_GRADIENT = 1.0e-6  # guards divisions at the exact centre of an ellipse


def ellipse_sdf(dx: ArrayLike, dy: ArrayLike, a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Approximate signed distance to the ellipse (dx/a)^2 + (dy/b)^2 = 1: the implicit value over its gradient.

    Exact to first order near the boundary, which is all the partial-volume ramp needs.
    """
    ux, uy = dx / a, dy / b
    q = np.sqrt(ux * ux + uy * uy)
    g = np.sqrt((ux / a) ** 2 + (uy / b) ** 2)  # q * |grad q|
    grad = np.clip(g / np.maximum(q, MIN_GRADIENT), 1.0 / np.maximum(a, b), 1.0 / np.minimum(a, b))
    return (q - 1.0) / grad


def flat_back_sdf(dx: ArrayLike, dy: ArrayLike, a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """As ``ellipse_sdf``, but the posterior half (dy < 0) is the superellipse |dx/a|^3 + |dy/b|^3 = 1.

    Torso and rib cage are flatter across the back, so the lungs reach far back on both sides of the spine.
    """
    ux, uy = np.abs(dx / a), np.abs(dy / b)
    ux2, uy2 = ux * ux, uy * uy
    q = np.cbrt(ux2 * ux + uy2 * uy)
    g = np.sqrt((ux2 / a) ** 2 + (uy2 / b) ** 2)  # q^2 * |grad q|
    grad = np.clip(g / np.maximum(q * q, MIN_GRADIENT), 1.0 / np.maximum(a, b), 1.0 / np.minimum(a, b))
    return np.where(dy < 0, (q - 1.0) / grad, ellipse_sdf(dx, dy, a, b))


def ellipsoid_sdf(u: ArrayLike, v: ArrayLike, w: ArrayLike, a: float, b: float, c: float) -> np.ndarray:
    """Approximate signed distance to the ellipsoid with semi-axes (a, b, c) along local axes (u, v, w)."""
    pu, pv, pw = u / a, v / b, w / c
    q = np.sqrt(pu * pu + pv * pv + pw * pw)
    g = np.sqrt((pu / a) ** 2 + (pv / b) ** 2 + (pw / c) ** 2)
    grad = np.clip(g / np.maximum(q, MIN_GRADIENT), 1.0 / max(a, b, c), 1.0 / min(a, b, c))
    return (q - 1.0) / grad


def height_field_sdf(z: ArrayLike, height: ArrayLike, dh_dx: ArrayLike, dh_dy: ArrayLike) -> np.ndarray:
    """Signed distance to the surface z = height(x, y), negative below it."""
    return (z - height) / np.sqrt(1.0 + dh_dx * dh_dx + dh_dy * dh_dy)


def segment_distance(
    px: ArrayLike, py: ArrayLike, pz: ArrayLike, a: ArrayLike, b: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points to segment a-b (3-vectors) and the segment parameter t in [0, 1] of the nearest point."""
    ab = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    dx, dy, dz = px - a[0], py - a[1], pz - a[2]
    t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / max(float(ab @ ab), MIN_GRADIENT), 0.0, 1.0)
    ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
    return np.sqrt(ex * ex + ey * ey + ez * ez), t

