"""Procedural chest CT phantoms: the embedded default data set, so every pipeline runs with no download.

``generate_chest_phantom(seed)`` draws one synthetic patient, a chest in Hounsfield units from the lower neck
to the upper abdomen: body outline with subcutaneous fat, rib cage with costal cartilage, sternum, spine
(vertebral bodies, discs, neural arches, processes), lungs with branching pulmonary vessels, trachea and main
bronchi, heart in its fat layer, aortic arch and descending aorta, liver dome, and optional lung nodules. Every
size, position and density is drawn from a range in ``PhantomConfig``; ``LABELS`` names the label map's ids.

Why it is built this way:

- Anatomy is a set of signed distance functions (SDFs, mm, negative inside) in RAS world millimetres centred
  on the volume centre; only then is it sampled on the voxel grid. The same seed is the same patient on a 32^3
  or a 256^3 grid, and a 128^3 phantom block-averaged to 64^3 matches the 64^3 phantom.
- Partial volume: a voxel takes the fraction ``clip(0.5 - sdf / w, 0, 1)`` of a structure, with ``w`` one
  voxel: the exact coverage of a planar edge. Thin tubes (vessels, ribs) and small spheres (nodules) are drawn
  with a shrunken radius, or a reduced contrast when thinner than a voxel, so their total attenuation -- what a
  DRR integrates -- does not depend on the voxel size. Labels name the structure containing the voxel centre.
- Every anatomical parameter has its own random stream keyed by ``(seed, field name)``: overriding one range
  leaves every other draw of the same patient unchanged, so an ablation compares the same patients.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace

import numpy as np

from x2ct.data.ct_volume import CTVolume

Range = tuple[float, float]

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
_BIG_MM = 1.0e4  # "far outside" for SDFs of structures that are absent at a point
_MIN_GRADIENT = 1.0e-6  # guards divisions at the exact centre of an ellipse
_MIN_CAGE_SCALE = 0.05  # keeps the closed rib-cage ellipse above the apices non-degenerate
# Per-branch variation of the vessel trees around the patient's drawn values, as (low, high) factors.
_TRUNK_LENGTH_SPREAD = (0.8, 1.2)
_BRANCH_LENGTH_SPREAD = (0.85, 1.15)
_BRANCH_ANGLE_SPREAD = (0.7, 1.3)
_SPINOUS_DROP = 0.3  # the spinous process tip lies this fraction of a vertebral half-height below its root


@dataclass
class PhantomConfig:
    """Ranges from which each patient's anatomy is drawn, uniformly and independently per parameter.

    Fields typed ``Range`` are ``(low, high)``; ``low == high`` fixes the value. Positions are RAS mm relative to
    the volume centre (x: + toward the patient's right, y: + anterior, z: + superior), sizes are mm, densities
    HU. The defaults describe adult chests and give a field of view from the lower neck to the upper abdomen.
    """

    # --- grid and rendering
    fov_mm: tuple[float, float, float] = (300.0, 350.0, 350.0)  # (SI, AP, LR) = (D, H, W) when spacing not given
    edge_width_voxels: float = 1.0  # width of the partial-volume ramp at every edge, in voxels
    noise_std_hu: float = 0.0  # Gaussian noise inside the body; 0 keeps a noise-free ground truth
    air_hu: float = -1000.0

    # --- tissue densities (HU)
    soft_tissue_hu: Range = (30.0, 50.0)  # muscle, mediastinum, abdomen
    fat_hu: Range = (-120.0, -80.0)  # subcutaneous and epicardial fat
    liver_hu: Range = (50.0, 70.0)
    liver_left_extent_mm: Range = (20.0, 50.0)  # the left lobe reaches this far left of the midline
    lung_hu: Range = (-870.0, -830.0)  # aerated parenchyma
    blood_hu: Range = (35.0, 50.0)  # aorta and pulmonary vessels, no contrast
    heart_hu: Range = (30.0, 50.0)
    cortical_bone_hu: Range = (1000.0, 1300.0)  # cortex of vertebrae and sternum
    cancellous_bone_hu: Range = (350.0, 550.0)  # marrow space of vertebrae and sternum
    rib_hu: Range = (650.0, 900.0)  # ribs are thin: cortex and marrow in one value
    cartilage_hu: Range = (100.0, 200.0)  # costal cartilage
    disc_hu: Range = (70.0, 110.0)  # intervertebral discs

    # --- rib cage frame, wrapped in muscle and fat (which set the body outline)
    cage_half_width_mm: Range = (100.0, 125.0)  # LR semi-axis of the rib centreline at the widest level
    cage_depth_mm: Range = (135.0, 175.0)  # AP, sternum line to the posterior rib angles, at the widest level
    chest_wall_mm: Range = (12.0, 22.0)  # muscle between the fat and the rib centreline, front and sides
    back_muscle_mm: Range = (30.0, 45.0)  # muscle between the posterior rib angles and the fat of the back
    fat_thickness_mm: Range = (6.0, 25.0)  # subcutaneous fat
    body_center_y_mm: Range = (-5.0, 5.0)
    body_inlet_taper: Range = (0.05, 0.12)  # fractional shrink of the outline at the thoracic inlet
    thorax_widest_z_mm: Range = (-60.0, -30.0)  # level of the widest rib cage

    # --- rib cage
    first_rib_z_mm: Range = (95.0, 115.0)  # posterior end of the first rib: the thoracic inlet
    cage_inlet_width_ratio: Range = (0.45, 0.6)  # LR width of the cage at the inlet / at the widest level
    cage_inlet_depth_ratio: Range = (0.65, 0.8)  # AP depth of the cage at the inlet / at the widest level
    cage_behind_spine_mm: Range = (35.0, 45.0)  # posterior rib angle behind the vertebral body centre
    rib_count: int = 12  # pairs, top to bottom, one per thoracic vertebra
    sternal_rib_count: int = 10  # upper ribs whose cartilage reaches the sternum; the rest float
    rib_thickness_mm: Range = (5.0, 7.0)  # radial
    rib_height_mm: Range = (9.0, 13.0)  # vertical
    rib_drop_mm: Range = (45.0, 75.0)  # how far a rib's anterior end lies below its posterior end
    cartilage_length_mm: Range = (20.0, 35.0)  # first rib's costal cartilage, measured along x
    cartilage_growth_mm: Range = (4.0, 8.0)  # added per rib going down

    # --- sternum
    sternum_half_width_mm: Range = (14.0, 20.0)
    sternum_thickness_mm: Range = (10.0, 14.0)
    sternum_length_mm: Range = (150.0, 190.0)
    sternum_top_below_first_rib_mm: Range = (30.0, 50.0)  # sternal notch below the first rib's head

    # --- spine
    kyphosis_mm: Range = (0.0, 12.0)  # spine ends lie this much anterior of the mid-thoracic spine
    vertebra_pitch_mm: Range = (24.0, 29.0)  # vertebral body plus disc
    disc_fraction: Range = (0.18, 0.26)  # share of the pitch taken by the disc
    vertebral_half_width_mm: Range = (17.0, 23.0)
    vertebral_half_depth_mm: Range = (14.0, 18.0)
    endplate_sag_mm: Range = (1.5, 3.0)  # depth of the concave top and bottom of each vertebral body
    cortical_thickness_mm: Range = (1.2, 2.5)
    spinal_canal_radius_mm: Range = (7.0, 9.0)
    lamina_thickness_mm: Range = (4.0, 6.0)
    process_radius_mm: Range = (3.5, 5.0)  # spinous and transverse processes
    spinous_process_length_mm: Range = (25.0, 35.0)
    transverse_process_length_mm: Range = (22.0, 30.0)  # from the midline

    # --- lungs and diaphragm
    mediastinum_half_width_mm: Range = (10.0, 20.0)  # medial lung border from the midline, behind the sternum
    mediastinum_widening_mm: Range = (5.0, 20.0)  # added at the back of the cage (posterior mediastinum)
    mediastinum_left_shift_mm: Range = (0.0, 10.0)  # the left lung's medial border lies further out (heart)
    pleural_gap_mm: Range = (2.0, 5.0)  # lung surface to the inner rib surface and to the heart's fat
    lung_apex_above_first_rib_mm: Range = (15.0, 30.0)
    lung_apex_radius_mm: Range = (25.0, 40.0)  # curvature radius of the apical dome
    right_dome_z_mm: Range = (-60.0, -35.0)  # top of the right hemidiaphragm
    left_dome_drop_mm: Range = (10.0, 25.0)  # the left dome lies lower
    dome_depth_mm: Range = (40.0, 65.0)  # dome top down to the lateral costophrenic angle
    dome_depth_ap_ratio: Range = (1.1, 1.4)  # drop to the posterior recess / drop to the lateral angle
    dome_centre_lateral_fraction: Range = (0.4, 0.5)  # dome top from the midline / cage half-width
    dome_centre_anterior_fraction: Range = (0.1, 0.25)  # dome top anterior of the cage centre / half-depth
    diaphragm_thickness_mm: Range = (3.0, 6.0)

    # --- heart (an ellipsoid whose long axis points from the base to the apex)
    heart_half_length_mm: Range = (55.0, 68.0)
    heart_half_width_mm: Range = (38.0, 46.0)
    heart_half_depth_mm: Range = (28.0, 38.0)
    heart_x_mm: Range = (-35.0, -18.0)  # centre, toward the patient's left (-x)
    heart_above_left_dome_mm: Range = (30.0, 45.0)  # centre height above the left dome top
    heart_gap_to_cage_mm: Range = (5.0, 15.0)  # anterior heart surface behind the sternum line
    heart_axis_yaw_deg: Range = (30.0, 50.0)  # long axis, from anterior toward the patient's left
    heart_axis_pitch_deg: Range = (20.0, 40.0)  # long axis, below the horizontal
    pericardial_fat_mm: Range = (2.0, 6.0)

    # --- aorta (ascending from the heart, arch, descending left of the spine)
    aorta_radius_mm: Range = (10.0, 14.0)
    ascending_aorta_right_of_heart_mm: Range = (25.0, 40.0)
    ascending_aorta_behind_heart_mm: Range = (0.0, 15.0)
    arch_above_heart_mm: Range = (5.0, 20.0)  # arch centre above the heart's top
    descending_aorta_gap_mm: Range = (1.0, 5.0)  # between the descending aorta and the vertebral body
    descending_aorta_angle_deg: Range = (15.0, 45.0)  # its direction from the spine: left, turned forward

    # --- airways: trachea down to the carina, main bronchi to the hila
    trachea_radius_mm: Range = (7.0, 10.0)
    trachea_x_mm: Range = (0.0, 6.0)  # slightly right of the midline
    trachea_gap_to_spine_mm: Range = (8.0, 16.0)  # the oesophagus lies between trachea and vertebral bodies
    carina_above_hilum_mm: Range = (15.0, 25.0)
    bronchus_radius_mm: Range = (5.0, 7.5)
    airway_wall_mm: Range = (1.5, 2.5)

    # --- pulmonary vessels (a branching tree from each hilum)
    hilum_above_heart_mm: Range = (40.0, 55.0)  # above the heart centre
    hilum_lateral_mm: Range = (5.0, 15.0)  # beyond the mediastinal lung border
    hilum_y_offset_mm: Range = (-20.0, 0.0)  # relative to the cage centre
    vessel_root_radius_mm: Range = (5.0, 7.0)
    vessel_root_length_mm: Range = (35.0, 50.0)
    vessel_radius_ratio: Range = (0.7, 0.78)  # child / parent
    vessel_length_ratio: Range = (0.72, 0.82)  # child / parent
    vessel_branch_angle_deg: Range = (25.0, 40.0)
    vessel_generations: int = 6  # segments from a hilum to a leaf
    vessel_direction_jitter: float = 0.25  # random tilt of each lobar trunk (unit-vector noise)
    vessel_steering: float = 0.4  # pull of each fork toward its lung's centre, keeping the tree inside

    # --- nodules (spheres inside the lungs)
    nodule_count: tuple[int, int] = (0, 3)  # inclusive range of nodules per patient; (n, n) for exactly n
    nodule_radius_mm: Range = (3.0, 10.0)
    nodule_hu: Range = (0.0, 100.0)
    nodule_clearance_mm: float = 3.0  # lung tissue kept around each nodule and between nodules

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "Range":
                setattr(self, f.name, _check_range(f.name, value))
        self.fov_mm = _check_positive_triple("PhantomConfig.fov_mm", self.fov_mm)
        self.nodule_count = _check_count_range("nodule_count", self.nodule_count)
        for name, low in (("rib_count", 0), ("sternal_rib_count", 0), ("vessel_generations", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"PhantomConfig.{name}: expected an integer >= {low}, got {value!r}")
        for name in ("edge_width_voxels", "noise_std_hu", "nodule_clearance_mm", "vessel_direction_jitter",
                     "vessel_steering"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (name == "edge_width_voxels" and value == 0):
                raise ValueError(f"PhantomConfig.{name}: expected a finite value >= 0 (> 0 for edge width), "
                                 f"got {value!r}")
            setattr(self, name, value)


def _check_range(name: str, value) -> Range:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"PhantomConfig.{name}: expected a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"PhantomConfig.{name}: expected finite (low, high) with low <= high, got {value!r}")
    return (lo, hi)


def _check_count_range(name: str, value) -> tuple[int, int]:
    try:
        lo, hi = value
        ok = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (lo, hi)) and 0 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"PhantomConfig.{name}: expected integers (low, high) with 0 <= low <= high, "
                         f"got {value!r}")
    return (int(lo), int(hi))


def _check_positive_triple(what: str, value) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or not all(math.isfinite(v) and v > 0 for v in triple):
        raise ValueError(f"{what}: expected 3 positive mm values (D, H, W), got {value!r}")
    return triple


def draw_patient(seed: int, config: PhantomConfig) -> dict[str, float]:
    """One value per ``Range`` field, each from its own stream ``default_rng([seed, crc32(name)])``."""
    patient = {}
    for f in fields(config):
        if f.type == "Range":
            lo, hi = getattr(config, f.name)
            u = np.random.default_rng([seed, zlib.crc32(f.name.encode())]).random()
            patient[f.name] = float(lo + u * (hi - lo))
    return patient


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# ----------------------------------------------------------------------------------------------------------
# SDF primitives. Arguments broadcast: the grid passes x (1, 1, W), y (1, H, 1), z (D, 1, 1); points pass (N,).


def _ramp(sdf: np.ndarray, width: float) -> np.ndarray:
    """Voxel fraction inside a structure whose edge is locally planar (box-filtered step)."""
    return np.clip(0.5 - sdf / width, 0.0, 1.0)


def _ellipse_sdf(dx, dy, a, b):
    """Approximate signed distance to the ellipse (dx/a)^2 + (dy/b)^2 = 1: the implicit value over its gradient.

    Exact to first order near the boundary, which is all the partial-volume ramp needs.
    """
    ux, uy = dx / a, dy / b
    q = np.sqrt(ux * ux + uy * uy)
    g = np.sqrt((ux / a) ** 2 + (uy / b) ** 2)  # q * |grad q|
    grad = np.clip(g / np.maximum(q, _MIN_GRADIENT), 1.0 / np.maximum(a, b), 1.0 / np.minimum(a, b))
    return (q - 1.0) / grad


def _flat_back_sdf(dx, dy, a, b):
    """As ``_ellipse_sdf``, but the posterior half (dy < 0) is the superellipse |dx/a|^3 + |dy/b|^3 = 1.

    Torso and rib cage are flatter across the back, so the lungs reach far back on both sides of the spine.
    """
    ux, uy = np.abs(dx / a), np.abs(dy / b)
    ux2, uy2 = ux * ux, uy * uy
    q = np.cbrt(ux2 * ux + uy2 * uy)
    g = np.sqrt((ux2 / a) ** 2 + (uy2 / b) ** 2)  # q^2 * |grad q|
    grad = np.clip(g / np.maximum(q * q, _MIN_GRADIENT), 1.0 / np.maximum(a, b), 1.0 / np.minimum(a, b))
    return np.where(dy < 0, (q - 1.0) / grad, _ellipse_sdf(dx, dy, a, b))


def _ellipsoid_sdf(u, v, w, a, b, c):
    """Approximate signed distance to the ellipsoid with semi-axes (a, b, c) along local axes (u, v, w)."""
    pu, pv, pw = u / a, v / b, w / c
    q = np.sqrt(pu * pu + pv * pv + pw * pw)
    g = np.sqrt((pu / a) ** 2 + (pv / b) ** 2 + (pw / c) ** 2)
    grad = np.clip(g / np.maximum(q, _MIN_GRADIENT), 1.0 / max(a, b, c), 1.0 / min(a, b, c))
    return (q - 1.0) / grad


def _height_field_sdf(z, height, dh_dx, dh_dy):
    """Signed distance to the surface z = height(x, y), negative below it."""
    return (z - height) / np.sqrt(1.0 + dh_dx * dh_dx + dh_dy * dh_dy)


def _segment_distance(px, py, pz, a, b):
    """Distance from points to segment a-b (3-vectors) and the segment parameter t in [0, 1] of the nearest point."""
    ab = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    dx, dy, dz = px - a[0], py - a[1], pz - a[2]
    t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / max(float(ab @ ab), _MIN_GRADIENT), 0.0, 1.0)
    ex, ey, ez = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
    return np.sqrt(ex * ex + ey * ey + ez * ez), t


def _tube_render(radius, width):
    """(radius to draw, contrast scale) so a ramp-drawn tube holds exactly pi r^2 of material per unit length.

    A ramp of width w around a circle of radius r' covers pi (r'^2 + w^2 / 12), so r' = sqrt(r^2 - w^2 / 12).
    Below r' = w / 2 the ramp's peak would not reach 1: such tubes are drawn at r' = w / 2, contrast scaled.
    """
    radius = np.asarray(radius, dtype=np.float64)
    thick = radius * radius >= width * width / 3.0
    drawn = np.where(thick, np.sqrt(np.maximum(radius * radius - width * width / 12.0, 0.0)), 0.5 * width)
    scale = np.where(thick, 1.0, 3.0 * radius * radius / (width * width))
    return drawn, scale


def _sphere_render(radius: float, width: float) -> tuple[float, float]:
    """As ``_tube_render`` for a sphere: the ramp covers 4/3 pi (r'^3 + r' w^2 / 4), solved for r'."""
    if radius**3 <= width**3 / 4.0:
        return 0.5 * width, 4.0 * radius**3 / width**3
    p, q = width * width / 4.0, radius**3  # r'^3 + p r' - q = 0, one real root (Cardano)
    s = math.sqrt(q * q / 4.0 + p**3 / 27.0)
    return float(np.cbrt(q / 2.0 + s) + np.cbrt(q / 2.0 - s)), 1.0


# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in RAS mm: x (W,), y (H,), z (D,) ascending; spacing (D, H, W); ramp width."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float]
    edge_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.size, self.y.size, self.x.size)

    def box(self, xlim, ylim, zlim):
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
        return self.box((-np.inf, np.inf), (-np.inf, np.inf), (-np.inf, np.inf))


def _paint(hu: np.ndarray, sl, frac: np.ndarray, value: float) -> None:
    """Blend ``value`` over what is already there, by the voxel fraction ``frac`` (painter's order)."""
    region = hu[sl]
    region += frac * (value - region)


class _Chest:
    """One patient's anatomy as SDFs in RAS mm, built from the drawn parameters ``p``."""

    def __init__(self, p: SimpleNamespace, config: PhantomConfig) -> None:
        self.p, self.config = p, config
        self.cage_half_width0 = p.cage_half_width_mm
        self.body_half_width = p.cage_half_width_mm + p.chest_wall_mm + p.fat_thickness_mm
        self.body_half_depth = 0.5 * (p.cage_depth_mm + p.chest_wall_mm + p.back_muscle_mm) + p.fat_thickness_mm
        self.cage_front0 = p.body_center_y_mm + self.body_half_depth - p.fat_thickness_mm - p.chest_wall_mm
        self.y_spine0 = self.cage_front0 - p.cage_depth_mm + p.cage_behind_spine_mm
        self.lung_inset = 0.5 * p.rib_thickness_mm + p.pleural_gap_mm
        self._check_layout()
        self.apex_z = p.first_rib_z_mm + p.lung_apex_above_first_rib_mm
        self.dome_z = {+1: p.right_dome_z_mm, -1: p.right_dome_z_mm - p.left_dome_drop_mm}
        self.sternum_top = p.first_rib_z_mm - p.sternum_top_below_first_rib_mm
        self._init_heart()
        self._init_aorta()
        self._init_airways()

    def _check_layout(self) -> None:
        """Ranges that are each plausible can still combine into no thorax: say which ones."""
        p = self.p
        problems = []
        if p.first_rib_z_mm <= p.thorax_widest_z_mm:
            problems.append(f"first_rib_z_mm ({p.first_rib_z_mm:.1f}) must lie above thorax_widest_z_mm "
                            f"({p.thorax_widest_z_mm:.1f})")
        if p.cage_half_width_mm <= p.mediastinum_half_width_mm + p.mediastinum_left_shift_mm + self.lung_inset:
            problems.append(f"cage_half_width_mm ({p.cage_half_width_mm:.1f}) leaves no room for a lung beside "
                            f"the mediastinum ({p.mediastinum_half_width_mm:.1f} mm)")
        if p.cage_depth_mm <= p.cage_behind_spine_mm + p.vertebral_half_depth_mm:
            problems.append(f"cage_behind_spine_mm ({p.cage_behind_spine_mm:.1f}) puts the spine in front of the "
                            f"rib cage (cage_depth_mm {p.cage_depth_mm:.1f})")
        if problems:
            raise ValueError("PhantomConfig: impossible anatomy for this patient: " + "; ".join(problems))

    # --- outline, spine line and rib cage, all functions of z
    def _inlet_u(self, z):
        """0 at the widest level and below, 1 at the thoracic inlet and above."""
        p = self.p
        return np.clip((z - p.thorax_widest_z_mm) / (p.first_rib_z_mm - p.thorax_widest_z_mm), 0.0, 1.0)

    def body_sdf(self, x, y, z):
        p = self.p
        scale = 1.0 - p.body_inlet_taper * self._inlet_u(z) ** 2
        return _flat_back_sdf(x, y - p.body_center_y_mm, self.body_half_width * scale, self.body_half_depth * scale)

    def spine_y(self, z):
        """Vertebral body centre y at height z: a kyphotic curve, most posterior mid-thorax."""
        p = self.p
        mid = 0.5 * (p.first_rib_z_mm + p.right_dome_z_mm)
        half = 0.5 * (p.first_rib_z_mm - p.right_dome_z_mm)
        return self.y_spine0 + p.kyphosis_mm * (1.0 - np.clip(1.0 - ((z - mid) / half) ** 2, 0.0, 1.0))

    def cage(self, z):
        """Rib-centreline ellipse at height z: (centre y, LR semi-axis, AP semi-axis).

        Its width follows an ellipse in z from the widest level through the inlet and on, closing into the dome
        that caps the lung apices (the semi-axes never drop below _MIN_CAGE_SCALE of their widest value).
        """
        p = self.p
        u2 = (np.maximum(z - p.thorax_widest_z_mm, 0.0) / (p.first_rib_z_mm - p.thorax_widest_z_mm)) ** 2
        s_lr = np.sqrt(np.maximum(1.0 - (1.0 - p.cage_inlet_width_ratio**2) * u2, _MIN_CAGE_SCALE**2))
        s_ap = np.sqrt(np.maximum(1.0 - (1.0 - p.cage_inlet_depth_ratio**2) * u2, _MIN_CAGE_SCALE**2))
        back = self.spine_y(z) - p.cage_behind_spine_mm
        half_depth = 0.5 * (self.cage_front0 - back) * s_ap
        return back + half_depth, self.cage_half_width0 * s_lr, half_depth

    def cage_sdf(self, x, y, z):
        yc, a, b = self.cage(z)
        return _flat_back_sdf(x, y - yc, a, b)

    # --- lungs
    def _dome(self, side: int, x, y):
        """Hemidiaphragm height z(x, y) and its slopes: a paraboloid, deepest in the posterior recess."""
        p = self.p
        yc, a, b = self.cage(p.thorax_widest_z_mm)
        xc = side * p.dome_centre_lateral_fraction * a
        yd = yc + p.dome_centre_anterior_fraction * b
        kx = p.dome_depth_mm / ((1.0 - p.dome_centre_lateral_fraction) * a) ** 2
        ky = p.dome_depth_mm * p.dome_depth_ap_ratio / ((1.0 + p.dome_centre_anterior_fraction) * b) ** 2
        dx, dy = x - xc, y - yd
        return self.dome_z[side] - kx * dx * dx - ky * dy * dy, -2.0 * kx * dx, -2.0 * ky * dy

    def lung_base_sdf(self, side: int, x, y, z):
        """One lung (side +1 right, -1 left) before the heart, aorta and spine are carved out."""
        p = self.p
        yc, _, b = self.cage(z)
        cavity = self.cage_sdf(x, y, z) + self.lung_inset
        border = p.mediastinum_half_width_mm + (p.mediastinum_left_shift_mm if side < 0 else 0.0)
        medial = border + p.mediastinum_widening_mm * ((yc + b - y) / (2 * b)) ** 2 - side * x
        h, hx, hy = self._dome(side, x, y)
        above_diaphragm = -_height_field_sdf(z, h, hx, hy)
        yc, a, _ = self.cage(p.first_rib_z_mm)  # apical dome: centred between mediastinum and inlet wall
        xa = side * 0.5 * (p.mediastinum_half_width_mm + a - self.lung_inset)
        dx, dy = x - xa, y - yc
        k = 0.5 / p.lung_apex_radius_mm
        below_apex = _height_field_sdf(z, self.apex_z - k * (dx * dx + dy * dy), -2 * k * dx, -2 * k * dy)
        return np.maximum(np.maximum(cavity, medial), np.maximum(above_diaphragm, below_apex))

    def lung_exclusions(self):
        """(sdf function, margin mm) of each structure carved out of the lungs, with its bounding box."""
        p = self.p
        return [
            (self.heart_sdf, p.pericardial_fat_mm + p.pleural_gap_mm, self.heart_bounds),
            (self.aorta_sdf, p.pleural_gap_mm, self.aorta_bounds),
            (self.column_sdf, p.pleural_gap_mm, self.column_bounds),
        ]

    def lung_sdf_points(self, side: int, x, y, z):
        """Lung SDF at arbitrary points (N,), exclusions included: for placing nodules and pruning vessels."""
        sdf = self.lung_base_sdf(side, x, y, z)
        for fn, margin, _ in self.lung_exclusions():
            sdf = np.maximum(sdf, margin - fn(x, y, z))
        return sdf

    def lung_bounds(self, side: int, margin: float):
        """Box (x, y, z limits in mm) that holds one lung, grown by ``margin``."""
        p = self.p
        x_lo, x_hi = p.mediastinum_half_width_mm - margin, self.cage_half_width0 + margin
        xlim = (x_lo, x_hi) if side > 0 else (-x_hi, -x_lo)
        y_lo = self.y_spine0 - p.cage_behind_spine_mm - margin
        z_lo = self.dome_z[side] - (1.0 + p.dome_depth_ap_ratio) * p.dome_depth_mm - margin
        return xlim, (y_lo, self.cage_front0 + margin), (z_lo, self.apex_z + margin)

    # --- heart
    def _init_heart(self) -> None:
        p = self.p
        yaw, pitch = math.radians(p.heart_axis_yaw_deg), math.radians(p.heart_axis_pitch_deg)
        e1 = np.array([-math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), -math.sin(pitch)])
        e2 = np.cross(e1, [0.0, 0.0, 1.0])
        e2 /= np.linalg.norm(e2)
        e3 = np.cross(e1, e2)
        self.heart_axes = np.stack([e1, e2, e3])  # rows: local axes in (x, y, z)
        self.heart_semi = np.array([p.heart_half_length_mm, p.heart_half_width_mm, p.heart_half_depth_mm])
        extent = np.sqrt(((self.heart_axes * self.heart_semi[:, None]) ** 2).sum(axis=0))  # half-extent x, y, z
        cz = self.dome_z[-1] + p.heart_above_left_dome_mm
        yc, _, b = self.cage(cz)
        cy = yc + b - p.heart_gap_to_cage_mm - extent[1]
        self.heart_centre = np.array([p.heart_x_mm, cy, cz])
        self.heart_top = cz + extent[2]
        reach = extent + p.pericardial_fat_mm + p.pleural_gap_mm
        self.heart_bounds = np.stack([self.heart_centre - reach, self.heart_centre + reach], axis=1)

    def heart_sdf(self, x, y, z):
        c, e = self.heart_centre, self.heart_axes
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        u, v, w = (dx * e[i, 0] + dy * e[i, 1] + dz * e[i, 2] for i in range(3))
        return _ellipsoid_sdf(u, v, w, *self.heart_semi)

    # --- aorta: ascending limb, half-torus arch, descending limb to the bottom
    def _init_aorta(self) -> None:
        p = self.p
        c = self.heart_centre
        self.asc_xy = np.array([c[0] + p.ascending_aorta_right_of_heart_mm,
                                c[1] - p.ascending_aorta_behind_heart_mm])
        # on the vertebral body's outline grown by gap + radius, so it touches the spine without entering it
        angle, grow = math.radians(p.descending_aorta_angle_deg), p.descending_aorta_gap_mm + p.aorta_radius_mm
        self.arch_z = self.heart_top + p.arch_above_heart_mm
        spine_y = float(self.spine_y(self.arch_z))
        self.desc_xy = np.array([-(p.vertebral_half_width_mm + grow) * math.cos(angle),
                                 spine_y + (p.vertebral_half_depth_mm + grow) * math.sin(angle)])
        self.asc_bottom_z = c[2]
        span = self.desc_xy - self.asc_xy
        self.arch_radius = 0.5 * float(np.linalg.norm(span))
        self.arch_mid = 0.5 * (self.asc_xy + self.desc_xy)
        self.arch_dir = span / max(2.0 * self.arch_radius, _MIN_GRADIENT)
        reach = p.aorta_radius_mm + p.pleural_gap_mm
        lo = np.minimum(self.asc_xy, self.desc_xy) - reach
        hi = np.maximum(self.asc_xy, self.desc_xy) + reach
        self.aorta_bounds = np.array([[lo[0], hi[0]], [lo[1] - p.kyphosis_mm, hi[1] + p.kyphosis_mm],
                                      [-np.inf, self.arch_z + self.arch_radius + reach]])

    def aorta_sdf(self, x, y, z, radius: float | None = None):
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
        ddx = x - self.desc_xy[0]
        ddy = y - self.desc_xy[1] - (self.spine_y(z) - self.spine_y(self.arch_z))
        descending = np.sqrt(ddx * ddx + ddy * ddy)
        return np.where(h >= 0, arch, np.minimum(ascending, descending)) - r

    # --- airways and hila
    def _init_airways(self) -> None:
        p = self.p
        zh = self.heart_centre[2] + p.hilum_above_heart_mm
        yc, _, _ = self.cage(zh)
        self.hila = {side: np.array([side * (p.mediastinum_half_width_mm + p.hilum_lateral_mm),
                                     yc + p.hilum_y_offset_mm, zh]) for side in (+1, -1)}
        ahead = p.vertebral_half_depth_mm + p.trachea_gap_to_spine_mm + p.trachea_radius_mm
        zc = zh + p.carina_above_hilum_mm
        carina = np.array([p.trachea_x_mm, float(self.spine_y(zc)) + ahead, zc])
        top = np.array([p.trachea_x_mm, float(self.spine_y(_BIG_MM)) + ahead, _BIG_MM])
        self.airways = [(top, carina, p.trachea_radius_mm)] + [
            (carina, self.hila[side], p.bronchus_radius_mm) for side in (+1, -1)]
        # centre of each lung, which the vessel trees are steered toward
        zm = 0.5 * (self.apex_z + self.dome_z[+1])
        ym, am, _ = self.cage(zm)
        self.lung_centres = {side: np.array([side * 0.5 * (p.mediastinum_half_width_mm + am), ym, zm])
                             for side in (+1, -1)}

    def airway_sdf(self, x, y, z, wall: float = 0.0):
        """Trachea and main bronchi as a union of tubes; ``wall`` grows them by the wall thickness."""
        dist = [(_segment_distance(x, y, z, a, b)[0] - r - wall) for a, b, r in self.airways]
        return np.minimum.reduce(dist)

    @property
    def airway_bounds(self):
        pts = np.array([pt for a, b, _ in self.airways for pt in (a, b)])
        reach = max(r for _, _, r in self.airways) + self.p.airway_wall_mm
        return np.stack([pts.min(axis=0) - reach, pts.max(axis=0) + reach], axis=1)

    # --- spine
    @property
    def column_bounds(self):
        p = self.p
        reach = p.vertebral_half_width_mm + p.pleural_gap_mm
        y0 = self.y_spine0 - p.vertebral_half_depth_mm - p.pleural_gap_mm
        return np.array([[-reach, reach], [y0, y0 + 2 * reach + p.kyphosis_mm], [-np.inf, np.inf]])

    def column_sdf(self, x, y, z):
        """The stack of vertebral bodies and discs as one elliptic cylinder (what the lungs must avoid)."""
        p = self.p
        return _ellipse_sdf(x, y - self.spine_y(z), p.vertebral_half_width_mm, p.vertebral_half_depth_mm)

    def vertebra_sdf(self, x, y, z):
        """Vertebral bodies, neural arches, spinous and transverse processes, periodic along z."""
        p = self.p
        pitch = p.vertebra_pitch_mm
        u = np.mod(z - p.first_rib_z_mm + 0.5 * pitch, pitch) - 0.5 * pitch  # height within the vertebra
        half_height = 0.5 * pitch * (1.0 - p.disc_fraction)
        in_level = np.abs(u) - half_height
        ys = self.spine_y(z)
        rho2 = np.minimum((x / p.vertebral_half_width_mm) ** 2 + ((y - ys) / p.vertebral_half_depth_mm) ** 2, 1.0)
        body = np.maximum(self.column_sdf(x, y, z), in_level + p.endplate_sag_mm * (1.0 - rho2))
        canal_y = ys - p.vertebral_half_depth_mm - p.spinal_canal_radius_mm + p.lamina_thickness_mm / 2
        dy = y - canal_y
        rho = np.sqrt(x * x + dy * dy)
        arch = np.maximum(np.maximum(rho - p.spinal_canal_radius_mm - p.lamina_thickness_mm,
                                     p.spinal_canal_radius_mm - rho), in_level)
        back = -(p.spinal_canal_radius_mm + 0.5 * p.lamina_thickness_mm)
        # processes, in (x, y - canal_y, u) coordinates; the spinous process slopes down posteriorly
        spinous, _ = _segment_distance(x, dy, u, (0.0, back, 0.0),
                                       (0.0, back - p.spinous_process_length_mm, -_SPINOUS_DROP * half_height))
        transverse, _ = _segment_distance(np.abs(x), dy, u, (p.spinal_canal_radius_mm, 0.0, 0.0),
                                          (p.transverse_process_length_mm, back, 0.0))
        processes = np.minimum(spinous, transverse) - p.process_radius_mm
        return np.minimum(np.minimum(body, arch), processes)

    @property
    def spine_bounds(self):
        p = self.p
        reach = p.transverse_process_length_mm + p.process_radius_mm
        back = (p.vertebral_half_depth_mm + 2 * p.spinal_canal_radius_mm + p.lamina_thickness_mm
                + p.spinous_process_length_mm + p.process_radius_mm)
        return np.array([[-reach, reach],
                         [self.y_spine0 - back, self.y_spine0 + p.vertebral_half_depth_mm + p.kyphosis_mm],
                         [-np.inf, np.inf]])

    # --- sternum and liver
    def sternum_sdf(self, x, y, z):
        """A flat plate of oval cross-section on the cage's front line, from the sternal notch down."""
        p = self.p
        yc, _, b = self.cage(z)
        half_len = 0.5 * p.sternum_length_mm
        plate = _ellipse_sdf(x, y - (yc + b), p.sternum_half_width_mm, 0.5 * p.sternum_thickness_mm)
        return np.maximum(plate, np.abs(z - (self.sternum_top - half_len)) - half_len)

    @property
    def sternum_bounds(self):
        p = self.p
        return np.array([[-p.sternum_half_width_mm, p.sternum_half_width_mm],
                         [self.y_spine0, self.cage_front0 + p.sternum_thickness_mm],
                         [self.sternum_top - p.sternum_length_mm, self.sternum_top]])

    def liver_sdf(self, x, y, z):
        """Right upper abdomen under the right hemidiaphragm, its left lobe just across the midline."""
        p = self.p
        h, hx, hy = self._dome(+1, x, y)
        under = _height_field_sdf(z, h, hx, hy) + p.diaphragm_thickness_mm
        inside = self.cage_sdf(x, y, z) + 0.5 * p.rib_thickness_mm
        return np.maximum(np.maximum(under, inside), -x - p.liver_left_extent_mm)

    # --- ribs, evaluated on points near the cage ellipse
    def rib_sdfs(self, x, y, z, dr, drawn_axes, true_axes):
        """(rib drawn, cartilage drawn, rib true) SDFs at points at signed distance ``dr`` from the cage ellipse.

        Rib k's centreline lies on the cage ellipse at height first_rib_z - k * pitch at the back, dropping by
        rib_drop toward the front. The axes are the (radial, vertical) semi-axes of the tube cross-section.
        """
        p, config = self.p, self.config
        yc, _, _ = self.cage(z)
        dy = y - yc
        front = (1.0 + dy / np.maximum(np.sqrt(x * x + dy * dy), _MIN_GRADIENT)) / 2  # 0 at the back, 1 in front
        level = (p.first_rib_z_mm - z - p.rib_drop_mm * front) / p.vertebra_pitch_mm
        k = np.rint(level)
        v = (level - k) * p.vertebra_pitch_mm
        present = (k >= 0) & (k < config.rib_count)
        sternal = k < config.sternal_rib_count
        x_end = np.where(sternal, p.sternum_half_width_mm + p.cartilage_length_mm + k * p.cartilage_growth_mm,
                         _BIG_MM)
        ax = np.abs(x)
        anterior = dy > 0
        extent = np.where(present, np.where(anterior, x_end - ax, p.vertebral_half_width_mm - ax), _BIG_MM)
        tube = _ellipse_sdf(dr, v, *drawn_axes)
        # cartilage runs from the rib's end into the sternum's edge, so the joint has no gap
        cartilage = np.maximum(np.maximum(tube, ax - x_end), 0.5 * p.sternum_half_width_mm - ax)
        cartilage = np.where(present & anterior & sternal, cartilage, _BIG_MM)
        return np.maximum(tube, extent), cartilage, np.maximum(_ellipse_sdf(dr, v, *true_axes), extent)


