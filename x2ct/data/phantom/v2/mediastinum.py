"""Inside and around v1's heart: the four chambers' blood pools and the great vessels.

The chambers are ellipsoids in the heart's own frame (long axis base -> apex, then right-anterior, then the
third axis), each kept ``myocardium_wall_mm`` inside the heart's surface, so the myocardium is what remains. The
great vessels are tube chains: the arch branches (brachiocephalic trunk, carotids, subclavians), the superior
vena cava with the brachiocephalic veins, and the pulmonary trunk with the pulmonary arteries to the hila.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.organs import Airways, Aorta, Heart
from x2ct.data.phantom.sdf import BIG_MM
from x2ct.data.phantom.v2.shapes import Ellipsoid, TubeChain
from x2ct.data.phantom.v2.shoulders import Arm

# Chamber centres and semi-axes as fractions of the heart's semi-axes, in its (long, right-anterior, third) frame.
CHAMBERS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "left_ventricle": ((0.2, -0.3, 0.0), (0.62, 0.42, 0.62)),
    "right_ventricle": ((0.05, 0.5, 0.15), (0.58, 0.3, 0.6)),
    "left_atrium": ((-0.6, -0.4, -0.2), (0.35, 0.4, 0.5)),
    "right_atrium": ((-0.5, 0.45, 0.3), (0.4, 0.38, 0.5)),
}
_BRANCH_ANGLES = {"brachiocephalic": 0.3, "left_carotid": 0.5, "left_subclavian": 0.66}  # along the arch / pi
_NECK_TOP_MM = BIG_MM / 10  # vessels running up the neck end far above any chest field of view


class HeartChambers:
    """Blood pools of the four chambers inside ``heart``; ``sdf(name, ...)`` is one chamber, myocardium kept."""

    def __init__(self, p: SimpleNamespace, heart: Heart) -> None:
        self.heart, self.wall = heart, p.myocardium_wall_mm
        self.chambers: dict[str, Ellipsoid] = {}
        for name, (centre, semi) in CHAMBERS.items():
            c = heart.centre + (np.asarray(centre) * heart.semi) @ heart.axes
            self.chambers[name] = Ellipsoid(c, heart.axes, np.asarray(semi) * heart.semi * p.chamber_scale)

    def sdf(self, name: str, x, y, z, heart_sdf: np.ndarray) -> np.ndarray:
        return np.maximum(self.chambers[name].sdf(x, y, z), heart_sdf + self.wall)


class GreatVessels:
    """Arteries from the arch, the veins into the right atrium, and the pulmonary arteries; each a ``TubeChain``.

    ``arteries``, ``veins`` and ``pulmonary`` map names to chains, grouped by the blood they carry.
    """

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, heart: Heart, aorta: Aorta, airways: Airways,
                 chambers: HeartChambers, arms: dict[int, Arm]) -> None:
        big_r, r_ao = aorta.arch_radius, p.aorta_radius_mm

        def on_arch(fraction: float) -> np.ndarray:
            t = np.pi * fraction
            xy = aorta.arch_mid - np.cos(t) * big_r * aorta.arch_dir
            return np.array([xy[0], xy[1], aorta.arch_z + big_r * np.sin(t) + 0.5 * r_ao])

        inlet = p.first_rib_z_mm
        axilla = {s: arms[s].head + np.array([-s * 35.0, 5.0, -40.0]) for s in (+1, -1)}
        o1, o2, o3 = (on_arch(f) for f in _BRANCH_ANGLES.values())
        fork = np.array([max(o1[0], 0.0) + 18.0, o1[1], o1[2] + 40.0])
        self.arteries = {
            "brachiocephalic_trunk": TubeChain([o1, fork], p.brachiocephalic_radius_mm),
            "right_carotid": TubeChain([fork, fork + np.array([6.0, 0.0, _NECK_TOP_MM])], p.branch_radius_mm),
            "right_subclavian": TubeChain([fork, [55.0, fork[1] - 12.0, inlet + 20.0], axilla[+1]],
                                          p.branch_radius_mm),
            "left_carotid": TubeChain([o2, o2 + np.array([-6.0, 0.0, _NECK_TOP_MM])], p.branch_radius_mm),
            "left_subclavian": TubeChain([o3, [o3[0] - 15.0, o3[1], inlet + 15.0],
                                          [-55.0, o3[1] - 5.0, inlet + 20.0], axilla[-1]], p.branch_radius_mm),
        }
        # superior vena cava: right of the ascending aorta, from the right atrium up to the venous confluence
        ra = chambers.chambers["right_atrium"].centre
        svc_xy = aorta.asc_xy + np.array([r_ao + p.svc_radius_mm + 3.0, -5.0])
        confluence = np.array([svc_xy[0], svc_xy[1], aorta.arch_z + big_r + r_ao + 15.0])
        left_turn = np.array([-55.0, max(o2[1], o3[1]) + 15.0, confluence[2] + 20.0])
        self.veins = {
            "svc": TubeChain([[svc_xy[0], svc_xy[1], ra[2]], confluence], p.svc_radius_mm),
            "right_brachiocephalic_vein": TubeChain([confluence, [45.0, svc_xy[1] - 5.0, inlet + 15.0],
                                                     [45.0, svc_xy[1] - 5.0, _NECK_TOP_MM]],
                                                    p.brachiocephalic_vein_radius_mm),
            "left_brachiocephalic_vein": TubeChain(
                [confluence, left_turn, left_turn + np.array([0.0, 0.0, _NECK_TOP_MM])],
                p.brachiocephalic_vein_radius_mm),
        }
        # pulmonary trunk: from the right ventricle's outflow, up and back under the arch, forking to the hila
        c, e, semi = heart.centre, heart.axes, heart.semi
        root = c + (np.array([-0.75, 0.35, -0.35]) * semi) @ e
        top = aorta.arch_z - r_ao - p.pulmonary_trunk_radius_mm - 3.0
        fork_pt = np.array([root[0] - 10.0, root[1] - 30.0, min(root[2] + 35.0, top)])
        self.pulmonary = {
            "pulmonary_trunk": TubeChain([root, fork_pt], p.pulmonary_trunk_radius_mm),
            "right_pulmonary_artery": TubeChain([fork_pt, airways.hila[+1]], p.pulmonary_artery_radius_mm),
            "left_pulmonary_artery": TubeChain([fork_pt, airways.hila[-1]], p.pulmonary_artery_radius_mm),
        }
