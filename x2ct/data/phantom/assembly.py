"""One v1 patient put together and painted on the voxel grid: ``render_chest``, its HU and ``LABELS``.

The parts (``body``, ``organs``, ``skeleton``, ``lungs``) are SDFs in RAS mm centred on the volume centre; here
they are sampled on the grid (D, H, W) = (z, y, x) with partial volume, painted outermost first, each with its
HU drawn from ``PhantomConfig`` and its label id from ``LABELS``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np

from x2ct.data.ct_volume import CTVolume
from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.config import PhantomConfig, draw_patient, stream
from x2ct.data.phantom.lungs import Lungs, place_nodules, vessel_segments
from x2ct.data.phantom.organs import Airways, Aorta, Heart, Liver
from x2ct.data.phantom.partial_volume import Grid, paint, ramp, sphere_render, tube_render
from x2ct.data.phantom.sdf import BIG_MM, segment_distance
from x2ct.data.phantom.skeleton import Ribs, Spine, Sternum

LABELS: dict[str, int] = {
    "background": 0,  # air outside the body
    "body": 1,  # soft tissue, fat, liver, cartilage, discs, spinal canal
    "lung": 2,  # aerated lung parenchyma (both lungs)
    "heart": 3,
    "bone": 4,  # vertebrae, ribs, sternum
    "aorta": 5,
    "pulmonary_vessel": 6,  # vessels inside the lungs
    "nodule": 7,
    "airway": 8,  # trachea and main bronchi, lumen and wall
}


class Thorax:
    """The parts every phantom version builds, from the drawn parameters ``p`` in dependency order: frame, heart,
    aorta, airways, spine, sternum, ribs and lungs. The painters here take any ``Thorax``."""

    def __init__(self, p: SimpleNamespace, config: PhantomConfig) -> None:
        self.p, self.config = p, config
        self.frame = BodyFrame(p)
        self.heart = Heart(p, self.frame)
        self.aorta = Aorta(p, self.frame, self.heart)
        self.airways = Airways(p, self.frame, self.heart)
        self.spine = Spine(p, self.frame)
        self.sternum = Sternum(p, self.frame)
        self.ribs = Ribs(p, config, self.frame)
        self.lungs = Lungs(p, self.frame, self.heart, self.aorta, self.spine)


class Chest(Thorax):
    """One v1 patient's anatomy: the thorax and the liver under the right hemidiaphragm."""

    def __init__(self, p: SimpleNamespace, config: PhantomConfig) -> None:
        super().__init__(p, config)
        self.liver = Liver(p, self.frame)


def render_chest(seed: int, grid: Grid, config: PhantomConfig) -> tuple[CTVolume, np.ndarray]:
    """v1 patient ``seed`` drawn from ``config`` and painted on ``grid``: the CT (``hu`` float32 (D, H, W), metadata:
    seed, config, drawn patient parameters, nodules with RAS centres in mm, label names) and labels uint8
    (D, H, W), ids in ``LABELS``. ``generate_chest_phantom`` checks the arguments and makes the grid."""
    patient = draw_patient(seed, config)
    chest = Chest(SimpleNamespace(**patient), config)
    hu, labels, nodules = _render(chest, grid, seed)

    origin = (float(grid.x[0]), float(grid.y[0]), float(grid.z[0]))
    metadata = {
        "generator": "x2ct.data.phantom.generate_chest_phantom",
        "seed": seed,
        "config": asdict(config),
        "patient": patient,
        "nodules": nodules,
        "labels": dict(LABELS),
    }
    ct = CTVolume(hu=hu, spacing=grid.spacing, origin=origin, source=f"phantom:chest:seed={seed}", metadata=metadata)
    return ct, labels


