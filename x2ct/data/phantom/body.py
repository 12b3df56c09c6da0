"""The frame every other part hangs on: body outline, spine line, rib-cage ellipse and diaphragm domes.

All are functions of height z in RAS mm centred on the volume centre (x: + patient's right, y: + anterior,
z: + superior); SDFs are mm, negative inside. Organs, skeleton and lungs place themselves against this frame.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numpy.typing import ArrayLike

from x2ct.data.phantom.sdf import flat_back_sdf

_MIN_CAGE_SCALE = 0.05  # keeps the closed rib-cage ellipse above the apices non-degenerate


class BodyFrame:
    """Outline, spine line, rib cage and hemidiaphragms of one patient, from the drawn parameters ``p``."""

    def __init__(self, p: SimpleNamespace) -> None:
        self.p = p
        self.cage_half_width0 = p.cage_half_width_mm
        self.body_half_width = p.cage_half_width_mm + p.chest_wall_mm + p.fat_thickness_mm
        self.body_half_depth = 0.5 * (p.cage_depth_mm + p.chest_wall_mm + p.back_muscle_mm) + p.fat_thickness_mm
        self.cage_front0 = p.body_center_y_mm + self.body_half_depth - p.fat_thickness_mm - p.chest_wall_mm
        self.y_spine0 = self.cage_front0 - p.cage_depth_mm + p.cage_behind_spine_mm
        self.lung_inset = 0.5 * p.rib_thickness_mm + p.pleural_gap_mm
        self._check_layout()
        self.dome_z = {+1: p.right_dome_z_mm, -1: p.right_dome_z_mm - p.left_dome_drop_mm}

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

    def _inlet_u(self, z: np.ndarray) -> np.ndarray:
        """0 at the widest level and below, 1 at the thoracic inlet and above."""
        p = self.p
        return np.clip((z - p.thorax_widest_z_mm) / (p.first_rib_z_mm - p.thorax_widest_z_mm), 0.0, 1.0)

    def body_sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Skin surface: the cage wrapped in muscle and fat, tapering toward the thoracic inlet."""
        p = self.p
        scale = 1.0 - p.body_inlet_taper * self._inlet_u(z) ** 2
        return flat_back_sdf(x, y - p.body_center_y_mm, self.body_half_width * scale, self.body_half_depth * scale)

    def spine_y(self, z: ArrayLike) -> np.ndarray:
        """Vertebral body centre y at height z: a kyphotic curve, most posterior mid-thorax."""
        p = self.p
        mid = 0.5 * (p.first_rib_z_mm + p.right_dome_z_mm)
        half = 0.5 * (p.first_rib_z_mm - p.right_dome_z_mm)
        return self.y_spine0 + p.kyphosis_mm * (1.0 - np.clip(1.0 - ((z - mid) / half) ** 2, 0.0, 1.0))

    def cage(self, z: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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

    def cage_sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed distance to the rib centreline surface (ribs lie on it; the lungs inside)."""
        yc, a, b = self.cage(z)
        return flat_back_sdf(x, y - yc, a, b)

    def dome(self, side: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hemidiaphragm height z(x, y) and its slopes: a paraboloid, deepest in the posterior recess.

        ``side`` is +1 for the right dome, -1 for the left.
        """
        p = self.p
        yc, a, b = self.cage(p.thorax_widest_z_mm)
        xc = side * p.dome_centre_lateral_fraction * a
        yd = yc + p.dome_centre_anterior_fraction * b
        kx = p.dome_depth_mm / ((1.0 - p.dome_centre_lateral_fraction) * a) ** 2
        ky = p.dome_depth_mm * p.dome_depth_ap_ratio / ((1.0 + p.dome_centre_anterior_fraction) * b) ** 2
        dx, dy = x - xc, y - yd
        return self.dome_z[side] - kx * dx * dx - ky * dy * dy, -2.0 * kx * dx, -2.0 * ky * dy
