"""Anatomical regions for region-wise metrics: lungs, bone and heart, one label map per prepared patient.

Sources name their structures differently (the phantom generator's ``LABELS``, TotalSegmentator's ids in the
example CT's ``structures.csv``); both are mapped onto one small legend, ``REGIONS``, and carried onto the
training grid with the CT. A voxel of the grid belongs to the region of the source label at its centre
(nearest neighbour in world coordinates), the same rule the phantom uses for its own labels, so the region
masks follow the stored CT exactly whatever resampling the preprocessing did.

Stored as ``patients/<id>/regions.nii.gz`` (uint8, the CT's affine); 0 is "none of these".
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from x2ct.data.ct_volume import CTVolume

REGIONS: dict[str, int] = {"lungs": 1, "bone": 2, "heart": 3}

# Phantom label names in each region, for both generator versions (``LABELS_V2`` keeps v1's ``LABELS`` ids and
# appends its own): the lungs are the organ, vessels and nodules inside them included; bone is every bone; the
# heart is the myocardium and its chambers.
PHANTOM_REGIONS: dict[str, tuple[str, ...]] = {
    "lungs": ("lung", "pulmonary_vessel", "nodule"),
    "bone": ("bone", "clavicle", "scapula", "humerus"),
    "heart": ("heart", "left_ventricle", "right_ventricle", "left_atrium", "right_atrium"),
}

# TotalSegmentator structure names (structures.csv of the example CT) by prefix; costal cartilage is not bone.
TOTALSEGMENTATOR_PREFIXES: dict[str, tuple[str, ...]] = {
    "lungs": ("lung_",),
    "bone": ("vertebrae_", "rib_", "sternum", "clavicula_", "scapula_", "humerus_", "sacrum", "hip_", "femur_",
             "skull"),
    "heart": ("heart",),
}


def phantom_region_map(labels: np.ndarray) -> np.ndarray:
    """Phantom label map (v1 ``LABELS`` or v2 ``LABELS_V2`` ids) -> region map (ids of ``REGIONS``), uint8."""
    from x2ct.data.phantom import LABELS_V2

    lookup = np.zeros(max(LABELS_V2.values()) + 1, dtype=np.uint8)
    for region, names in PHANTOM_REGIONS.items():
        for name in names:
            lookup[LABELS_V2[name]] = REGIONS[region]
    if labels.size and int(labels.max()) >= len(lookup):
        raise ValueError(f"phantom label map holds id {int(labels.max())}, unknown to phantom.LABELS_V2")
    return lookup[labels]


def read_structure_legend(path: str | os.PathLike) -> dict[str, int]:
    """``structures.csv`` (columns ``structure``, ``id``) -> {structure name: label id}."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {row["structure"]: int(row["id"]) for row in rows}
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a structure legend with 'structure' and 'id' columns ({err})") from err


def legend_region_map(labels: np.ndarray, legend: Mapping[str, int],
                      prefixes: Mapping[str, tuple[str, ...]] = TOTALSEGMENTATOR_PREFIXES) -> np.ndarray:
    """A label map with a named legend -> region map: structures whose name starts with a region's prefixes."""
    ids = np.asarray(labels).astype(np.int64)
    out = np.zeros(ids.shape, dtype=np.uint8)
    for region, starts in prefixes.items():
        members = [label for name, label in legend.items() if name.startswith(starts)]
        out[np.isin(ids, members)] = REGIONS[region]
    return out


def regions_on_grid(regions: np.ndarray, source: CTVolume, grid: CTVolume) -> np.ndarray:
    """Carry a region map ``(D, H, W)`` on ``source``'s voxel grid onto ``grid``'s (nearest voxel centre).

    Both volumes are in the same RAS world frame (the preprocessing keeps world coordinates). Grid voxels whose
    centre falls outside the source volume get 0.
    """
    if regions.shape != source.shape:
        raise ValueError(f"region map shape {regions.shape} differs from its CT's {source.shape} ({source.source})")
    # world (x, y, z) of each grid axis' voxel centres, then the source's fractional index along that axis
    out_axes = []
    for n, s_grid, s_src, o_grid, o_src in zip(grid.shape, grid.spacing, source.spacing, _dhw(grid.origin),
                                               _dhw(source.origin), strict=True):
        world = o_grid + s_grid * np.arange(n)
        index = np.rint((world - o_src) / s_src).astype(np.int64)
        out_axes.append(index)
    inside = [(i >= 0) & (i < n) for i, n in zip(out_axes, source.shape, strict=True)]
    clipped = [np.clip(i, 0, n - 1) for i, n in zip(out_axes, source.shape, strict=True)]
    picked = regions[np.ix_(*clipped)]
    mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    return np.where(mask, picked, 0).astype(np.uint8)


def save_regions(regions: np.ndarray, like: CTVolume, path: str | os.PathLike) -> Path:
    """Write a region map as uint8 NIfTI with ``like``'s affine, atomically."""
    import nibabel as nib

    from x2ct.atomic_io import atomic_path

    img = nib.Nifti1Image(np.ascontiguousarray(regions.transpose(2, 1, 0)).astype(np.uint8), like.affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(like.affine, code=1)
    img.header.set_sform(like.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def load_regions(path: str | os.PathLike) -> np.ndarray:
    """Read ``regions.nii.gz`` back as uint8 ``(D, H, W)`` in the CT's canonical layout."""
    from x2ct.data.readers import read_nifti

    volume = read_nifti(path)
    values = volume.hu
    if not np.all((values >= 0) & (values <= max(REGIONS.values())) & (values == np.round(values))):
        raise ValueError(f"{path}: not a region map (values must be integers 0..{max(REGIONS.values())})")
    return values.astype(np.uint8)


def _dhw(origin_xyz) -> tuple[float, float, float]:
    x, y, z = origin_xyz
    return (z, y, x)
