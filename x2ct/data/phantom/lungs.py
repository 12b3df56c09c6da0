"""The lungs, their pulmonary vessel trees and nodules.

Each lung fills the rib cage between the mediastinum, the apex above the first rib and its hemidiaphragm, carved
by the heart, aorta and vertebral column; all as SDFs in RAS mm (negative inside). The vessel trees are tapered
segments branching from each hilum; nodules are spheres placed inside the lungs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.config import PhantomConfig
from x2ct.data.phantom.organs import Aorta, Heart
from x2ct.data.phantom.sdf import MIN_GRADIENT, height_field_sdf
from x2ct.data.phantom.skeleton import Spine

# Lobar trunks leaving each hilum, as (lateral, anterior, superior) directions before per-patient jitter:
# apical, anterior-upper, posterior-upper, lateral, anterior-basal, lateral-basal, posterior-basal.
_TRUNK_DIRECTIONS = np.array(
    [
        (0.2, 0.1, 1.0),
        (0.5, 0.6, 0.5),
        (0.5, -0.5, 0.6),
        (1.0, 0.0, 0.0),
        (0.5, 0.7, -0.4),
        (0.6, -0.3, -0.8),
        (0.2, -0.7, -0.8),
    ]
)
# Per-branch variation of the vessel trees around the patient's drawn values, as (low, high) factors.
_TRUNK_LENGTH_SPREAD = (0.8, 1.2)
_BRANCH_LENGTH_SPREAD = (0.85, 1.15)
_BRANCH_ANGLE_SPREAD = (0.7, 1.3)


class Lungs:
    """Both lungs (side +1 right, -1 left), with the structures carved out of them and a centre each."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, heart: Heart, aorta: Aorta, spine: Spine) -> None:
        self.p, self.frame = p, frame
        self.apex_z = p.first_rib_z_mm + p.lung_apex_above_first_rib_mm
        # name -> (sdf function, margin mm kept free around it, its bounding box)
        self.exclusions: dict[str, tuple[Callable, float, np.ndarray]] = {
            "heart": (heart.sdf, p.pericardial_fat_mm + p.pleural_gap_mm, heart.bounds),
            "aorta": (aorta.sdf, p.pleural_gap_mm, aorta.bounds),
            "column": (spine.column_sdf, p.pleural_gap_mm, spine.column_bounds),
        }
        # centre of each lung, which the vessel trees are steered toward
        zm = 0.5 * (self.apex_z + frame.dome_z[+1])
        ym, am, _ = frame.cage(zm)
        self.centres = {side: np.array([side * 0.5 * (p.mediastinum_half_width_mm + am), ym, zm])
                        for side in (+1, -1)}

    def base_sdf(self, side: int, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """One lung before the heart, aorta and spine are carved out."""
        p, frame = self.p, self.frame
        yc, _, b = frame.cage(z)
        cavity = frame.cage_sdf(x, y, z) + frame.lung_inset
        border = p.mediastinum_half_width_mm + (p.mediastinum_left_shift_mm if side < 0 else 0.0)
        medial = border + p.mediastinum_widening_mm * ((yc + b - y) / (2 * b)) ** 2 - side * x
        h, hx, hy = frame.dome(side, x, y)
        above_diaphragm = -height_field_sdf(z, h, hx, hy)
        yc, a, _ = frame.cage(p.first_rib_z_mm)  # apical dome: centred between mediastinum and inlet wall
        xa = side * 0.5 * (p.mediastinum_half_width_mm + a - frame.lung_inset)
        dx, dy = x - xa, y - yc
        k = 0.5 / p.lung_apex_radius_mm
        below_apex = height_field_sdf(z, self.apex_z - k * (dx * dx + dy * dy), -2 * k * dx, -2 * k * dy)
        return np.maximum(np.maximum(cavity, medial), np.maximum(above_diaphragm, below_apex))

    def sdf_points(self, side: int, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Lung SDF at arbitrary points (N,), exclusions included: for placing nodules and pruning vessels."""
        sdf = self.base_sdf(side, x, y, z)
        for fn, margin, _ in self.exclusions.values():
            sdf = np.maximum(sdf, margin - fn(x, y, z))
        return sdf

    def bounds(self, side: int, margin: float) -> tuple[tuple[float, float], ...]:
        """Box (x, y, z limits in mm) that holds one lung, grown by ``margin``."""
        p, frame = self.p, self.frame
        x_lo, x_hi = p.mediastinum_half_width_mm - margin, frame.cage_half_width0 + margin
        xlim = (x_lo, x_hi) if side > 0 else (-x_hi, -x_lo)
        y_lo = frame.y_spine0 - p.cage_behind_spine_mm - margin
        z_lo = frame.dome_z[side] - (1.0 + p.dome_depth_ap_ratio) * p.dome_depth_mm - margin
        return xlim, (y_lo, frame.cage_front0 + margin), (z_lo, self.apex_z + margin)


def vessel_segments(
    lungs: Lungs, hila: dict[int, np.ndarray], config: PhantomConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pulmonary vessel trees as tapered segments (start (N, 3), end (N, 3), r_start (N,), r_end (N,)), mm.

    Each lobar trunk leaves the hilum, then every branch that ends inside its lung forks in two, rotated by the
    branch angle in a random plane and pulled toward the lung's centre, shorter and thinner by the configured
    ratios.
    """
    p = lungs.p
    out: list[tuple[np.ndarray, ...]] = []
    steer = config.vessel_steering
    for side in (+1, -1):
        hilum, centre = hila[side], lungs.centres[side]
        dirs = _TRUNK_DIRECTIONS * np.array([side, 1.0, 1.0])
        dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs = dirs + _jitter(rng, dirs.shape, config.vessel_direction_jitter)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        n = len(dirs)
        start = np.repeat(hilum[None], n, axis=0)
        length = p.vessel_root_length_mm * rng.uniform(*_TRUNK_LENGTH_SPREAD, n)
        radius = np.full(n, p.vessel_root_radius_mm)
        for _ in range(config.vessel_generations):
            end = start + dirs * length[:, None]
            r_end = radius * p.vessel_radius_ratio
            out.append((start, end, radius, r_end))
            alive = lungs.sdf_points(side, end[:, 0], end[:, 1], end[:, 2]) < 0
            start, dirs, length, radius = end[alive], dirs[alive], length[alive], r_end[alive]
            if len(start) == 0:
                break
            perp = np.cross(dirs, rng.normal(size=dirs.shape))
            perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), MIN_GRADIENT)
            m = len(dirs)
            angle = np.radians(p.vessel_branch_angle_deg) * rng.uniform(*_BRANCH_ANGLE_SPREAD, (2, m, 1))
            inward = centre - start
            inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), MIN_GRADIENT)
            dirs = np.concatenate([np.cos(angle[0]) * dirs + np.sin(angle[0]) * perp + steer * inward,
                                   np.cos(angle[1]) * dirs - np.sin(angle[1]) * perp + steer * inward])
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            start = np.concatenate([start, start])
            spread = rng.uniform(*_BRANCH_LENGTH_SPREAD, 2 * m)
            length = np.concatenate([length, length]) * p.vessel_length_ratio * spread
            radius = np.concatenate([radius, radius])
    if not out:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))


