"""One v2 patient put together and painted: ``render_chest_v2``, its HU and ``LABELS_V2``.

v1's parts (frame, heart, aorta, airways, spine, sternum, ribs, lungs) and painters run on the patient's
effective anatomy through a ``PoseGrid`` (the patient slightly rotated); the v2 parts add the body contour with
shoulders, arms and breasts, the table, the abdomen, the heart chambers and great vessels in the drawn contrast
phase, the shoulder girdle, texture and noise; the scan is then cut to its scanned slab.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from x2ct.data.ct_volume import CTVolume
from x2ct.data.phantom.assembly import (
    LABELS,
    Thorax,
    draw_nodule,
    draw_vessels,
    paint_airways,
    paint_aorta,
    paint_bones,
    paint_lungs,
)
from x2ct.data.phantom.config import stream
from x2ct.data.phantom.lungs import place_nodules
from x2ct.data.phantom.partial_volume import Grid, paint, plate_render, ramp, tube_render
from x2ct.data.phantom.v2.abdomen import Spleen, Stomach, WholeLiver
from x2ct.data.phantom.v2.config import PhantomV2Config
from x2ct.data.phantom.v2.contour import BodyContour
from x2ct.data.phantom.v2.contrast import enhancement
from x2ct.data.phantom.v2.mediastinum import CHAMBERS, GreatVessels, HeartChambers
from x2ct.data.phantom.v2.patient import PatientV2, draw_patient_v2
from x2ct.data.phantom.v2.pose import PoseGrid, rotation_matrix
from x2ct.data.phantom.v2.shapes import TubeChain
from x2ct.data.phantom.v2.shoulders import Arm
from x2ct.data.phantom.v2.table import Table
from x2ct.data.phantom.v2.texture import plane_wave_field
from x2ct.data.phantom.v2.truncation import lung_extent_z, scan_slab

LABELS_V2: dict[str, int] = {
    **LABELS,  # background 0 ... airway 8, same ids and meaning as v1 ("body": muscle and other soft tissue)
    "left_ventricle": 9,  # blood pools of the chambers; "heart" is the myocardium around them
    "right_ventricle": 10,
    "left_atrium": 11,
    "right_atrium": 12,
    "great_vessel": 13,  # arch branches, superior vena cava and brachiocephalic veins, pulmonary trunk and arteries
    "liver": 14,
    "stomach": 15,  # wall, contents and gas
    "spleen": 16,
    "table": 17,
    "breast": 18,
    "fat": 19,  # subcutaneous fat of the torso
    "clavicle": 20,
    "scapula": 21,
    "humerus": 22,
    "arm": 23,  # soft tissue of the arms (forearm bones are "bone")
}
SOFT_TISSUE_LABELS = ("body", "fat", "breast", "arm", "heart", "liver", "spleen", "stomach")  # textured
_SKIN_MM = 3.0  # skin and fat over the breast tissue


class ChestV2(Thorax):
    """One v2 patient's anatomy: v1's thorax built on the effective anatomy, then the v2 parts that hang on it."""

    def __init__(self, patient: PatientV2, config: PhantomV2Config) -> None:
        super().__init__(patient.p, config)
        self.patient = patient
        p = patient.p
        self.arms = {side: Arm(side, patient.arm_pose, p, self.frame) for side in (+1, -1)}
        self.contour = BodyContour(p, self.frame, self.arms, patient.sex == "female",
                                   float(self.heart.centre[2]) + p.breast_z_above_heart_mm)
        self.chambers = HeartChambers(p, self.heart)
        self.vessels = GreatVessels(p, self.frame, self.heart, self.aorta, self.airways, self.chambers, self.arms)
        self.liver = WholeLiver(p, self.frame)
        self.spleen = Spleen(p, self.frame)
        self.stomach = Stomach(p, self.frame, patient.stomach_gas)
        self.rotation = rotation_matrix(p.yaw_deg, p.roll_deg, p.pitch_deg)
        self.table = Table(p, self.frame, self.rotation) if patient.has_table else None


def render_chest_v2(seed: int, world: Grid, config: PhantomV2Config) -> tuple[CTVolume, np.ndarray]:
    """v2 patient ``seed`` drawn from ``config``, painted on ``world`` and cut to its scanned slab.

    Returns the CT, ``hu`` float32 (D', H, W) with D' = D unless the patient's scan is truncated, then only the
    scanned slab with ``origin`` moved so every structure keeps its world position, and labels uint8 (D', H, W),
    ids in ``LABELS_V2``. Metadata: seed, generator "v2", config, drawn ranges, choices (sex, habitus, arm pose,
    contrast phase, table, truncation), the HU of the enhanced structures, bone sizes, nodules (world mm),
    ``scan_range_z_mm`` and ``truncated``. ``generate_chest_phantom`` checks the arguments and makes the grid.
    """
    shape, spacing = world.shape, world.spacing

    patient = draw_patient_v2(seed, config)
    chest = ChestV2(patient, config)
    grid = PoseGrid(world, chest.rotation)
    hu, labels, nodules = _render(chest, grid, seed)

    recess_z, apex_z = lung_extent_z(chest.lungs.apex_z, chest.frame.dome_z, patient.p.dome_depth_mm,
                                     patient.p.dome_depth_ap_ratio)
    slab, scan_range = scan_slab(world.z, spacing[0], patient.truncated,
                                 recess_z - patient.p.scan_margin_below_recess_mm,
                                 apex_z + patient.p.scan_margin_above_apex_mm)
    hu, labels = np.ascontiguousarray(hu[slab]), np.ascontiguousarray(labels[slab])
    origin = (float(world.x[0]), float(world.y[0]), float(world.z[slab.start]))
    metadata = {
        "generator": "v2",
        "seed": seed,
        "config": asdict(config),
        "patient": patient.drawn,
        "choices": patient.choices(),
        "enhancement": enhancement(patient.contrast_phase, patient.p).as_dict(),
        "bones": {name: arm.sizes() for name, arm in (("right", chest.arms[+1]), ("left", chest.arms[-1]))},
        "nodules": nodules,
        "labels": dict(LABELS_V2),
        "truncated": bool(hu.shape[0] < shape[0]),
        "scan_range_z_mm": scan_range,
    }
    ct = CTVolume(hu=hu, spacing=spacing, origin=origin, source=f"phantom:chest-v2:seed={seed}", metadata=metadata)
    return ct, labels


def _render(chest: ChestV2, grid: PoseGrid, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paint every structure, outermost first; returns hu (D, H, W) float32, labels uint8, nodules."""
    p, config, w = chest.p, chest.config, grid.edge_mm
    enh = enhancement(chest.patient.contrast_phase, p)
    hu = np.full(grid.shape, config.air_hu, dtype=np.float32)
    lab = np.zeros(grid.shape, dtype=np.uint8)
    full, x, y, z = grid.full()

    if chest.table is not None:
        _paint_table(chest.table, grid, hu, lab)

    # body: skin and fat, breast tissue, muscle inside the fat layer
    contour = chest.contour
    torso, arm = contour.torso_sdf(x, y, z), contour.arm_sdf(x, y, z)
    core = contour.core_sdf(x, y, z, torso=torso, arm=arm)
    outline = contour.outline_sdf(x, y, z, core=core)
    body_frac = ramp(outline, w)
    paint(hu, full, body_frac, p.fat_hu)
    lab[outline < 0] = LABELS_V2["fat"]
    if contour.breasts:
        breast = contour.breast_sdf(x, y, z) + _SKIN_MM
        paint(hu, full, ramp(breast, w), p.breast_hu)
        lab[breast < 0] = LABELS_V2["breast"]
    muscle = core + p.fat_thickness_mm
    paint(hu, full, ramp(muscle, w), p.soft_tissue_hu)
    lab[muscle < 0] = LABELS_V2["body"]
    lab[(arm < 0) & (torso >= 0)] = LABELS_V2["arm"]

    _paint_abdomen(chest, grid, hu, lab, enh)
    lung_frac, lung_in, carved = paint_lungs(chest, grid, hu, lab)
    draw_vessels(chest, grid, hu, lab, lung_frac, lung_in, stream(seed, "pulmonary_vessels"), enh.pulmonary_tree)
    _paint_heart(chest, grid, hu, lab, carved, enh)
    paint_aorta(chest, grid, hu, lab, enh.systemic_arterial)
    vessels = chest.vessels
    for group, value in ((vessels.pulmonary, enh.right_heart), (vessels.arteries, enh.systemic_arterial),
                         (vessels.veins, enh.systemic_venous)):
        for tube in group.values():
            _paint_tube(tube, grid, hu, lab, value, LABELS_V2["great_vessel"])
    paint_airways(chest, grid, hu, lab)
    paint_bones(chest, grid, hu, lab, carved, chest.frame.cage_sdf(x, y, z))
    for arm_side in chest.arms.values():
        _paint_shoulder_girdle(arm_side, p, grid, hu, lab)

    nodules = place_nodules(chest.lungs, stream(seed, "nodules"), config)
    for nod in nodules:
        draw_nodule(nod, grid, hu, lab)
        nod["centre_mm"] = grid.to_world(nod["centre_mm"])

    _add_texture(chest, grid, hu, lab, lung_frac, seed)
    if config.noise_std_hu > 0:
        noise = stream(seed, "noise").normal(scale=config.noise_std_hu, size=grid.shape).astype(np.float32)
        hu += body_frac * noise
    return hu, lab, nodules


def _paint_table(table: Table, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray) -> None:
    """Mattress, shell and core, in world coordinates (the table does not turn with the patient)."""
    p, w, world = table.p, grid.edge_mm, grid.grid
    x, y = world.x[None, None, :], world.y[None, :, None]
    full = (slice(None),) * 3
    paint(hu, full, ramp(table.pad_sdf(x, y), w), p.table_pad_hu)
    shell = table.sdf(x, y)
    paint(hu, full, ramp(shell, w), p.table_shell_hu)
    paint(hu, full, ramp(table.sdf(x, y, inset=p.table_shell_mm), w), p.table_core_hu)
    lab[np.broadcast_to(shell < 0, lab.shape)] = LABELS_V2["table"]


def _paint_organ(sdf_fn, bounds, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray, value: float,
                 label: int | None, scale: float = 1.0):
    """Paint one SDF inside its bounds; returns (slices, coordinates, sdf) for follow-up painting, or None."""
    w = grid.edge_mm
    box = grid.box(*(np.asarray(bounds) + np.array([-w, w])))
    if box is None:
        return None
    sl, bx, by, bz = box
    sdf = sdf_fn(bx, by, bz)
    paint(hu, sl, ramp(sdf, w) * scale, value)
    if label is not None:
        lab[sl][sdf < 0] = label
    return sl, (bx, by, bz), sdf


def _paint_abdomen(chest: ChestV2, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray, enh) -> None:
    p, w = chest.p, grid.edge_mm
    stomach = _paint_organ(chest.stomach.sdf, chest.stomach.bounds, grid, hu, lab, p.soft_tissue_hu,
                           LABELS_V2["stomach"])
    if stomach is not None:
        sl, (bx, by, bz), sdf = stomach
        paint(hu, sl, ramp(sdf + 3.0, w), p.stomach_contents_hu)
        paint(hu, sl, ramp(chest.stomach.gas_sdf(bx, by, bz, sdf), w), chest.config.air_hu)
    _paint_organ(chest.spleen.sdf, chest.spleen.bounds, grid, hu, lab, enh.spleen, LABELS_V2["spleen"])
    _paint_organ(chest.liver.sdf, chest.liver.bounds, grid, hu, lab, enh.liver, LABELS_V2["liver"])


def _paint_heart(chest: ChestV2, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray, carved: dict, enh) -> None:
    """Pericardial fat, myocardium, then the chambers' blood (left heart arterial, right heart venous side)."""
    if "heart" not in carved:
        return
    p, w = chest.p, grid.edge_mm
    sl, heart = carved["heart"]
    paint(hu, sl, ramp(heart - p.pericardial_fat_mm, w), p.fat_hu)
    paint(hu, sl, ramp(heart, w), enh.myocardium)
    lab[sl][heart < 0] = LABELS_V2["heart"]
    _, bx, by, bz = grid.box(*(chest.heart.bounds + np.array([-w, w])))  # the box ``carved`` was cut from
    for name in CHAMBERS:
        blood = enh.systemic_arterial if name.startswith("left") else enh.right_heart
        chamber = chest.chambers.sdf(name, bx, by, bz, heart)
        paint(hu, sl, ramp(chamber, w), blood)
        lab[sl][chamber < 0] = LABELS_V2[name]


def _paint_tube(tube: TubeChain, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray, value: float,
                label: int) -> None:
    """A tube drawn to hold its true cross-section of material on any grid (``tube_render``)."""
    drawn, scale = tube_render(tube.radius, grid.edge_mm)
    found = _paint_organ(lambda x, y, z: tube.sdf(x, y, z, radius=float(drawn)), tube.bounds, grid, hu, lab,
                         value, None, float(scale))
    if found is not None:
        sl, _, sdf = found
        lab[sl][sdf + float(drawn) - tube.radius < 0] = label


def _paint_shoulder_girdle(arm: Arm, p, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray) -> None:
    """Clavicle, scapula (blade, spine, glenoid), humerus with cortex and marrow, forearm bones."""
    w = grid.edge_mm
    _paint_tube(arm.clavicle, grid, hu, lab, p.rib_hu, LABELS_V2["clavicle"])
    drawn, scale = plate_render(arm.scapula.thickness, w)
    found = _paint_organ(lambda x, y, z: arm.scapula.sdf(x, y, z, thickness=drawn), arm.scapula.bounds, grid,
                         hu, lab, p.rib_hu, None, scale)
    if found is not None:
        sl, coords, sdf = found
        lab[sl][arm.scapula.sdf(*coords) < 0] = LABELS_V2["scapula"]
    _paint_tube(arm.scapula_spine, grid, hu, lab, p.rib_hu, LABELS_V2["scapula"])
    _paint_organ(arm.glenoid.sdf, arm.glenoid.bounds, grid, hu, lab, p.rib_hu, LABELS_V2["scapula"])
    for shape in (arm.humeral_head, arm.humerus):
        found = _paint_organ(shape.sdf, shape.bounds, grid, hu, lab, p.cortical_bone_hu, LABELS_V2["humerus"])
        if found is not None:
            sl, _, sdf = found
            paint(hu, sl, ramp(sdf + p.cortical_thickness_mm, w), p.cancellous_bone_hu)
    for bone in arm.forearm_bones:
        _paint_tube(bone, grid, hu, lab, p.rib_hu, LABELS_V2["bone"])


def _add_texture(chest: ChestV2, grid: PoseGrid, hu: np.ndarray, lab: np.ndarray, lung_frac: np.ndarray,
                 seed: int) -> None:
    """Correlated HU variation inside soft tissue organs and in the lung parenchyma (world-fixed fields)."""
    p, config, world = chest.p, chest.config, grid.grid
    axes = (world.z, world.y, world.x)
    soft = np.isin(lab, [LABELS_V2[name] for name in SOFT_TISSUE_LABELS])
    field = plane_wave_field(stream(seed, "soft_texture"), axes, world.spacing, p.soft_texture_wavelength_mm,
                             config.texture_waves)
    hu[soft] += p.soft_texture_hu * field[soft]
    field = plane_wave_field(stream(seed, "lung_texture"), axes, world.spacing, p.lung_texture_wavelength_mm,
                             config.texture_waves)
    lung = lab == LABELS_V2["lung"]
    hu[lung] += p.lung_texture_hu * (field[lung] * lung_frac[lung])

