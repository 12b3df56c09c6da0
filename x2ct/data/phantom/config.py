"""What a phantom patient is drawn from: ``PhantomConfig`` ranges and the per-parameter random streams.

Positions are RAS mm relative to the volume centre, sizes mm, densities HU. Every parameter has its own stream
keyed by ``(seed, name)``, so overriding one range leaves every other draw of the same patient unchanged.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields

import numpy as np

Range = tuple[float, float]


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
        owner = type(self).__name__  # errors name the config class a caller built
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "Range":
                setattr(self, f.name, _check_range(f"{owner}.{f.name}", value))
        self.fov_mm = check_positive_triple(f"{owner}.fov_mm", self.fov_mm)
        self.nodule_count = _check_count_range(f"{owner}.nodule_count", self.nodule_count)
        for name, low in (("rib_count", 0), ("sternal_rib_count", 0), ("vessel_generations", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{owner}.{name}: expected an integer >= {low}, got {value!r}")
        for name in ("edge_width_voxels", "noise_std_hu", "nodule_clearance_mm", "vessel_direction_jitter",
                     "vessel_steering"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (name == "edge_width_voxels" and value == 0):
                raise ValueError(f"{owner}.{name}: expected a finite value >= 0 (> 0 for edge width), "
                                 f"got {value!r}")
            setattr(self, name, value)


def _check_range(what: str, value) -> Range:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{what}: expected finite (low, high) with low <= high, got {value!r}")
    return (lo, hi)


def _check_count_range(what: str, value) -> tuple[int, int]:
    try:
        lo, hi = value
        ok = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (lo, hi)) and 0 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what}: expected integers (low, high) with 0 <= low <= high, "
                         f"got {value!r}")
    return (int(lo), int(hi))


def check_positive_triple(what: str, value) -> tuple[float, float, float]:
    """A (D, H, W) size in mm; ``what`` names the caller's argument in the error."""
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or not all(math.isfinite(v) and v > 0 for v in triple):
        raise ValueError(f"{what}: expected 3 positive mm values (D, H, W), got {value!r}")
    return triple


def stream(seed: int, name: str) -> np.random.Generator:
    """The random stream of one named draw of patient ``seed``, independent of every other name's."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_patient(seed: int, config: PhantomConfig) -> dict[str, float]:
    """One value per ``Range`` field, each from its own stream ``default_rng([seed, crc32(name)])``."""
    patient = {}
    for f in fields(config):
        if f.type == "Range":
            lo, hi = getattr(config, f.name)
            u = stream(seed, f.name).random()
            patient[f.name] = float(lo + u * (hi - lo))
    return patient
