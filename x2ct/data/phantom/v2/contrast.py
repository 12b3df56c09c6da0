"""The HU of blood and enhancing organs in the patient's contrast phase (none, venous or arterial).

Every phase's values are drawn for every patient (each from its own stream); the phase picks which are used,
so switching a patient's phase changes only the enhanced structures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import SimpleNamespace


@dataclass(frozen=True)
class Enhancement:
    """HU per blood pool and enhancing organ."""

    systemic_arterial: float  # aorta, left atrium and ventricle, arch branches
    right_heart: float  # right atrium and ventricle, pulmonary trunk and arteries
    systemic_venous: float  # superior vena cava and brachiocephalic veins
    pulmonary_tree: float  # vessels inside the lungs (arteries and veins together)
    myocardium: float
    liver: float
    spleen: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def enhancement(phase: str, p: SimpleNamespace) -> Enhancement:
    if phase == "arterial":
        return Enhancement(p.arterial_blood_hu, p.arterial_right_heart_hu, p.arterial_svc_hu,
                           0.5 * (p.arterial_blood_hu + p.arterial_right_heart_hu), p.arterial_myocardium_hu,
                           p.arterial_liver_hu, p.arterial_spleen_hu)
    if phase == "venous":
        v = p.venous_blood_hu
        return Enhancement(v, v, v, v, p.venous_myocardium_hu, p.venous_liver_hu, p.venous_spleen_hu)
    if phase != "none":
        raise ValueError(f"contrast phase must be none, venous or arterial, got {phase!r}")
    b = p.blood_hu
    return Enhancement(b, b, b, b, p.heart_hu, p.liver_hu, p.spleen_hu)
