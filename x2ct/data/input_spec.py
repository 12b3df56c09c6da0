"""What a model trained on a data set expects of its inputs, and the grid its output volumes live on.

The data set writes it (``PatientDRRDataset.input_spec()``), the checkpoint stores it (``to_dict``), and the
projection loss, the adversarial projections, evaluation and predict.py read it. Evaluation and inference ask one
question of it, ``compatible_with``: can a model trained on this spec take data described by that one?
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from x2ct.physics.geometry import ProjectionGeometry

RADIOGRAPHS = ("log", "intensity")


class InputSpecError(ValueError):
    """An input spec that is missing, lacks a key or holds a wrong value, or inputs that do not match it."""


@dataclass(frozen=True)
class InputSpec:
    """Views, their preparation and the CT grid.

    Attributes:
        views: the view names, in the model's order; ``angles_deg`` their gantry angles.
        view_shape: detector (rows, cols) of every view.
        radiograph: ``"log"`` (line integrals, normalised by ``normalisation`` with ``scale``) or ``"intensity"``
            (transmission ``exp(-p)``).
        hu_window: the HU range mapped to [0, 1] in the volumes.
        ct_size, ct_fov_mm: the CT grid (D, H, W) in voxels and mm; ``mu_water`` the attenuation of water (1/mm).
        geometry: the acquisition of these views (``angles_deg`` its angles).
        protocol: the preparation preset that made the data set, if recorded.
        view_quantiles: the training views' intensity distribution per view name, which predict.py matches a
            clinical radiograph to (``x2ct.data.radiograph_fit``); None where unknown.
    """

    views: tuple[str, ...]
    angles_deg: tuple[float, ...]
    view_shape: tuple[int, int]
    radiograph: str
    normalisation: str
    scale: float | None
    hu_window: tuple[float, float]
    ct_size: tuple[int, int, int]
    ct_fov_mm: tuple[float, float, float]
    mu_water: float
    geometry: ProjectionGeometry
    protocol: str | None = None
    view_quantiles: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.radiograph not in RADIOGRAPHS:
            raise InputSpecError(f"input spec: radiograph must be one of {RADIOGRAPHS}, got {self.radiograph!r}")
        if len(self.views) != len(self.angles_deg):
            raise InputSpecError(f"input spec: {len(self.views)} views {list(self.views)} but {len(self.angles_deg)} "
                                 f"angles {list(self.angles_deg)}")

    # ------------------------------------------------------------------------------------------ plain types

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, the keys a checkpoint stores (``extra.input_spec``)."""
        return {"protocol": self.protocol, "views": list(self.views), "angles_deg": list(self.angles_deg),
                "view_shape": list(self.view_shape), "radiograph": self.radiograph,
                "normalisation": self.normalisation, "scale": self.scale, "hu_window": list(self.hu_window),
                "ct_size": list(self.ct_size), "ct_fov_mm": list(self.ct_fov_mm), "mu_water": self.mu_water,
                "geometry": self.geometry.to_dict(),
                "view_quantiles": None if self.view_quantiles is None else dict(self.view_quantiles)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "input spec") -> InputSpec:
        """The spec of ``to_dict``'s keys; ``where`` (a file) names the source in the error for a missing key.
        ``protocol`` and ``view_quantiles`` may be absent (specs stored before they were recorded)."""
        needed = ("views", "angles_deg", "view_shape", "radiograph", "normalisation", "scale", "hu_window",
                  "ct_size", "ct_fov_mm", "mu_water", "geometry")
        missing = [key for key in needed if key not in d]
        if missing:
            raise InputSpecError(f"{where}: the input spec lacks {missing} (it holds {sorted(d)})")
        geometry = d["geometry"]
        return cls(views=tuple(str(v) for v in d["views"]), angles_deg=tuple(float(a) for a in d["angles_deg"]),
                   view_shape=tuple(int(n) for n in d["view_shape"]), radiograph=str(d["radiograph"]),
                   normalisation=str(d["normalisation"]),
                   scale=None if d["scale"] is None else float(d["scale"]),
                   hu_window=tuple(float(v) for v in d["hu_window"]), ct_size=tuple(int(n) for n in d["ct_size"]),
                   ct_fov_mm=tuple(float(v) for v in d["ct_fov_mm"]), mu_water=float(d["mu_water"]),
                   geometry=(geometry if isinstance(geometry, ProjectionGeometry)
                             else ProjectionGeometry.from_dict(dict(geometry))),
                   protocol=d.get("protocol"), view_quantiles=d.get("view_quantiles"))

    # ------------------------------------------------------------------------------------------ the question

    @property
    def voxel_spacing_mm(self) -> tuple[float, float, float]:
        """(D, H, W) spacing of the CT grid."""
        return tuple(f / n for f, n in zip(self.ct_fov_mm, self.ct_size, strict=True))

    def compatible_with(self, data: InputSpec, *, any_views: bool = False) -> list[str]:
        """Why a model trained on this spec cannot take data described by ``data`` (empty: it can).

        The views must be the same (or, with ``any_views``, a model that takes any views with their angles, any
        views of the same shape), with the same radiograph kind; the volumes must live on a grid of the same size
        and mean the same HU. The normalisation may differ: the data's views are then scaled as the model's were
        (``normalisation``, ``scale``), which the caller does.
        """
        reasons = []
        if not any_views and list(data.views) != list(self.views):
            reasons.append(f"the model takes exactly the views it was trained on, {list(self.views)}, not "
                           f"{list(data.views)} (only a model built for any number of views takes others)")
        if tuple(data.view_shape) != tuple(self.view_shape):
            reasons.append(f"views of {list(data.view_shape)} pixels, the model's are {list(self.view_shape)}")
        if data.radiograph != self.radiograph:
            reasons.append(f"radiograph {data.radiograph!r}, the model's is {self.radiograph!r}")
        if tuple(data.ct_size) != tuple(self.ct_size):
            reasons.append(f"CTs of {list(data.ct_size)} voxels, the model's are {list(self.ct_size)}")
        if tuple(data.hu_window) != tuple(self.hu_window):
            reasons.append(f"the HU window {list(data.hu_window)} mapped to [0, 1], the model's is "
                           f"{list(self.hu_window)}: its volumes would mean other HU")
        return reasons
