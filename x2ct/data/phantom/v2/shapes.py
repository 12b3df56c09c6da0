"""Shapes the v2 parts add to v1's ``sdf``: oriented ellipsoids, tube chains, flat triangular plates, smooth union.

Same conventions as ``x2ct.data.phantom.sdf``: mm, negative inside, broadcasting coordinates; each shape has a
``bounds`` box (x, y, z rows of (low, high) mm) outside which it is absent.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from x2ct.data.phantom.sdf import MIN_GRADIENT, ellipsoid_sdf, segment_distance


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two SDFs with a fillet of about ``k`` mm where they meet (polynomial smooth minimum)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


class Ellipsoid:
    """Semi-axes ``semi`` (3,) along the rows of ``axes`` (3, 3) (unit vectors in x, y, z), about ``centre``."""

    def __init__(self, centre, axes, semi) -> None:
        self.centre = np.asarray(centre, dtype=np.float64)
        self.axes = np.asarray(axes, dtype=np.float64)
        self.semi = np.asarray(semi, dtype=np.float64)
        extent = np.sqrt(((self.axes * self.semi[:, None]) ** 2).sum(axis=0))
        self.bounds = np.stack([self.centre - extent, self.centre + extent], axis=1)

    def local(self, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, e = self.centre, self.axes
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        return tuple(dx * e[i, 0] + dy * e[i, 1] + dz * e[i, 2] for i in range(3))

    def sdf(self, x, y, z) -> np.ndarray:
        return ellipsoid_sdf(*self.local(x, y, z), *self.semi)


def tilted_axes(tilt_deg: float, about: str = "x") -> np.ndarray:
    """Rows of a frame whose third axis is z tilted by ``tilt_deg`` toward +y (about x) or +x (about y)."""
    t = np.radians(tilt_deg)
    if about == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    return np.array([[np.cos(t), 0.0, -np.sin(t)], [0.0, 1.0, 0.0], [np.sin(t), 0.0, np.cos(t)]])


class TubeChain:
    """Tubes of radius ``radius`` through the ``points`` (N, 3), segment by segment (a polyline with thickness)."""

    def __init__(self, points, radius: float) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        self.radius = float(radius)
        self.bounds = np.stack([self.points.min(axis=0) - radius, self.points.max(axis=0) + radius], axis=1)

    def distance(self, x, y, z) -> np.ndarray:
        """Distance to the centreline."""
        return np.minimum.reduce([segment_distance(x, y, z, a, b)[0] for a, b in pairwise(self.points)])

    def sdf(self, x, y, z, radius: float | None = None) -> np.ndarray:
        return self.distance(x, y, z) - (self.radius if radius is None else radius)

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


class TrianglePlate:
    """A flat triangle with corners ``corners`` (3, 3) and thickness ``thickness``; ``sdf(..., half)`` grows it."""

    def __init__(self, corners, thickness: float) -> None:
        v = np.asarray(corners, dtype=np.float64)
        self.corners, self.thickness = v, float(thickness)
        n = np.cross(v[1] - v[0], v[2] - v[0])
        self.normal = n / max(float(np.linalg.norm(n)), MIN_GRADIENT)
        centroid = v.mean(axis=0)
        self.edges = []  # (point on edge, inward unit normal in the plane)
        for i in range(3):
            a, b = v[i], v[(i + 1) % 3]
            m = np.cross(self.normal, b - a)
            m /= max(float(np.linalg.norm(m)), MIN_GRADIENT)
            if (centroid - a) @ m < 0:
                m = -m
            self.edges.append((a, m))
        self.bounds = np.stack([v.min(axis=0) - thickness, v.max(axis=0) + thickness], axis=1)

    def sdf(self, x, y, z, thickness: float | None = None) -> np.ndarray:
        t = self.thickness if thickness is None else thickness
        o, n = self.corners[0], self.normal
        across = np.abs((x - o[0]) * n[0] + (y - o[1]) * n[1] + (z - o[2]) * n[2]) - 0.5 * t
        inside = np.maximum.reduce([-((x - a[0]) * m[0] + (y - a[1]) * m[1] + (z - a[2]) * m[2])
                                    for a, m in self.edges])
        return np.maximum(across, inside)
