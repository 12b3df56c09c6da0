"""What a v2 phantom patient is drawn from: ``PhantomV2Config`` ranges and the per-patient categorical draws.

``PhantomV2Config`` extends v1's ``PhantomConfig``: every v1 field keeps its meaning (some defaults move to the
values of ``references``), and the new fields describe the shoulder girdle and arms, habitus and breasts, heart
chambers and contrast phases, abdomen, table, texture, pose, inspiration and truncation. Every ``Range`` is drawn
from its own stream keyed by ``(seed, name)``; every categorical choice (habitus, sex, arm pose, contrast phase,
table, truncation, stomach gas) from its own stream too, so overriding one field leaves every other draw alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from x2ct.data.phantom.config import PhantomConfig, Range, stream

HABITUS = ("slim", "average", "broad")
ARM_POSES = ("down", "up", "across")
CONTRAST_PHASES = ("none", "venous", "arterial")


@dataclass
class PhantomV2Config(PhantomConfig):
    """v1's ranges plus the anatomy a chest radiograph shows; units as v1 (RAS mm about the volume centre, HU).

    ``*_weights`` are relative frequencies of the categories named in ``HABITUS``, ``ARM_POSES`` and
    ``CONTRAST_PHASES``; ``*_probability`` fields are per-patient chances.
    """

    # --- grid: wide enough for shoulders, arms beside the torso and the table
    fov_mm: tuple[float, float, float] = (320.0, 400.0, 460.0)

    # --- v1 fields whose defaults follow references (heart and diaphragm; the rest keep v1's values)
    cage_half_width_mm: Range = (115.0, 135.0)  # inner thoracic width about 24-30 cm (Haller index ~2.5)
    cage_depth_mm: Range = (155.0, 185.0)
    first_rib_z_mm: Range = (100.0, 120.0)
    lung_apex_above_first_rib_mm: Range = (20.0, 35.0)
    heart_half_length_mm: Range = (66.0, 76.0)
    heart_half_width_mm: Range = (48.0, 56.0)
    heart_half_depth_mm: Range = (40.0, 48.0)
    right_dome_z_mm: Range = (-40.0, -25.0)  # at the end of a shallow breath; inspiration lowers it further

    # --- whole-body variation
    body_scale: Range = (0.95, 1.05)  # every anatomical length, about the volume centre
    female_probability: float = 0.5
    female_scale: Range = (0.92, 0.97)  # further length factor of female patients
    habitus_weights: tuple[float, float, float] = (0.25, 0.5, 0.25)  # slim, average, broad
    slim_width_factor: Range = (0.96, 1.0)  # rib cage LR semi-axis factor
    average_width_factor: Range = (1.0, 1.05)
    broad_width_factor: Range = (1.04, 1.09)
    ap_lr_factor: Range = (0.92, 1.08)  # rib cage depth factor on top of habitus: flat to barrel chests
    slim_fat_mm: Range = (3.0, 10.0)  # subcutaneous fat thickness by habitus
    average_fat_mm: Range = (8.0, 20.0)
    broad_fat_mm: Range = (16.0, 32.0)
    inspiration_drop_mm: Range = (10.0, 55.0)  # diaphragm descent below right_dome_z_mm (deeper breath)
    yaw_deg: Range = (-4.0, 4.0)  # patient rotation about the body axis (z)
    roll_deg: Range = (-3.0, 3.0)  # tilt about the AP axis (y)
    pitch_deg: Range = (-3.0, 3.0)  # tilt about the LR axis (x)

    # --- neck, shoulders and arms
    neck_half_width_mm: Range = (50.0, 62.0)
    neck_half_depth_mm: Range = (45.0, 58.0)
    acromion_half_breadth_mm: Range = (172.0, 195.0)  # acromion from the midline (half biacromial breadth)
    acromion_above_first_rib_mm: Range = (0.0, 20.0)
    shoulder_y_mm: Range = (-15.0, 10.0)  # humeral head centre relative to the cage centre
    deltoid_mm: Range = (18.0, 30.0)  # soft tissue over the humeral head
    humeral_head_radius_mm: Range = (20.0, 26.0)
    humerus_radius_mm: Range = (9.0, 12.0)  # shaft
    humerus_length_mm: Range = (280.0, 330.0)
    upper_arm_radius_mm: Range = (38.0, 52.0)  # soft tissue, fat included
    forearm_radius_mm: Range = (28.0, 36.0)
    forearm_length_mm: Range = (230.0, 270.0)
    forearm_bone_radius_mm: Range = (5.0, 7.0)  # radius and ulna
    arm_gap_mm: Range = (0.0, 15.0)  # arm down: between the torso and the upper arm
    arm_up_medial_deg: Range = (10.0, 30.0)  # raised humerus tilted toward the head
    arm_pose_weights: tuple[float, float, float] = (0.3, 0.5, 0.2)  # down, up, across
    clavicle_radius_mm: Range = (5.5, 8.0)
    clavicle_bow_mm: Range = (5.0, 12.0)  # anterior bow of the medial two thirds
    scapula_height_mm: Range = (140.0, 175.0)
    scapula_thickness_mm: Range = (3.0, 6.0)  # blade; the spine of the scapula is a thicker tube
    scapula_medial_mm: Range = (55.0, 75.0)  # medial border from the midline
    scapula_gap_mm: Range = (8.0, 16.0)  # muscle between the posterior ribs and the blade

    # --- breasts (female patients)
    breast_radius_mm: Range = (45.0, 75.0)  # LR and SI semi-axes of the mound
    breast_projection_mm: Range = (20.0, 70.0)  # AP height above the chest wall
    breast_x_mm: Range = (60.0, 90.0)  # centre from the midline
    breast_z_above_heart_mm: Range = (-10.0, 25.0)
    breast_lateral_sag_mm: Range = (5.0, 25.0)  # supine: the mound falls outward
    breast_hu: Range = (-90.0, 10.0)  # fat / fibroglandular mixture

    # --- heart chambers: blood pools inside the myocardium, as fractions of the heart's semi-axes
    myocardium_wall_mm: Range = (5.0, 8.0)  # outer wall kept around every chamber
    chamber_scale: Range = (0.9, 1.05)  # every chamber's size factor

    # --- great vessels
    branch_radius_mm: Range = (4.0, 7.0)  # carotid and subclavian arteries
    brachiocephalic_radius_mm: Range = (6.0, 8.0)
    svc_radius_mm: Range = (8.0, 11.0)
    brachiocephalic_vein_radius_mm: Range = (5.5, 8.0)
    pulmonary_trunk_radius_mm: Range = (11.0, 14.0)  # normal diameter below about 29 mm
    pulmonary_artery_radius_mm: Range = (7.5, 10.0)

    # --- contrast: phase drawn per patient; all values drawn always, the phase picks which are used
    contrast_weights: tuple[float, float, float] = (0.4, 0.35, 0.25)  # none, venous, arterial
    arterial_blood_hu: Range = (250.0, 450.0)  # aorta, left heart, systemic arteries
    arterial_right_heart_hu: Range = (150.0, 300.0)  # right heart and pulmonary arteries in the arterial phase
    arterial_svc_hu: Range = (300.0, 700.0)  # inflowing undiluted contrast
    venous_blood_hu: Range = (130.0, 190.0)  # portal venous phase: all blood, mixed
    venous_myocardium_hu: Range = (80.0, 120.0)  # heart muscle, enhanced
    arterial_myocardium_hu: Range = (90.0, 140.0)
    venous_liver_hu: Range = (95.0, 125.0)  # the liver's peak, fed by the portal vein
    arterial_liver_hu: Range = (60.0, 85.0)  # barely enhanced yet (hepatic artery only)
    spleen_hu: Range = (40.0, 55.0)  # unenhanced
    venous_spleen_hu: Range = (100.0, 130.0)
    arterial_spleen_hu: Range = (100.0, 160.0)  # early, heterogeneous enhancement

    # --- abdomen under the diaphragm
    liver_height_mm: Range = (150.0, 190.0)  # right lobe, dome to inferior tip
    liver_half_depth_fraction: Range = (0.85, 1.0)  # AP semi-axis / the cage's
    liver_left_extent_mm: Range = (40.0, 80.0)
    spleen_half_length_mm: Range = (50.0, 65.0)  # head-foot
    spleen_half_width_mm: Range = (32.0, 42.0)  # front-back
    spleen_half_thickness_mm: Range = (20.0, 28.0)  # left-right
    stomach_half_width_mm: Range = (35.0, 50.0)  # left-right
    stomach_half_depth_mm: Range = (30.0, 45.0)  # front-back
    stomach_half_height_mm: Range = (45.0, 65.0)  # head-foot
    stomach_contents_hu: Range = (0.0, 30.0)
    stomach_gas_probability: float = 0.6
    stomach_gas_fraction: Range = (0.15, 0.5)  # depth of the anterior gas cap / stomach depth (supine)

    # --- table under the back
    table_probability: float = 0.7
    table_gap_mm: Range = (15.0, 50.0)  # foam mattress between the back and the table top
    table_pad_hu: Range = (-1000.0, -930.0)
    table_thickness_mm: Range = (30.0, 60.0)
    table_shell_mm: Range = (2.0, 5.0)
    table_half_width_mm: Range = (200.0, 240.0)
    table_curvature_radius_mm: Range = (700.0, 1500.0)  # concave top
    table_shell_hu: Range = (150.0, 500.0)  # carbon fibre / plastic composite, approximate
    table_core_hu: Range = (-950.0, -800.0)  # foam core

    # --- texture: spatially correlated HU variation, and CT noise (v1's noise_std_hu, inside the body)
    soft_texture_hu: Range = (4.0, 10.0)  # standard deviation inside soft tissue organs
    soft_texture_wavelength_mm: Range = (12.0, 40.0)
    lung_texture_hu: Range = (15.0, 35.0)  # parenchyma, before voxel averaging
    lung_texture_wavelength_mm: Range = (5.0, 20.0)
    texture_waves: int = 24  # plane waves per texture field

    # --- truncation along the body axis: the scan planned from above the lung apices to below the posterior
    # costophrenic recesses (a chest CT covers "the lung apices through the lung bases", ACR-STR practice parameter
    # for the performance of chest CT), with margins that vary per patient; margins are not written references
    truncation_probability: float = 0.3
    scan_margin_above_apex_mm: Range = (5.0, 40.0)
    scan_margin_below_recess_mm: Range = (5.0, 60.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        for name in ("female_probability", "stomach_gas_probability", "table_probability",
                     "truncation_probability"):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0
            if not ok:
                raise ValueError(f"{owner}.{name}: expected a probability in [0, 1], got {value!r}")
            setattr(self, name, float(value))
        for name in ("habitus_weights", "arm_pose_weights", "contrast_weights"):
            setattr(self, name, _check_weights(f"{owner}.{name}", getattr(self, name)))
        value = self.texture_waves
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{owner}.texture_waves: expected an integer >= 0, got {value!r}")


def _check_weights(what: str, value) -> tuple[float, float, float]:
    try:
        weights = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != 3 or not all(math.isfinite(v) and v >= 0 for v in weights) or sum(weights) <= 0:
        raise ValueError(f"{what}: expected 3 non-negative weights with a positive sum, got {value!r}")
    return weights


def choose(seed: int, name: str, options: tuple[str, ...], weights: tuple[float, ...]) -> str:
    """One category of ``options`` by relative ``weights``, from the stream ``(seed, name)``."""
    u = stream(seed, name).random() * sum(weights)
    cumulative = 0.0
    for option, weight in zip(options, weights, strict=True):
        cumulative += weight
        if u < cumulative:
            return option
    return next(o for o, wt in zip(reversed(options), reversed(weights), strict=True) if wt > 0)


def happens(seed: int, name: str, probability: float) -> bool:
    """A yes/no draw with ``probability``, from the stream ``(seed, name)``."""
    return bool(stream(seed, name).random() < probability)


def range_fields(config: PhantomConfig) -> list[str]:
    return [f.name for f in fields(config) if f.type == "Range"]
