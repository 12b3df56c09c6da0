"""Render the X-ray views of a CT: the one place where a `CTVolume` meets the projector.

Both dataset preparation and on-the-fly rendering in `PatientDRRDataset` call `render_views`, so stored and
live views come from the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from x2ct.data.ct_volume import CTVolume
from x2ct.physics.attenuation import hu_to_mu
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import render_drr


def render_views(ct: CTVolume, geometry: ProjectionGeometry, mu_water: float,
                 view_size: Sequence[int] | None = None) -> torch.Tensor:
    """Line-integral images ``(V, rows, cols)`` float32 of ``ct`` (HU), centred on the isocentre.

    ``view_size`` resamples the rendered detector images to (rows, cols) with area-like antialiasing, as
    protocols that render a large detector and train on smaller images do.
    """
    hu = torch.from_numpy(np.ascontiguousarray(ct.hu, dtype=np.float32))
    mu = hu_to_mu(hu, mu_water)[None, None]
    with torch.no_grad():
        images = render_drr(mu, ct.spacing, geometry)[0]
    if view_size is not None and tuple(view_size) != tuple(images.shape[-2:]):
        images = F.interpolate(images[None], size=tuple(int(n) for n in view_size), mode="bilinear",
                               antialias=True, align_corners=False)[0]
    return images.float()


def resized_geometry(geometry: ProjectionGeometry, view_size: Sequence[int] | None) -> ProjectionGeometry:
    """The geometry whose detector directly has ``view_size`` pixels covering the same area."""
    if view_size is None:
        return geometry
    rows, cols = (int(n) for n in view_size)
    pr, pc = geometry.pixel_spacing_mm
    r0, c0 = geometry.detector_shape
    return replace(geometry, detector_shape=(rows, cols), pixel_spacing_mm=(pr * r0 / rows, pc * c0 / cols))


def view_names(views: Sequence[str | float]) -> list[str]:
    """Stable names for views: the given name ('pa', 'lateral') or ``angle_<deg>`` for a number."""
    return [v.lower() if isinstance(v, str) else f"angle_{float(v):g}" for v in views]
