"""Where the X-ray source and the detector pixels are, for every view.

World frame: RAS+ millimetres (+x patient right, +y anterior, +z superior) with the isocentre at the origin;
the volume is centred on it. The gantry turns about the z (head-feet) axis:

=====================  ===============================  =============================================
gantry angle           source at                        image as displayed (rows top->bottom, cols left->right)
=====================  ===============================  =============================================
0   (frontal, PA)      posterior, detector anterior     head->feet, patient right->left
90  (lateral, left)    patient right, detector left     head->feet, anterior->posterior
180 (AP)               anterior, detector posterior     head->feet, patient left->right (mirror of PA)
270 (lateral, right)   patient left, detector right     head->feet, posterior->anterior
=====================  ===============================  =============================================

Every image is the view from behind the detector looking back at the source, which is how a radiologist reads
a PA chest film and a left lateral film. AP films are conventionally displayed flipped left-right; do that at
display time if needed.

For a gantry angle ``a``: source direction ``e_s = (sin a, -cos a, 0)``, detector column axis
``u = (-cos a, -sin a, 0)`` and row axis ``v = (0, 0, -1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

VIEW_ANGLES_DEG = {"pa": 0.0, "frontal": 0.0, "lateral": 90.0, "left_lateral": 90.0, "ap": 180.0,
                   "right_lateral": 270.0}


@dataclass(frozen=True)
class ProjectionGeometry:
    """A cone-beam or parallel-beam acquisition with any list of gantry angles.

    ``detector_shape`` and ``pixel_spacing_mm`` are (rows, cols); ``detector_offset_mm`` shifts the detector
    centre along (rows, cols) in the detector plane, measured in the image's own row/col directions (a positive
    row offset moves the detector centre toward the feet, so anatomy appears higher in the image).
    """

    kind: Literal["cone", "parallel"]
    angles_deg: tuple[float, ...]
    detector_shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    source_to_isocenter_mm: float | None = None
    source_to_detector_mm: float | None = None
    detector_offset_mm: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "angles_deg", tuple(float(a) for a in self.angles_deg))
        object.__setattr__(self, "detector_shape", tuple(int(n) for n in self.detector_shape))
        object.__setattr__(self, "pixel_spacing_mm", tuple(float(s) for s in self.pixel_spacing_mm))
        object.__setattr__(self, "detector_offset_mm", tuple(float(s) for s in self.detector_offset_mm))
        if self.kind not in ("cone", "parallel"):
            raise ValueError(f"geometry.kind must be 'cone' or 'parallel', got {self.kind!r}")
        if len(self.angles_deg) == 0:
            raise ValueError("geometry.angles_deg is empty: at least one view is needed")
        if len(self.detector_shape) != 2 or min(self.detector_shape) < 1:
            raise ValueError(f"geometry.detector_shape must be (rows, cols) >= 1, got {self.detector_shape}")
        if len(self.pixel_spacing_mm) != 2 or min(self.pixel_spacing_mm) <= 0:
            raise ValueError(f"geometry.pixel_spacing_mm must be two positive values, got {self.pixel_spacing_mm}")
        if self.kind == "cone":
            sid, sdd = self.source_to_isocenter_mm, self.source_to_detector_mm
            if sid is None or sdd is None:
                raise ValueError("cone-beam geometry needs source_to_isocenter_mm and source_to_detector_mm")
            if not 0 < sid < sdd:
                raise ValueError(f"cone-beam geometry needs 0 < source_to_isocenter_mm ({sid}) < "
                                 f"source_to_detector_mm ({sdd})")

    @property
    def num_views(self) -> int:
        return len(self.angles_deg)

    @property
    def magnification(self) -> float:
        """Detector-plane size of an object at the isocentre divided by its true size (1 for parallel beams)."""
        if self.kind == "parallel":
            return 1.0
        return self.source_to_detector_mm / self.source_to_isocenter_mm

    def with_angles(self, angles_deg: Sequence[float]) -> ProjectionGeometry:
        return replace(self, angles_deg=tuple(angles_deg))

    def frames(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        """Unit source direction, column axis and row axis per view, each ``(V, 3)``."""
        a = torch.deg2rad(torch.tensor(self.angles_deg, dtype=torch.float64))
        zero = torch.zeros_like(a)
        e_s = torch.stack([torch.sin(a), -torch.cos(a), zero], dim=-1)
        u = torch.stack([-torch.cos(a), -torch.sin(a), zero], dim=-1)
        v = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(u)
        return tuple(t.to(dtype=dtype, device=device) for t in (e_s, u, v))

    def pixel_positions(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                        ) -> torch.Tensor:
        """World position (mm) of every detector pixel centre, ``(V, rows, cols, 3)``.

        For a parallel beam the detector plane passes through the isocentre (its distance does not matter).
        """
        rows, cols = self.detector_shape
        e_s, u, v = self.frames(torch.float64, device)
        r = (torch.arange(rows, dtype=torch.float64, device=device) - (rows - 1) / 2) * self.pixel_spacing_mm[0]
        c = (torch.arange(cols, dtype=torch.float64, device=device) - (cols - 1) / 2) * self.pixel_spacing_mm[1]
        r = r + self.detector_offset_mm[0]
        c = c + self.detector_offset_mm[1]
        distance = 0.0 if self.kind == "parallel" else self.source_to_detector_mm - self.source_to_isocenter_mm
        centre = -distance * e_s  # (V, 3)
        pos = (centre[:, None, None, :] + r[None, :, None, None] * v[:, None, None, :]
               + c[None, None, :, None] * u[:, None, None, :])
        return pos.to(dtype)

    def rays(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and (unnormalised) directions pointing from source side to detector, each
        ``(V, rows, cols, 3)`` in mm. A point on a ray is ``origin + t * direction``.
        """
        pix = self.pixel_positions(torch.float64, device)
        e_s, _, _ = self.frames(torch.float64, device)
        if self.kind == "cone":
            source = (self.source_to_isocenter_mm * e_s)[:, None, None, :]
            origins = source.expand_as(pix)
            directions = pix - source
        else:
            directions = (-e_s)[:, None, None, :].expand_as(pix)
            origins = pix
        return origins.to(dtype), directions.contiguous().to(dtype)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Continuous detector coordinates ``(row, col)`` of world points, per view: ``(..., 3) -> (V, ..., 2)``.

        ``points`` are RAS ``(x, y, z)`` mm. Coordinates use the index convention of ``pixel_positions()``
        (pixel ``(r, c)``'s centre is at ``(r, c)``), so every point on the ray through a pixel projects to that
        pixel exactly. Cone beams project centrally from the source, parallel beams orthogonally; the detector
        offset is respected. Cone-beam points at or behind the source plane (no ray from the source reaches
        them) get NaN coordinates. Computed in float64, returned in the points' dtype.
        """
        if points.shape[-1:] != (3,):
            raise ValueError(f"ProjectionGeometry.project expects points of shape (..., 3), got {tuple(points.shape)}")
        if not points.is_floating_point():
            raise TypeError(f"ProjectionGeometry.project expects floating-point points, got {points.dtype}")
        e_s, u, v = self.frames(torch.float64, points.device)
        flat = points.reshape(-1, 3).to(torch.float64)
        along_v, along_u = v @ flat.T, u @ flat.T  # (V, N) mm in the plane through the isocentre
        if self.kind == "cone":
            depth = self.source_to_isocenter_mm - e_s @ flat.T  # distance in front of the source plane, (V, N)
            scale = torch.where(depth > 0, self.source_to_detector_mm / depth, torch.nan)
            along_v, along_u = along_v * scale, along_u * scale
        rows, cols = self.detector_shape
        row = (along_v - self.detector_offset_mm[0]) / self.pixel_spacing_mm[0] + (rows - 1) / 2
        col = (along_u - self.detector_offset_mm[1]) / self.pixel_spacing_mm[1] + (cols - 1) / 2
        out = torch.stack([row, col], dim=-1)  # (V, N, 2)
        return out.reshape(self.num_views, *points.shape[:-1], 2).to(points.dtype)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "angles_deg": list(self.angles_deg),
                "detector_shape": list(self.detector_shape), "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "source_to_isocenter_mm": self.source_to_isocenter_mm,
                "source_to_detector_mm": self.source_to_detector_mm,
                "detector_offset_mm": list(self.detector_offset_mm)}

    @classmethod
    def from_dict(cls, d: dict) -> ProjectionGeometry:
        return cls(**d)


def angles_for_views(views: Sequence[str | float]) -> tuple[float, ...]:
    """Map view names ('pa', 'lateral', ...) or numbers to gantry angles in degrees."""
    out = []
    for view in views:
        if isinstance(view, str):
            key = view.lower()
            if key not in VIEW_ANGLES_DEG:
                raise ValueError(f"unknown view name {view!r}; known: {sorted(VIEW_ANGLES_DEG)} or a number")
            out.append(VIEW_ANGLES_DEG[key])
        else:
            if not math.isfinite(float(view)):
                raise ValueError(f"view angle must be finite, got {view!r}")
            out.append(float(view))
    return tuple(out)
