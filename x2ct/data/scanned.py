"""Which voxels of a training grid were actually scanned: a mask stored beside each prepared CT.

A clinical CT rarely fills the training grid. Along the body axis the scan ends where the technologist set it
(the example CT covers 332.5 mm of a 352 mm grid); in the axial plane the scanner fills everything outside its
reconstruction circle with one constant below air (-2048, -3024 HU). Preparation pads both with air, so the stored
CT says "air" where nobody looked. A model that predicts a body there from radiographs that show one is not wrong,
and a metric or a loss must not charge it as if it were.

A grid voxel is *scanned* when its centre lies inside the source volume's extent (within half a source voxel of
its outermost voxel centres, the nearest-voxel rule of `x2ct.data.regions.regions_on_grid`) and the nearest source
voxel is not scanner padding. Stored as ``patients/<id>/scanned.nii.gz`` (uint8 0/1, the CT's affine).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from x2ct.data.ct_volume import CTVolume
from x2ct.data.regions import regions_on_grid, save_regions


def scanner_padding(ct: CTVolume) -> np.ndarray:
    """``(D, H, W)`` bool: the voxels holding the scanner's padding constant.

    Padding is the volume's minimum when it lies below the physical CT scale (`readers.hu_outside_scale`): one
    constant outside the reconstruction circle, never a measured value. A volume without padding gives all False.
    """
    from x2ct.data.readers import hu_outside_scale

    padding_hu = hu_outside_scale(ct.hu)["padding_hu"]
    if padding_hu is None:
        return np.zeros(ct.shape, dtype=bool)
    return ct.hu == np.float32(padding_hu)


def padding_as_air(ct: CTVolume, padding: np.ndarray, air_hu: float) -> CTVolume:
    """The CT with its scanner padding set to ``air_hu``, so that resampling does not blend -2048 HU into the
    voxels at the edge of the reconstruction circle (and the views see air there, as outside the scan)."""
    if not padding.any():
        return ct
    return dataclasses.replace(ct, hu=np.where(padding, np.float32(air_hu), ct.hu).astype(np.float32))


def scanned_on_grid(source: CTVolume, grid: CTVolume, padding: np.ndarray | None = None) -> np.ndarray:
    """``(D, H, W)`` bool on ``grid``: centre inside ``source``'s extent and not on its scanner padding.

    ``source`` and ``grid`` share the RAS world frame (the preprocessing keeps world coordinates); ``padding`` is
    `scanner_padding` of ``source`` (None: none).
    """
    measured = np.ones(source.shape, dtype=np.uint8) if padding is None else (~padding).astype(np.uint8)
    return regions_on_grid(measured, source, grid).astype(bool)


def save_scanned(scanned: np.ndarray, like: CTVolume, path: str | os.PathLike) -> Path:
    """Write a scanned-voxel mask as uint8 NIfTI with ``like``'s affine, atomically."""
    return save_regions(scanned.astype(np.uint8), like, path)


def load_scanned(path: str | os.PathLike) -> np.ndarray:
    """Read ``scanned.nii.gz`` back as bool ``(D, H, W)``; anything but 0/1 is an error naming the file."""
    from x2ct.data.readers import read_nifti

    values = read_nifti(path).hu
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{path}: not a scanned-voxel mask (values must be 0 or 1)")
    return values.astype(bool)
