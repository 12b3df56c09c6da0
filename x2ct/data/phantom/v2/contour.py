"""The v2 body contour: v1's torso capped at the shoulders, the neck, shoulder masses, arms and breasts.

``outline_sdf`` is the skin; ``core_sdf`` the same without the breasts (the muscle lies ``fat_thickness`` inside
it); ``breast_sdf`` the breast mounds (female patients); ``arm_sdf`` the arms' soft tissue. All SDFs in the
patient frame, mm, negative inside.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.sdf import BIG_MM, ellipse_sdf
from x2ct.data.phantom.v2.shapes import Ellipsoid, smooth_union
from x2ct.data.phantom.v2.shoulders import Arm

_FILLET_MM = 25.0  # where torso, shoulders, neck and arms meet
_BREAST_FILLET_MM = 15.0
_SHOULDER_CAP_MM = 10.0  # the torso ends this far above the acromion; neck and shoulder masses go on


class BodyContour:
    """Skin surface of one patient, from v1's torso outline and the two ``Arm`` sides."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, arms: dict[int, Arm], female: bool,
                 breast_z: float) -> None:
        self.p, self.frame, self.arms = p, frame, arms
        self.cap_z = p.first_rib_z_mm + p.acromion_above_first_rib_mm + _SHOULDER_CAP_MM
        self.breasts: list[Ellipsoid] = []
        if female:
            for side in (+1, -1):
                x = side * (p.breast_x_mm + p.breast_lateral_sag_mm)
                u = min(abs(x) / frame.body_half_width, 0.95)
                front = p.body_center_y_mm + frame.body_half_depth * np.sqrt(1.0 - u * u)
                self.breasts.append(Ellipsoid([x, front, breast_z], np.eye(3),
                                              [p.breast_radius_mm, p.breast_projection_mm, p.breast_radius_mm]))

    def torso_sdf(self, x, y, z) -> np.ndarray:
        """v1's torso, capped above the shoulders, joined to the neck."""
        p = self.p
        torso = np.maximum(self.frame.body_sdf(x, y, z), z - self.cap_z)
        yc = self.frame.spine_y(self.cap_z) + p.vertebral_half_depth_mm + 0.5 * p.neck_half_depth_mm
        neck = ellipse_sdf(x, y - yc, p.neck_half_width_mm, p.neck_half_depth_mm)
        return smooth_union(torso, np.maximum(neck, self.cap_z - 60.0 - z), _FILLET_MM)

    def arm_sdf(self, x, y, z) -> np.ndarray:
        return np.minimum.reduce([t.sdf(x, y, z) for arm in self.arms.values() for t in arm.arm_tissue])

    def core_sdf(self, x, y, z, torso: np.ndarray | None = None, arm: np.ndarray | None = None) -> np.ndarray:
        """Torso, shoulders and arms; ``torso`` and ``arm`` pass their SDFs when already evaluated at the points."""
        core = self.torso_sdf(x, y, z) if torso is None else torso
        for side in self.arms.values():
            core = smooth_union(core, side.shoulder_tissue.sdf(x, y, z), _FILLET_MM)
        return smooth_union(core, self.arm_sdf(x, y, z) if arm is None else arm, 0.5 * _FILLET_MM)

    def breast_sdf(self, x, y, z) -> np.ndarray:
        if not self.breasts:
            return np.full(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), BIG_MM, dtype=np.float32)
        return np.minimum.reduce([b.sdf(x, y, z) for b in self.breasts])

    def outline_sdf(self, x, y, z, core: np.ndarray | None = None) -> np.ndarray:
        core = self.core_sdf(x, y, z) if core is None else core
        if not self.breasts:
            return core
        return smooth_union(core, self.breast_sdf(x, y, z), _BREAST_FILLET_MM)
