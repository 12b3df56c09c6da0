"""The patient table: a concave composite shell with a foam core under the back, a foam mattress gap above it.

The table belongs to the scanner, so it lies in world coordinates (the patient may be slightly rotated on it).
Its top sits ``table_gap_mm`` below the lowest point of the patient's back, found from points on the back
surface rotated into the world: the gap holds whatever the patient's pose.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from x2ct.data.phantom.body import BodyFrame

_BACK_SAMPLES = np.linspace(-1.0, 1.0, 21)
_BACK_Z_SPAN_MM = 300.0  # back points sampled over this height about the volume centre
_BACK_X_FRACTION = 0.6  # ... and this share of the body's half-width (the flat part of the back)


class Table:
    """Shell and core SDFs (world mm) of the table; ``top_y`` its top at the midline."""

    def __init__(self, p: SimpleNamespace, frame: BodyFrame, rotation: np.ndarray) -> None:
        self.p = p
        xs = _BACK_X_FRACTION * frame.body_half_width * _BACK_SAMPLES
        zs = 0.5 * _BACK_Z_SPAN_MM * _BACK_SAMPLES
        gx, gz = np.meshgrid(xs, zs)
        back = np.stack([gx.ravel(), np.full(gx.size, p.body_center_y_mm - frame.body_half_depth), gz.ravel()])
        self.lowest_back_y = float((rotation @ back)[1].min())
        self.top_y = self.lowest_back_y - p.table_gap_mm
        self.half_width = p.table_half_width_mm

    def surface_y(self, x) -> np.ndarray:
        """Top surface height at x: concave, rising toward the edges."""
        return self.top_y + x * x / (2.0 * self.p.table_curvature_radius_mm)

    def sdf(self, x, y, inset: float = 0.0) -> np.ndarray:
        """The table slab (constant along z); ``inset`` shrinks it (the core: inset by the shell thickness)."""
        p = self.p
        below_top = y - self.surface_y(x)
        slab = np.maximum(below_top, -p.table_thickness_mm - below_top)
        return np.maximum(slab, np.abs(x) - self.half_width) + inset

    def pad_sdf(self, x, y) -> np.ndarray:
        """The mattress between the table top and the patient's back."""
        above = self.surface_y(x) - y
        return np.maximum(np.maximum(above, -self.p.table_gap_mm - above), np.abs(x) - 0.8 * self.half_width)