# ----------------------------------------------------------------------------------------------------------
def _vessel_segments(chest: _Chest, rng: np.random.Generator, generations: int):
    """Pulmonary vessel trees as tapered segments (start (N, 3), end (N, 3), r_start (N,), r_end (N,)), mm.

    Each lobar trunk leaves the hilum, then every branch that ends inside its lung forks in two, rotated by the
    branch angle in a random plane and pulled toward the lung's centre, shorter and thinner by the configured
    ratios.
    """
    p = chest.p
    out: list[tuple[np.ndarray, ...]] = []
    steer = chest.config.vessel_steering
    for side in (+1, -1):
        hilum, centre = chest.hila[side], chest.lung_centres[side]
        dirs = _TRUNK_DIRECTIONS * np.array([side, 1.0, 1.0])
        dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs = dirs + _jitter(rng, dirs.shape, chest.config.vessel_direction_jitter)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        n = len(dirs)
        start = np.repeat(hilum[None], n, axis=0)
        length = p.vessel_root_length_mm * rng.uniform(*_TRUNK_LENGTH_SPREAD, n)
        radius = np.full(n, p.vessel_root_radius_mm)
        for _ in range(generations):
            end = start + dirs * length[:, None]
            r_end = radius * p.vessel_radius_ratio
            out.append((start, end, radius, r_end))
            alive = chest.lung_sdf_points(side, end[:, 0], end[:, 1], end[:, 2]) < 0
            start, dirs, length, radius = end[alive], dirs[alive], length[alive], r_end[alive]
            if len(start) == 0:
                break
            perp = np.cross(dirs, rng.normal(size=dirs.shape))
            perp /= np.maximum(np.linalg.norm(perp, axis=1, keepdims=True), _MIN_GRADIENT)
            m = len(dirs)
            angle = np.radians(p.vessel_branch_angle_deg) * rng.uniform(*_BRANCH_ANGLE_SPREAD, (2, m, 1))
            inward = centre - start
            inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), _MIN_GRADIENT)
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