def _jitter(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return rng.normal(scale=scale, size=shape) if scale > 0 else np.zeros(shape)


def place_nodules(lungs: Lungs, rng: np.random.Generator, config: PhantomConfig) -> list[dict]:
    """Nodule centres drawn uniformly in the lungs, each with clearance from the lung surface and each other."""
    lo, hi = config.nodule_count
    count = int(rng.integers(lo, hi + 1))
    bounds = np.array([lungs.bounds(side, 0.0) for side in (+1, -1)])  # (side, axis, lo/hi)
    box_lo, box_hi = bounds[:, :, 0].min(axis=0), bounds[:, :, 1].max(axis=0)
    nodules: list[dict] = []
    attempts, batch = 0, 512
    while len(nodules) < count:
        attempts += 1
        if attempts > 50:
            raise ValueError(f"could not place {count} nodules with nodule_radius_mm={config.nodule_radius_mm} "
                             f"and nodule_clearance_mm={config.nodule_clearance_mm} inside the lungs")
        radius = float(rng.uniform(*config.nodule_radius_mm))
        hu = float(rng.uniform(*config.nodule_hu))
        pts = rng.uniform(box_lo, box_hi, size=(batch, 3))
        sdf = {s: lungs.sdf_points(s, pts[:, 0], pts[:, 1], pts[:, 2]) for s in (1, -1)}
        ok = np.minimum(sdf[1], sdf[-1]) < -(radius + config.nodule_clearance_mm)
        for other in nodules:
            gap = np.linalg.norm(pts - np.array(other["centre_mm"]), axis=1)
            ok &= gap > radius + other["radius_mm"] + config.nodule_clearance_mm
        hits = np.flatnonzero(ok)
        if hits.size:
            c = pts[hits[0]]
            nodules.append({"centre_mm": [float(v) for v in c], "radius_mm": radius, "hu": hu,
                            "lung": "right" if sdf[1][hits[0]] < 0 else "left"})
    return nodules
