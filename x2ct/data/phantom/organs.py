"""Mediastinum and upper abdomen: heart, aorta, trachea and main bronchi (ending at the hila), liver dome.

Each part is an SDF in RAS mm (negative inside) placed against the patient's ``BodyFrame``, with a bounding box
``bounds`` (x, y, z rows of (low, high) mm) outside which it is absent.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.sdf import BIG_MM, MIN_GRADIENT, ellipsoid_sdf, height_field_sdf, segment_distance


class Heart:
    """An ellipsoid above the left dome and behind the sternum, its long axis from the base to the apex.

    ``bounds`` include the pericardial fat and the pleural gap, the room the lungs leave it.
    """

    def __init__(self, p: SimpleNamespace, frame: BodyFrame) -> None:
        yaw, pitch = math.radians(p.heart_axis_yaw_deg), math.radians(p.heart_axis_pitch_deg)
        e1 = np.array([-math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), -math.sin(pitch)])
        e2 = np.cross(e1, [0.0, 0.0, 1.0])
        e2 /= np.linalg.norm(e2)
        e3 = np.cross(e1, e2)
        self.axes = np.stack([e1, e2, e3])  # rows: local axes in (x, y, z)
        self.semi = np.array([p.heart_half_length_mm, p.heart_half_width_mm, p.heart_half_depth_mm])
        extent = np.sqrt(((self.axes * self.semi[:, None]) ** 2).sum(axis=0))  # half-extent x, y, z
        cz = frame.dome_z[-1] + p.heart_above_left_dome_mm
        yc, _, b = frame.cage(cz)
        cy = yc + b - p.heart_gap_to_cage_mm - extent[1]
        self.centre = np.array([p.heart_x_mm, cy, cz])
        self.top = cz + extent[2]
        reach = extent + p.pericardial_fat_mm + p.pleural_gap_mm
        self.bounds = np.stack([self.centre - reach, self.centre + reach], axis=1)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        c, e = self.centre, self.axes
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        u, v, w = (dx * e[i, 0] + dy * e[i, 1] + dz * e[i, 2] for i in range(3))
        return ellipsoid_sdf(u, v, w, *self.semi)


class Aorta:
    """Ascending limb right of the heart, a half-torus arch above it, descending limb beside the spine."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, heart: Heart) -> None:
        self.p, self.frame = p, frame
        c = heart.centre
        self.asc_xy = np.array([c[0] + p.ascending_aorta_right_of_heart_mm,
                                c[1] - p.ascending_aorta_behind_heart_mm])
        # on the vertebral body's outline grown by gap + radius, so it touches the spine without entering it
        angle, grow = math.radians(p.descending_aorta_angle_deg), p.descending_aorta_gap_mm + p.aorta_radius_mm
        self.arch_z = heart.top + p.arch_above_heart_mm
        spine_y = float(frame.spine_y(self.arch_z))
        self.desc_xy = np.array([-(p.vertebral_half_width_mm + grow) * math.cos(angle),
                                 spine_y + (p.vertebral_half_depth_mm + grow) * math.sin(angle)])
        self.asc_bottom_z = c[2]
        span = self.desc_xy - self.asc_xy
        self.arch_radius = 0.5 * float(np.linalg.norm(span))
        self.arch_mid = 0.5 * (self.asc_xy + self.desc_xy)
        self.arch_dir = span / max(2.0 * self.arch_radius, MIN_GRADIENT)
        reach = p.aorta_radius_mm + p.pleural_gap_mm
        lo = np.minimum(self.asc_xy, self.desc_xy) - reach
        hi = np.maximum(self.asc_xy, self.desc_xy) + reach
        self.bounds = np.array([[lo[0], hi[0]], [lo[1] - p.kyphosis_mm, hi[1] + p.kyphosis_mm],
                                [-np.inf, self.arch_z + self.arch_radius + reach]])

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, radius: float | None = None) -> np.ndarray:
        """Distance to the vessel wall; ``radius`` overrides the drawn radius (thin-tube rendering)."""
        r = self.p.aorta_radius_mm if radius is None else radius
        (ex, ey), big_r = self.arch_dir, self.arch_radius
        dx, dy = x - self.arch_mid[0], y - self.arch_mid[1]
        s = dx * ex + dy * ey  # along the arch plane: -R ascending, +R descending
        n = dy * ex - dx * ey  # across it
        h = z - self.arch_z
        arch = np.sqrt((np.sqrt(s * s + h * h) - big_r) ** 2 + n * n)
        beyond = np.maximum(self.asc_bottom_z - z, 0.0)
        ascending = np.sqrt((s + big_r) ** 2 + n * n + beyond * beyond)
        # the descending limb follows the spine's curve below the arch
        spine_y = self.frame.spine_y
        ddx = x - self.desc_xy[0]
        ddy = y - self.desc_xy[1] - (spine_y(z) - spine_y(self.arch_z))
        descending = np.sqrt(ddx * ddx + ddy * ddy)
        return np.where(h >= 0, arch, np.minimum(ascending, descending)) - r


class Airways:
    """Trachea in front of the spine down to the carina, main bronchi from there to the hila.

    ``hila[side]`` (side +1 right, -1 left) is where a main bronchus ends and that lung's vessel tree starts.
    """

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, heart: Heart) -> None:
        self.p = p
        zh = heart.centre[2] + p.hilum_above_heart_mm
        yc, _, _ = frame.cage(zh)
        self.hila = {side: np.array([side * (p.mediastinum_half_width_mm + p.hilum_lateral_mm),
                                     yc + p.hilum_y_offset_mm, zh]) for side in (+1, -1)}
        ahead = p.vertebral_half_depth_mm + p.trachea_gap_to_spine_mm + p.trachea_radius_mm
        zc = zh + p.carina_above_hilum_mm
        carina = np.array([p.trachea_x_mm, float(frame.spine_y(zc)) + ahead, zc])
        top = np.array([p.trachea_x_mm, float(frame.spine_y(BIG_MM)) + ahead, BIG_MM])
        self.tubes = [(top, carina, p.trachea_radius_mm)] + [
            (carina, self.hila[side], p.bronchus_radius_mm) for side in (+1, -1)]

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, wall: float = 0.0) -> np.ndarray:
        """Trachea and main bronchi as a union of tubes; ``wall`` grows them by the wall thickness."""
        dist = [(segment_distance(x, y, z, a, b)[0] - r - wall) for a, b, r in self.tubes]
        return np.minimum.reduce(dist)

    @property
    def bounds(self) -> np.ndarray:
        pts = np.array([pt for a, b, _ in self.tubes for pt in (a, b)])
        reach = max(r for _, _, r in self.tubes) + self.p.airway_wall_mm
        return np.stack([pts.min(axis=0) - reach, pts.max(axis=0) + reach], axis=1)


class Liver:
    """Right upper abdomen under the right hemidiaphragm, its left lobe just across the midline."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame) -> None:
        self.p, self.frame = p, frame
        self.bounds = np.array([[-p.liver_left_extent_mm, frame.cage_half_width0], [-np.inf, np.inf],
                                [-np.inf, frame.dome_z[+1]]])

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        p = self.p
        h, hx, hy = self.frame.dome(+1, x, y)
        under = height_field_sdf(z, h, hx, hy) + p.diaphragm_thickness_mm
        inside = self.frame.cage_sdf(x, y, z) + 0.5 * p.rib_thickness_mm
        return np.maximum(np.maximum(under, inside), -x - p.liver_left_extent_mm)
