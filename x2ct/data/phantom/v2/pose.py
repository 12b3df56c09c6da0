"""The patient's pose on the scanner: a small rotation between the patient's frame and the world grid.

Anatomy is built in the patient's frame (v1's RAS mm about the volume centre); ``PoseGrid`` hands every part the
patient-frame coordinates of the world voxel centres, so v1's parts and painters run unchanged on a rotated
patient. Boxes are given in the patient frame and widened to the world box that holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from x2ct.data.phantom.partial_volume import Grid


def rotation_matrix(yaw_deg: float, roll_deg: float, pitch_deg: float) -> np.ndarray:
    """(3, 3) patient -> world rotation: about z (yaw), then y (roll), then x (pitch)."""
    a, b, c = (math.radians(v) for v in (yaw_deg, roll_deg, pitch_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(b), 0.0, math.sin(b)], [0.0, 1.0, 0.0], [-math.sin(b), 0.0, math.cos(b)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(c), -math.sin(c)], [0.0, math.sin(c), math.cos(c)]])
    return rx @ ry @ rz


@dataclass(frozen=True)
class PoseGrid:
    """A ``Grid`` whose coordinates are the patient frame's: p = R^T w for world voxel centres w.

    Has ``Grid``'s interface (``shape``, ``spacing``, ``edge_mm``, ``box``, ``full``, ``points``); the
    coordinates it returns are full arrays (d, h, w) rather than broadcastable axes.
    """

    grid: Grid
    rotation: np.ndarray  # (3, 3) patient -> world

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    @property
    def edge_mm(self) -> float:
        return self.grid.edge_mm

    def _reach(self) -> float:
        g = self.grid
        return float(np.sqrt(sum(max(abs(a[0]), abs(a[-1])) ** 2 for a in (g.x, g.y, g.z)))) + 1.0

    def box(self, xlim, ylim, zlim):
        """Patient-frame mm limits -> (slices (D, H, W), x, y, z (d, h, w) patient mm) or None when empty."""
        r = self._reach()
        lims = [(max(float(lo), -r), min(float(hi), r)) for lo, hi in (xlim, ylim, zlim)]
        if any(lo > hi for lo, hi in lims):
            return None
        corners = np.array(np.meshgrid(*lims, indexing="ij")).reshape(3, -1)  # (3, 8) patient
        world = self.rotation @ corners
        found = self.grid.box(*((float(world[i].min()), float(world[i].max())) for i in range(3)))
        if found is None:
            return None
        sl, x, y, z = found
        return (sl, *self._to_patient(x, y, z))

    def full(self):
        sl, x, y, z = self.grid.full()
        return (sl, *self._to_patient(x, y, z))

    def points(self, k: np.ndarray, j: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._to_patient(*self.grid.points(k, j, i))

    def to_world(self, point) -> list[float]:
        """A patient-frame point (3,) in world mm."""
        return [float(v) for v in self.rotation @ np.asarray(point, dtype=np.float64)]

    def _to_patient(self, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = self.rotation.astype(np.float32)  # p = R^T w: row i of R^T is column i of R
        return tuple((r[0, i] * x + r[1, i] * y + r[2, i] * z).astype(np.float32) for i in range(3))