def _jitter(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    return rng.normal(scale=scale, size=shape) if scale > 0 else np.zeros(shape)


def _place_nodules(chest: _Chest, rng: np.random.Generator, config: PhantomConfig) -> list[dict]:
    """Nodule centres drawn uniformly in the lungs, each with clearance from the lung surface and each other."""
    lo, hi = config.nodule_count
    count = int(rng.integers(lo, hi + 1))
    bounds = np.array([chest.lung_bounds(side, 0.0) for side in (+1, -1)])  # (side, axis, lo/hi)
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
        sdf = {s: chest.lung_sdf_points(s, pts[:, 0], pts[:, 1], pts[:, 2]) for s in (1, -1)}
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


# ----------------------------------------------------------------------------------------------------------
def generate_chest_phantom(
    seed: int,
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing_mm: tuple[float, float, float] | None = None,
    config: PhantomConfig | None = None,
    with_labels: bool = False,
) -> CTVolume | tuple[CTVolume, np.ndarray]:
    """One synthetic chest CT, in HU, for patient ``seed``.

    Args:
        seed: non-negative integer; the same seed gives the identical patient, any other seed another one.
        shape: grid (D, H, W) in the CTVolume RAS layout (D -> superior, H -> anterior, W -> patient right).
        spacing_mm: voxel size (D, H, W) in mm; None spreads ``config.fov_mm`` over ``shape``. The volume is
            centred on the world origin either way, so the anatomy does not move with the grid.
        config: ranges of the anatomy; None uses the defaults.
        with_labels: also return the label map.

    Returns:
        ``CTVolume`` with ``hu`` float32 (D, H, W) and metadata (seed, config, drawn patient parameters, nodules
        with RAS centres in mm, label names); with ``with_labels`` also labels uint8 (D, H, W), ids in LABELS.
    """
    config = PhantomConfig() if config is None else config
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"generate_chest_phantom: seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if len(tuple(shape)) != 3 or not all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        raise ValueError(f"generate_chest_phantom: shape must be 3 positive integers (D, H, W), got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if spacing_mm is None:
        spacing = tuple(f / n for f, n in zip(config.fov_mm, shape, strict=True))
    else:
        spacing = _check_positive_triple("generate_chest_phantom: spacing_mm", spacing_mm)
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing, strict=True)]
    grid = _Grid(x=axes[2], y=axes[1], z=axes[0], spacing=spacing,
                 edge_mm=config.edge_width_voxels * float(np.mean(spacing)))

    patient = draw_patient(seed, config)
    chest = _Chest(SimpleNamespace(**patient), config)
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
    ct = CTVolume(hu=hu, spacing=spacing, origin=origin, source=f"phantom:chest:seed={seed}", metadata=metadata)
    return (ct, labels) if with_labels else ct


