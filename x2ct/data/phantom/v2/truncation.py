"""Scans shorter than the grid along the body axis, as clinical CTs are: which slab of slices was scanned.

A chest CT is planned on the scout from the lung apices to below the posterior costophrenic recesses, with a
margin at each end that the technologist sets; everything beyond is never scanned. The slab is drawn in world mm
from the patient's own lungs (apex and lowest recess) and two margins, so the same patient is cut at the same
height on any grid; the kept slices are those whose centres lie in it.
"""

from __future__ import annotations

import numpy as np


def scan_slab(z: np.ndarray, spacing_z: float, truncated: bool, low_mm: float,
              high_mm: float) -> tuple[slice, list[float]]:
    """Slices (along D) of the scanned slab [``low_mm``, ``high_mm``] (world z) and its range [low edge, high edge].

    ``z`` (D,) are the slice centres, ascending. An untruncated scan, or a slab that covers the grid, keeps every
    slice.
    """
    keep = np.flatnonzero((z >= low_mm) & (z < high_mm)) if truncated else np.arange(z.size)
    if keep.size == 0:  # a slab thinner than one slice keeps the slice nearest its centre
        keep = np.array([int(np.argmin(np.abs(z - 0.5 * (low_mm + high_mm))))])
    k0, k1 = int(keep[0]), int(keep[-1]) + 1
    edges = [float(z[k0]) - 0.5 * spacing_z, float(z[k1 - 1]) + 0.5 * spacing_z]
    return slice(k0, k1), edges


def lung_extent_z(apex_z: float, dome_z: dict[int, float], dome_depth_mm: float, dome_depth_ap_ratio: float
                  ) -> tuple[float, float]:
    """World z (mm) of the lowest posterior costophrenic recess and of the lung apex: what a chest CT must cover.

    The recess lies ``dome_depth * ap_ratio`` below the lower dome's top (`x2ct.data.phantom.body.BodyFrame.dome`).
    """
    return min(dome_z.values()) - dome_depth_mm * dome_depth_ap_ratio, apex_z
