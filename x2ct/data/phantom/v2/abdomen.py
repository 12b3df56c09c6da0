"""Under the diaphragm: the whole liver, the spleen and the stomach (with an anterior gas cap when supine).

Each organ is held under its hemidiaphragm and inside the rib cage (v1's ``BodyFrame``), SDFs in mm.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame
from x2ct.data.phantom.organs import Liver
from x2ct.data.phantom.sdf import ellipse_sdf, height_field_sdf
from x2ct.data.phantom.v2.shapes import Ellipsoid, tilted_axes

_LEFT_TIP_HEIGHT = 0.35  # the liver's height at its left tip / at its right edge
_SPLEEN_TILT_DEG = -30.0  # long axis leans back toward the posterior ribs
_STOMACH_WALL_MM = 3.0


class _UnderDome:
    """Shared constraint: below ``side``'s hemidiaphragm and inside the rib cage."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, side: int) -> None:
        self.p, self.frame, self.side = p, frame, side

    def sdf(self, x, y, z) -> np.ndarray:
        h, hx, hy = self.frame.dome(self.side, x, y)
        under = height_field_sdf(z, h, hx, hy) + self.p.diaphragm_thickness_mm
        return np.maximum(under, self.frame.cage_sdf(x, y, z) + 0.5 * self.p.rib_thickness_mm)


class WholeLiver:
    """v1's liver dome with an inferior edge rising toward the left lobe's tip and a rounded AP outline."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame) -> None:
        self.p, self.frame, self.dome = p, frame, Liver(p, frame)
        self.top = frame.dome_z[+1]
        self.bottom = self.top - p.liver_height_mm
        self.bounds = np.array([[-p.liver_left_extent_mm, frame.cage_half_width0], [-np.inf, np.inf],
                                [self.bottom, self.top]])

    def sdf(self, x, y, z) -> np.ndarray:
        p, frame = self.p, self.frame
        span = frame.cage_half_width0 + p.liver_left_extent_mm
        rise = np.clip((x + p.liver_left_extent_mm) / span, 0.0, 1.0)
        z_low = self.top - p.liver_height_mm * (_LEFT_TIP_HEIGHT + (1.0 - _LEFT_TIP_HEIGHT) * rise)
        yc, a, b = frame.cage(z)
        outline = ellipse_sdf(x - 0.3 * a, y - yc, 0.85 * a, p.liver_half_depth_fraction * b)
        return np.maximum(np.maximum(self.dome.sdf(x, y, z), z_low - z), outline)


class Spleen:
    """An ellipsoid against the left posterior ribs under the left dome."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame) -> None:
        self.under = _UnderDome(p, frame, -1)
        z = frame.dome_z[-1] - 0.5 * p.dome_depth_mm - 0.5 * p.spleen_half_length_mm
        yc, a, b = frame.cage(z)
        centre = [-(a - p.spleen_half_thickness_mm - p.rib_thickness_mm), yc - 0.4 * b, z]
        self.shape = Ellipsoid(centre, tilted_axes(_SPLEEN_TILT_DEG),
                               [p.spleen_half_thickness_mm, p.spleen_half_width_mm, p.spleen_half_length_mm])
        self.bounds = self.shape.bounds

    def sdf(self, x, y, z) -> np.ndarray:
        return np.maximum(self.shape.sdf(x, y, z), self.under.sdf(x, y, z))


class Stomach:
    """An ellipsoid in the left upper abdomen, in front of the spleen; gas (if any) rises to its front."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, has_gas: bool) -> None:
        self.under = _UnderDome(p, frame, -1)
        z = frame.dome_z[-1] - 0.3 * p.dome_depth_mm - 0.8 * p.stomach_half_height_mm
        yc, a, b = frame.cage(z)
        self.shape = Ellipsoid([-0.4 * a, yc + 0.2 * b, z], np.eye(3),
                               [p.stomach_half_width_mm, p.stomach_half_depth_mm, p.stomach_half_height_mm])
        self.bounds = self.shape.bounds
        self.gas_level = (yc + 0.2 * b + p.stomach_half_depth_mm * (1.0 - 2.0 * p.stomach_gas_fraction)
                          if has_gas else np.inf)  # y above which the lumen holds gas

    def sdf(self, x, y, z) -> np.ndarray:
        return np.maximum(self.shape.sdf(x, y, z), self.under.sdf(x, y, z))

    def gas_sdf(self, x, y, z, stomach: np.ndarray) -> np.ndarray:
        """The gas cap inside the wall, given the stomach's SDF on the same points."""
        return np.maximum(stomach + _STOMACH_WALL_MM, self.gas_level - y)