def _render(chest: Chest, grid: Grid, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paint every structure in order, outermost first; returns hu (D, H, W) float32, labels uint8, nodules."""
    p, config, w = chest.p, chest.config, grid.edge_mm
    hu = np.full(grid.shape, config.air_hu, dtype=np.float32)
    lab = np.zeros(grid.shape, dtype=np.uint8)
    full, x, y, z = grid.full()

    # body: fat outline, then muscle inside the fat layer
    body = chest.frame.body_sdf(x, y, z)
    body_frac = ramp(body, w)
    paint(hu, full, body_frac, p.fat_hu)
    paint(hu, full, ramp(body + p.fat_thickness_mm, w), p.soft_tissue_hu)
    lab[body < 0] = LABELS["body"]
    cage = chest.frame.cage_sdf(x, y, z)

    box = grid.box(*(chest.liver.bounds + np.array([-w, w])))
    if box is not None:
        sl, bx, by, bz = box
        paint(hu, sl, ramp(chest.liver.sdf(bx, by, bz), w), p.liver_hu)

    lung_frac, lung_in, carved = paint_lungs(chest, grid, hu, lab)
    draw_vessels(chest, grid, hu, lab, lung_frac, lung_in, stream(seed, "pulmonary_vessels"), p.blood_hu)

    if "heart" in carved:
        sl, heart = carved["heart"]
        paint(hu, sl, ramp(heart - p.pericardial_fat_mm, w), p.fat_hu)
        paint(hu, sl, ramp(heart, w), p.heart_hu)
        lab[sl][heart < 0] = LABELS["heart"]

    paint_aorta(chest, grid, hu, lab, p.blood_hu)
    paint_airways(chest, grid, hu, lab)
    paint_bones(chest, grid, hu, lab, carved, cage)

    nodules = place_nodules(chest.lungs, stream(seed, "nodules"), config)
    for nod in nodules:
        draw_nodule(nod, grid, hu, lab)

    if config.noise_std_hu > 0:
        noise = stream(seed, "noise").normal(scale=config.noise_std_hu, size=grid.shape).astype(np.float32)
        hu += body_frac * noise
    return hu, lab, nodules


def paint_lungs(chest: Thorax, grid: Grid, hu: np.ndarray, lab: np.ndarray):
    """Both lungs, carved by the heart, aorta and vertebral column.

    Returns (lung fraction (D, H, W), lung label mask (D, H, W), carved: name -> (slices, sdf in that box)); the
    carved SDFs are reused to paint the heart and the discs.
    """
    p, w = chest.p, grid.edge_mm
    lung = np.full(grid.shape, BIG_MM, dtype=np.float32)
    for side in (+1, -1):
        box = grid.box(*chest.lungs.bounds(side, w))
        if box is not None:
            sl, bx, by, bz = box
            np.minimum(lung[sl], chest.lungs.base_sdf(side, bx, by, bz), out=lung[sl])
    carved = {}
    for name, (fn, margin, bounds) in chest.lungs.exclusions.items():
        box = grid.box(*(np.asarray(bounds) + np.array([-w, w])))
        if box is not None:
            sl, bx, by, bz = box
            carved[name] = (sl, fn(bx, by, bz))
            np.maximum(lung[sl], margin - carved[name][1], out=lung[sl])
    lung_frac = ramp(lung, w)
    paint(hu, (slice(None),) * 3, lung_frac, p.lung_hu)
    lung_in = lung < 0
    lab[lung_in] = LABELS["lung"]
    return lung_frac, lung_in, carved


def paint_aorta(chest: Thorax, grid: Grid, hu: np.ndarray, lab: np.ndarray, blood_hu: float) -> None:
    """Ascending aorta, arch and descending aorta, filled with blood of ``blood_hu``."""
    p, w = chest.p, grid.edge_mm
    box = grid.box(*(chest.aorta.bounds + np.array([-w, w])))
    if box is not None:
        sl, bx, by, bz = box
        drawn, _ = tube_render(p.aorta_radius_mm, w)
        paint(hu, sl, ramp(chest.aorta.sdf(bx, by, bz, radius=float(drawn)), w), blood_hu)
        lab[sl][chest.aorta.sdf(bx, by, bz) < 0] = LABELS["aorta"]


def paint_airways(chest: Thorax, grid: Grid, hu: np.ndarray, lab: np.ndarray) -> None:
    """Trachea and main bronchi: a soft-tissue wall around an air lumen."""
    p, w = chest.p, grid.edge_mm
    box = grid.box(*(chest.airways.bounds + np.array([-w, w])))
    if box is not None:
        sl, bx, by, bz = box
        wall = chest.airways.sdf(bx, by, bz, wall=p.airway_wall_mm)
        paint(hu, sl, ramp(wall, w), p.soft_tissue_hu)
        paint(hu, sl, ramp(chest.airways.sdf(bx, by, bz), w), chest.config.air_hu)
        lab[sl][wall < 0] = LABELS["airway"]


def paint_bones(chest: Thorax, grid: Grid, hu: np.ndarray, lab: np.ndarray, carved: dict,
                cage: np.ndarray) -> None:
    """Discs first, then each bone's cortex, then its marrow space; then ribs and costal cartilage."""
    p, w = chest.p, grid.edge_mm
    if "column" in carved:
        sl, column = carved["column"]
        paint(hu, sl, ramp(column, w), p.disc_hu)
    for bone_part in (chest.spine, chest.sternum):
        box = grid.box(*(bone_part.bounds + np.array([-w, w])))
        if box is not None:
            sl, bx, by, bz = box
            bone = bone_part.sdf(bx, by, bz)
            paint(hu, sl, ramp(bone, w), p.cortical_bone_hu)
            paint(hu, sl, ramp(bone + p.cortical_thickness_mm, w), p.cancellous_bone_hu)
            lab[sl][bone < 0] = LABELS["bone"]
    draw_ribs(chest, grid, hu, lab, cage)


def draw_vessels(chest: Thorax, grid: Grid, hu: np.ndarray, lab: np.ndarray, lung_frac: np.ndarray,
                 lung_in: np.ndarray, rng: np.random.Generator, blood_hu: float) -> None:
    """Pulmonary vessel trees: tapered tubes of ``blood_hu``, kept only inside the lungs."""
    w = grid.edge_mm
    starts, ends, r0s, r1s = vessel_segments(chest.lungs, chest.airways.hila, chest.config, rng)
    frac = np.zeros(grid.shape, dtype=np.float32)
    inside = np.zeros(grid.shape, dtype=bool)
    for a, b, r0, r1 in zip(starts, ends, r0s, r1s, strict=True):
        reach = max(r0, r1) + w
        box = grid.box((min(a[0], b[0]) - reach, max(a[0], b[0]) + reach),
                       (min(a[1], b[1]) - reach, max(a[1], b[1]) + reach),
                       (min(a[2], b[2]) - reach, max(a[2], b[2]) + reach))
        if box is None:
            continue
        sl, bx, by, bz = box
        dist, t = segment_distance(bx, by, bz, a, b)
        radius = r0 + t * (r1 - r0)
        drawn, scale = tube_render(radius, w)
        np.maximum(frac[sl], (ramp(dist - drawn, w) * scale).astype(np.float32), out=frac[sl])
        inside[sl] |= dist < radius
    frac *= lung_frac
    paint(hu, (slice(None),) * 3, frac, blood_hu)
    lab[inside & lung_in] = LABELS["pulmonary_vessel"]


def draw_ribs(chest: Thorax, grid: Grid, hu: np.ndarray, lab: np.ndarray, cage: np.ndarray) -> None:
    """Ribs and costal cartilage, evaluated only on voxels near the cage ellipse."""
    p, config, w = chest.p, chest.config, grid.edge_mm
    a, b = 0.5 * p.rib_thickness_mm, 0.5 * p.rib_height_mm
    # shrink both semi-axes so the ramp-drawn ellipse holds pi a b of bone (as tube_render for a circle)
    disc = (a + b) ** 2 - w * w / 3.0
    shrink = min(0.5 * ((a + b) - math.sqrt(max(disc, 0.0))), 0.5 * min(a, b))
    reach = a + w
    z_lo = p.first_rib_z_mm - (config.rib_count - 1) * p.vertebra_pitch_mm - p.rib_drop_mm - b - w
    box = grid.box((-np.inf, np.inf), (-np.inf, np.inf), (z_lo, p.first_rib_z_mm + b + w))
    if box is None:
        return
    (sz, _, _), _, _, _ = box
    near = np.abs(cage[sz]) < reach
    k, j, i = np.nonzero(near)
    k = k + sz.start
    x, y, z = grid.points(k, j, i)
    dr = cage[k, j, i]
    flat = np.ravel_multi_index((k, j, i), grid.shape)
    hu_flat, lab_flat = hu.reshape(-1), lab.reshape(-1)
    rib, cartilage, rib_true = chest.ribs.sdfs(x, y, z, dr, (a - shrink, b - shrink), (a, b))
    for sdf, value in ((cartilage, p.cartilage_hu), (rib, p.rib_hu)):
        frac = ramp(sdf, w)
        hu_flat[flat] += (frac * (value - hu_flat[flat])).astype(np.float32)
    lab_flat[flat[rib_true < 0]] = LABELS["bone"]


def draw_nodule(nodule: dict, grid: Grid, hu: np.ndarray, lab: np.ndarray) -> None:
    """A sphere; its label also claims the voxel nearest its centre, so no nodule vanishes on a coarse grid."""
    w = grid.edge_mm
    c, r = nodule["centre_mm"], nodule["radius_mm"]
    box = grid.box(*((ci - r - w, ci + r + w) for ci in c))
    if box is None:
        return
    sl, bx, by, bz = box
    dist = np.sqrt((bx - c[0]) ** 2 + (by - c[1]) ** 2 + (bz - c[2]) ** 2)
    drawn, scale = sphere_render(r, w)
    paint(hu, sl, ramp(dist - drawn, w) * scale, nodule["hu"])
    inside = dist < r
    nearest = np.unravel_index(int(dist.argmin()), dist.shape)
    if dist[nearest] <= 0.5 * math.hypot(*grid.spacing):  # the centre lies inside the grid
        inside[nearest] = True
    lab[sl][inside] = LABELS["nodule"]
