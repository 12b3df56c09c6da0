"""One v2 patient: the drawn ranges, the categorical choices, and the effective anatomy v1's parts are built from.

The effective parameters are v1's drawn ones reshaped by habitus (rib cage width and depth, fat), inspiration
(diaphragm level) and overall scale (every anatomical length, about the volume centre), so v1's ``BodyFrame``,
organs, skeleton and lungs build a v2 patient unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from x2ct.data.phantom.config import draw_patient
from x2ct.data.phantom.v2.config import ARM_POSES, CONTRAST_PHASES, HABITUS, PhantomV2Config, choose, happens

_NOT_ANATOMY = ("table_", "scan_")  # lengths that do not scale with the patient


@dataclass(frozen=True)
class PatientV2:
    """Drawn ranges (``drawn``), categorical choices, and the effective anatomy ``p`` (a namespace of mm/HU)."""

    seed: int
    drawn: dict[str, float]
    sex: str  # "female" | "male"
    habitus: str  # one of HABITUS
    arm_pose: str  # one of ARM_POSES
    contrast_phase: str  # one of CONTRAST_PHASES
    has_table: bool
    truncated: bool
    stomach_gas: bool
    scale: float
    p: SimpleNamespace

    def choices(self) -> dict:
        return {"sex": self.sex, "habitus": self.habitus, "arm_pose": self.arm_pose,
                "contrast_phase": self.contrast_phase, "table": self.has_table, "truncated": self.truncated,
                "stomach_gas": self.stomach_gas, "scale": self.scale}


def draw_patient_v2(seed: int, config: PhantomV2Config) -> PatientV2:
    """Every range from its own stream, every choice from its own stream, then the effective anatomy."""
    drawn = draw_patient(seed, config)
    sex = "female" if happens(seed, "sex", config.female_probability) else "male"
    habitus = choose(seed, "habitus", HABITUS, config.habitus_weights)
    eff = dict(drawn)
    width = drawn[f"{habitus}_width_factor"]
    eff["cage_half_width_mm"] = drawn["cage_half_width_mm"] * width
    eff["cage_depth_mm"] = drawn["cage_depth_mm"] * width**0.5 * drawn["ap_lr_factor"]
    eff["fat_thickness_mm"] = drawn[f"{habitus}_fat_mm"]
    eff["right_dome_z_mm"] = drawn["right_dome_z_mm"] - drawn["inspiration_drop_mm"]
    scale = drawn["body_scale"] * (drawn["female_scale"] if sex == "female" else 1.0)
    for name, value in eff.items():
        if name.endswith("_mm") and not name.startswith(_NOT_ANATOMY):
            eff[name] = value * scale
    return PatientV2(
        seed=seed, drawn=drawn, sex=sex, habitus=habitus,
        arm_pose=choose(seed, "arm_pose", ARM_POSES, config.arm_pose_weights),
        contrast_phase=choose(seed, "contrast_phase", CONTRAST_PHASES, config.contrast_weights),
        has_table=happens(seed, "table", config.table_probability),
        truncated=happens(seed, "truncation", config.truncation_probability),
        stomach_gas=happens(seed, "stomach_gas", config.stomach_gas_probability),
        scale=float(scale), p=SimpleNamespace(**eff),
    )
