"""Shoulder girdle and arms: clavicles, scapulae, humeri, forearm bones, the arms' soft tissue; three poses.

Per side (+1 right, -1 left), placed on v1's ``BodyFrame``: the clavicle from the sternal notch to the acromion,
the scapula a flat triangle behind the posterior ribs (superior angle, inferior angle, glenoid) with its spine
running up to the acromion, the humeral head below the acromion. The arm hangs beside the torso (``down``), is
raised above the head (``up``: only the humerus near the top of a chest field of view), or is folded across the
lower chest (``across``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.v2.shapes import Ellipsoid, TrianglePlate, TubeChain

_ACROMION_TO_JOINT_MM = 30.0  # the clavicle ends this far medial of the acromion's tip
_CLAVICLE_BACKWARD_MM = 35.0  # ... and this far behind its sternal end
_GLENOID_RADIUS_FRACTION = 0.6  # glenoid (a sphere here) / humeral head radius
_SCAPULA_BORDER_FRACTION = 0.25  # the scapular spine leaves the medial border this far down the blade
_ELBOW_FORWARD_FRACTION = 0.5  # arm across: elbow in front of the mid-coronal plane / body half-depth
_ELBOW_DROP_FRACTION = 0.8  # ... and below the shoulder by this share of the humerus (the arm reaches forward)


class Arm:
    """One side's bones (``bones``: name -> list of shapes) and soft tissue (``tissue``: tube chains)."""

    def __init__(self, side: int, pose: str, p: SimpleNamespace, frame: BodyFrame) -> None:
        s = side
        self.side, self.pose = side, pose
        z_ac = p.first_rib_z_mm + p.acromion_above_first_rib_mm
        yc_inlet, _, _ = frame.cage(p.first_rib_z_mm)
        r_head = p.humeral_head_radius_mm
        head = np.array([s * (p.acromion_half_breadth_mm - 0.3 * r_head), yc_inlet + p.shoulder_y_mm,
                         z_ac - r_head - 6.0])
        acromion = np.array([s * p.acromion_half_breadth_mm, head[1] - 5.0, z_ac])
        self.head, self.acromion = head, acromion

        # clavicle: sternal end at the notch, bowed forward over its medial two thirds
        notch = p.first_rib_z_mm - p.sternum_top_below_first_rib_mm
        yc, _, b = frame.cage(notch)
        sternal = np.array([s * (p.sternum_half_width_mm + p.clavicle_radius_mm),
                            yc + b + 0.5 * p.sternum_thickness_mm, notch + p.clavicle_radius_mm])
        end = np.array([acromion[0] - s * _ACROMION_TO_JOINT_MM, sternal[1] - _CLAVICLE_BACKWARD_MM, z_ac])
        mid = sternal + 0.6 * (end - sternal) + np.array([0.0, p.clavicle_bow_mm, 4.0])
        self.clavicle = TubeChain([sternal, mid, end], p.clavicle_radius_mm)

        # scapula: blade on the back of the cage, its lateral corner at the glenoid
        z_sup = p.first_rib_z_mm - 5.0
        z_inf = z_sup - p.scapula_height_mm
        x_med = p.scapula_medial_mm

        def behind_ribs(x: float, z: float) -> float:
            yc_z, a_z, b_z = frame.cage(z)
            u = min(abs(x) / float(a_z), 0.95)
            return float(yc_z - b_z * (1.0 - u**3) ** (1.0 / 3.0)) - 0.5 * p.rib_thickness_mm - p.scapula_gap_mm

        glenoid = np.array([s * (abs(head[0]) - r_head - 4.0), head[1] - 0.3 * r_head, head[2]])
        sup = np.array([s * x_med, behind_ribs(x_med, z_sup), z_sup])
        inf = np.array([s * (x_med + 20.0), behind_ribs(x_med + 20.0, z_inf), z_inf])
        self.scapula = TrianglePlate([sup, inf, glenoid], p.scapula_thickness_mm)
        root = sup + _SCAPULA_BORDER_FRACTION * (inf - sup)
        self.scapula_spine = TubeChain([root, 0.5 * (root + acromion) - np.array([0.0, 6.0, 0.0]), acromion],
                                       0.8 * p.clavicle_radius_mm)
        self.glenoid = Ellipsoid(glenoid, np.eye(3), [_GLENOID_RADIUS_FRACTION * r_head] * 3)
        self.humeral_head = Ellipsoid(head, np.eye(3), [r_head] * 3)

        # the arm: shoulder joint -> elbow -> wrist
        length, fore = p.humerus_length_mm, p.forearm_length_mm
        if pose == "up":
            t = math.radians(p.arm_up_medial_deg)
            elbow = head + length * np.array([-s * math.sin(t), 0.0, math.cos(t)])
            wrist = elbow + fore * np.array([-s * 0.5, -0.2, 0.84])
            forearm = [elbow, wrist]
        elif pose == "across":
            side_x = frame.body_half_width + 0.8 * p.upper_arm_radius_mm
            forward = p.body_center_y_mm + _ELBOW_FORWARD_FRACTION * frame.body_half_depth
            elbow = np.array([s * side_x, forward, head[2] - _ELBOW_DROP_FRACTION * length])
            front = p.body_center_y_mm + frame.body_half_depth + p.forearm_radius_mm
            knee = np.array([s * 0.6 * frame.body_half_width, front - 10.0, elbow[2] + 10.0])
            wrist = np.array([-s * 50.0, front, elbow[2] + 25.0])
            forearm = [elbow, knee, wrist]
        else:
            side_x = frame.body_half_width + p.arm_gap_mm + p.upper_arm_radius_mm
            elbow = np.array([s * max(side_x, abs(head[0])), head[1] - 10.0, head[2] - length])
            wrist = elbow + np.array([0.0, 20.0, -fore])
            forearm = [elbow, wrist]
        self.humerus = TubeChain([head, elbow], p.humerus_radius_mm)
        offset = np.array([0.0, 8.0, 0.0])
        self.forearm_bones = [TubeChain(np.array(forearm) + sign * offset, p.forearm_bone_radius_mm)
                              for sign in (+1, -1)]
        shoulder = TubeChain([np.array([s * 40.0, head[1] - 10.0, z_ac - 15.0]), head],
                             r_head + p.deltoid_mm)
        self.shoulder_tissue = shoulder
        self.arm_tissue = [TubeChain([head, elbow], p.upper_arm_radius_mm),
                           TubeChain(forearm, p.forearm_radius_mm)]

    def sizes(self) -> dict[str, float]:
        """Bone sizes (mm) for the metadata and the reference checks."""
        sup, inf, _ = self.scapula.corners
        return {"clavicle_length_mm": self.clavicle.length,
                "humeral_head_diameter_mm": float(2.0 * self.humeral_head.semi[0]),
                "scapula_height_mm": float(abs(sup[2] - inf[2])),
                "acromion_x_mm": float(self.acromion[0])}