def _render(chest: _Chest, grid: _Grid, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Paint every structure in order, outermost first; returns hu (D, H, W) float32, labels uint8, nodules."""
    p, config, w = chest.p, chest.config, grid.edge_mm
    hu = np.full(grid.shape, config.air_hu, dtype=np.float32)
    lab = np.zeros(grid.shape, dtype=np.uint8)
    full, x, y, z = grid.full()

    # body: fat outline, then muscle inside the fat layer
    body = chest.body_sdf(x, y, z)
    body_frac = _ramp(body, w)
    _paint(hu, full, body_frac, p.fat_hu)
    _paint(hu, full, _ramp(body + p.fat_thickness_mm, w), p.soft_tissue_hu)
    lab[body < 0] = LABELS["body"]
    cage = chest.cage_sdf(x, y, z)

    box = grid.box((-p.liver_left_extent_mm - w, chest.cage_half_width0 + w), (-np.inf, np.inf),
                   (-np.inf, chest.dome_z[+1] + w))
    if box is not None:
        sl, bx, by, bz = box
        _paint(hu, sl, _ramp(chest.liver_sdf(bx, by, bz), w), p.liver_hu)

    # lungs, carved by the heart, aorta and vertebral column
    lung = np.full(grid.shape, _BIG_MM, dtype=np.float32)
    for side in (+1, -1):
        box = grid.box(*chest.lung_bounds(side, w))
        if box is not None:
            sl, bx, by, bz = box
            np.minimum(lung[sl], chest.lung_base_sdf(side, bx, by, bz), out=lung[sl])
    carved = {}  # name -> (slices, sdf in that box), reused to paint the heart and the discs
    for fn, margin, bounds in chest.lung_exclusions():
        box = grid.box(*(np.asarray(bounds) + np.array([-w, w])))
        if box is not None:
            sl, bx, by, bz = box
            carved[fn.__name__] = (sl, fn(bx, by, bz))
            np.maximum(lung[sl], margin - carved[fn.__name__][1], out=lung[sl])
    lung_frac = _ramp(lung, w)
    _paint(hu, full, lung_frac, p.lung_hu)
    lung_in = lung < 0
    lab[lung_in] = LABELS["lung"]

    _draw_vessels(chest, grid, hu, lab, lung_frac, lung_in, _stream(seed, "pulmonary_vessels"))

    if "heart_sdf" in carved:
        sl, heart = carved["heart_sdf"]
        _paint(hu, sl, _ramp(heart - p.pericardial_fat_mm, w), p.fat_hu)
        _paint(hu, sl, _ramp(heart, w), p.heart_hu)
        lab[sl][heart < 0] = LABELS["heart"]

    box = grid.box(*(chest.aorta_bounds + np.array([-w, w])))
    if box is not None:
        sl, bx, by, bz = box
        drawn, _ = _tube_render(p.aorta_radius_mm, w)
        _paint(hu, sl, _ramp(chest.aorta_sdf(bx, by, bz, radius=float(drawn)), w), p.blood_hu)
        lab[sl][chest.aorta_sdf(bx, by, bz) < 0] = LABELS["aorta"]

    box = grid.box(*(chest.airway_bounds + np.array([-w, w])))
    if box is not None:
        sl, bx, by, bz = box
        wall = chest.airway_sdf(bx, by, bz, wall=p.airway_wall_mm)
        _paint(hu, sl, _ramp(wall, w), p.soft_tissue_hu)
        _paint(hu, sl, _ramp(chest.airway_sdf(bx, by, bz), w), config.air_hu)
        lab[sl][wall < 0] = LABELS["airway"]

    # bones: discs first, then each bone's cortex, then its marrow space
    if "column_sdf" in carved:
        sl, column = carved["column_sdf"]
        _paint(hu, sl, _ramp(column, w), p.disc_hu)
    for sdf_fn, bounds in ((chest.vertebra_sdf, chest.spine_bounds), (chest.sternum_sdf, chest.sternum_bounds)):
        box = grid.box(*(bounds + np.array([-w, w])))
        if box is not None:
            sl, bx, by, bz = box
            bone = sdf_fn(bx, by, bz)
            _paint(hu, sl, _ramp(bone, w), p.cortical_bone_hu)
            _paint(hu, sl, _ramp(bone + p.cortical_thickness_mm, w), p.cancellous_bone_hu)
            lab[sl][bone < 0] = LABELS["bone"]
    _draw_ribs(chest, grid, hu, lab, cage)

    nodules = _place_nodules(chest, _stream(seed, "nodules"), config)
    for nod in nodules:
        _draw_nodule(nod, grid, hu, lab)

    if config.noise_std_hu > 0:
        noise = _stream(seed, "noise").normal(scale=config.noise_std_hu, size=grid.shape).astype(np.float32)
        hu += body_frac * noise
    return hu, lab, nodules


def _draw_vessels(chest, grid, hu, lab, lung_frac, lung_in, rng) -> None:
    """Pulmonary vessel trees: tapered tubes, kept only inside the lungs."""
    p, w = chest.p, grid.edge_mm
    starts, ends, r0s, r1s = _vessel_segments(chest, rng, chest.config.vessel_generations)
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
        dist, t = _segment_distance(bx, by, bz, a, b)
        radius = r0 + t * (r1 - r0)
        drawn, scale = _tube_render(radius, w)
        np.maximum(frac[sl], (_ramp(dist - drawn, w) * scale).astype(np.float32), out=frac[sl])
        inside[sl] |= dist < radius
    frac *= lung_frac
    _paint(hu, (slice(None),) * 3, frac, p.blood_hu)
    lab[inside & lung_in] = LABELS["pulmonary_vessel"]


def _draw_ribs(chest, grid, hu, lab, cage) -> None:
    """Ribs and costal cartilage, evaluated only on voxels near the cage ellipse."""
    p, config, w = chest.p, chest.config, grid.edge_mm
    a, b = 0.5 * p.rib_thickness_mm, 0.5 * p.rib_height_mm
    # shrink both semi-axes so the ramp-drawn ellipse holds pi a b of bone (as _tube_render for a circle)
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
    x, y, z, dr = grid.x[i], grid.y[j], grid.z[k], cage[k, j, i]
    flat = np.ravel_multi_index((k, j, i), grid.shape)
    hu_flat, lab_flat = hu.reshape(-1), lab.reshape(-1)
    rib, cartilage, rib_true = chest.rib_sdfs(x, y, z, dr, (a - shrink, b - shrink), (a, b))
    for sdf, value in ((cartilage, p.cartilage_hu), (rib, p.rib_hu)):
        frac = _ramp(sdf, w)
        hu_flat[flat] += (frac * (value - hu_flat[flat])).astype(np.float32)
    lab_flat[flat[rib_true < 0]] = LABELS["bone"]


def _draw_nodule(nodule: dict, grid: _Grid, hu: np.ndarray, lab: np.ndarray) -> None:
    """A sphere; its label also claims the voxel nearest its centre, so no nodule vanishes on a coarse grid."""
    w = grid.edge_mm
    c, r = nodule["centre_mm"], nodule["radius_mm"]
    box = grid.box(*((ci - r - w, ci + r + w) for ci in c))
    if box is None:
        return
    sl, bx, by, bz = box
    dist = np.sqrt((bx - c[0]) ** 2 + (by - c[1]) ** 2 + (bz - c[2]) ** 2)
    drawn, scale = _sphere_render(r, w)
    _paint(hu, sl, _ramp(dist - drawn, w) * scale, nodule["hu"])
    inside = dist < r
    nearest = np.unravel_index(int(dist.argmin()), dist.shape)
    if dist[nearest] <= 0.5 * math.hypot(*grid.spacing):  # the centre lies inside the grid
        inside[nearest] = True
    lab[sl][inside] = LABELS["nodule"]
