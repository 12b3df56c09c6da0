"""The one in-memory form of a CT scan that every reader produces and every later step consumes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from x2ct.atomic_io import atomic_path


@dataclass
class CTVolume:
    """A CT in canonical orientation, in Hounsfield units.

    Array layout ``hu[k, j, i]`` with shape ``(D, H, W)``; the axes follow RAS+ world coordinates (as
    ``nibabel.as_closest_canonical``):

    ========  ======  ==========================================
    axis      index   increases towards
    ========  ======  ==========================================
    D (k)     0       patient superior (head)   -- world +z
    H (j)     1       patient anterior (front)  -- world +y
    W (i)     2       patient right             -- world +x
    ========  ======  ==========================================

    ``spacing`` is in mm in the same (D, H, W) order. ``origin`` is the RAS world position in mm, as (x, y, z),
    of the centre of voxel ``hu[0, 0, 0]``.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CTVolume from {self.source or '<array>'}: expected a 3D array (D, H, W), "
                             f"got shape {tuple(self.hu.shape)}")
        if len(self.spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"CTVolume from {self.source or '<array>'}: spacing must be 3 positive mm values "
                             f"(D, H, W), got {self.spacing}")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size (D, H, W) in mm, voxel edge to voxel edge."""
        return tuple(n * s for n, s in zip(self.hu.shape, self.spacing, strict=True))

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS affine for the NIfTI array ``hu.transpose(2, 1, 0)`` (index order i, j, k)."""
        sd, sh, sw = self.spacing
        aff = np.diag([sw, sh, sd, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def to_nifti(self):
        import nibabel as nib

        img = nib.Nifti1Image(np.ascontiguousarray(self.hu.transpose(2, 1, 0)).astype(np.float32), self.affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(self.affine, code=1)
        img.header.set_sform(self.affine, code=1)
        return img

    def save_nifti(self, path: str | os.PathLike) -> Path:
        """Write a NIfTI file atomically (float32 HU, RAS affine with the true spacing)."""
        import nibabel as nib

        with atomic_path(path) as tmp:
            nib.save(self.to_nifti(), tmp)
        return Path(path)
