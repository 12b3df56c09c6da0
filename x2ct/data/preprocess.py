"""Bring a canonical CT onto a fixed training grid: bed removal, isotropic spacing, centred field of view, size.

Every step keeps world coordinates exact: it returns a new `CTVolume` whose ``origin`` and ``spacing`` say where
each voxel centre lies in RAS mm, so a point keeps its world position through the whole pipeline.
Array layout (D, H, W) and the origin's (x, y, z) = (W, H, D) world axes follow `CTVolume`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from x2ct.data.ct_volume import CTVolume

# HU of air: the usual pad value and what remove_bed puts outside the body.
AIR_HU = -1000.0

# remove_bed: voxels above this HU are candidate body (air and lung are far below, soft tissue far above).
BODY_THRESHOLD_HU = -500.0

# remove_bed: in-plane opening radius (mm) that detaches thin table surfaces or cushion covers touching the back.
BED_OPENING_MM = 2.0


@dataclass
class Preprocessing:
    """How `preprocess_ct` maps a CT onto the training grid (filled from the YAML data config).

    Attributes:
        spacing_mm: isotropic voxel size (mm) of the intermediate resampling.
        fov_mm: physical field of view (D, H, W) in mm, centred on the volume centre; one value for a cube.
        size: output grid (D, H, W) in voxels; one value for a cube. The output spacing is fov_mm / size.
        hu_window: (min, max) HU of `x2ct.ops.hu_window.window_normalise`; recorded here, applied later when
            the data are normalised for the network.
        pad_hu: HU for voxels outside the scanned volume (padding) and outside the body after bed removal.
        remove_bed: mask out the patient table and everything else outside the body first.
    """

    spacing_mm: float
    fov_mm: float | tuple[float, float, float]
    size: int | tuple[int, int, int]
    hu_window: tuple[float, float]
    pad_hu: float = AIR_HU
    remove_bed: bool = False

    def __post_init__(self) -> None:
        if not self.spacing_mm > 0:
            raise ValueError(f"Preprocessing.spacing_mm must be > 0, got {self.spacing_mm}")
        if any(f <= 0 for f in _triple(self.fov_mm, "fov_mm")):
            raise ValueError(f"Preprocessing.fov_mm must be > 0, got {self.fov_mm}")
        if any(n < 1 or int(n) != n for n in _triple(self.size, "size")):
            raise ValueError(f"Preprocessing.size must be positive integers, got {self.size}")
        if len(self.hu_window) != 2 or not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"Preprocessing.hu_window must be (min, max) with min < max, got {self.hu_window}")


def preprocess_ct(ct: CTVolume, cfg: Preprocessing) -> CTVolume:
    """Bed removal (if set) -> isotropic `cfg.spacing_mm` -> centred `cfg.fov_mm` -> `cfg.size` grid.

    Output ``hu`` has shape ``cfg.size`` (D, H, W), still in HU, and spans exactly ``cfg.fov_mm`` (spacing
    fov_mm / size), centred on the input volume's centre to within half a ``spacing_mm`` voxel.
    ``metadata["preprocessing"]`` records every parameter (including remove_bed's defaults) and the input's
    shape, spacing and origin (JSON serialisable).
    """
    record = {
        **{k: _plain(v) for k, v in dataclasses.asdict(cfg).items()},
        "input_shape": list(ct.shape),
        "input_spacing": list(ct.spacing),
        "input_origin": list(ct.origin),
        "bed_threshold_hu": BODY_THRESHOLD_HU,
        "bed_opening_mm": BED_OPENING_MM,
    }
    if cfg.remove_bed:
        ct = remove_bed(ct, pad_hu=cfg.pad_hu)
    ct = resample_isotropic(ct, cfg.spacing_mm)
    ct = crop_or_pad(ct, cfg.fov_mm, pad_hu=cfg.pad_hu)
    size = tuple(int(n) for n in _triple(cfg.size, "size"))
    fov = tuple(float(f) for f in _triple(cfg.fov_mm, "fov_mm"))
    if ct.shape != size or not np.allclose(ct.extent_mm, fov, rtol=1e-9, atol=0.0):
        ct = resize_to(ct, size, extent_mm=fov)
    record["output_spacing"] = list(ct.spacing)
    return dataclasses.replace(ct, metadata={**ct.metadata, "preprocessing": record})


def resample_isotropic(ct: CTVolume, spacing_mm: float) -> CTVolume:
    """Trilinear resampling to cubic voxels of ``spacing_mm``, keeping the volume centre fixed.

    The new shape is round(extent / spacing_mm) per axis, so the physical extent changes by less than one
    voxel. Samples outside the old voxel centres (at most half a voxel) take the edge value.
    """
    if not spacing_mm > 0:
        raise ValueError(f"resample_isotropic: spacing_mm must be > 0, got {spacing_mm}")
    shape = tuple(max(1, round(e / spacing_mm)) for e in ct.extent_mm)
    return _resample_centred(ct, shape, (float(spacing_mm),) * 3)


def resize_to(ct: CTVolume, size: int | Sequence[int],
              extent_mm: float | Sequence[float] | None = None) -> CTVolume:
    """Trilinear resampling to a grid of ``size`` (D, H, W) voxels around the same centre.

    The new grid spans the current extent, or ``extent_mm`` (D, H, W) when given: `crop_or_pad` keeps whole
    voxels, so it meets a field of view only to within a voxel, and this last step makes the grid span the field
    of view exactly (spacing = extent_mm / size). ``extent_mm`` may differ from the current extent by at most one
    voxel per axis (the edge values are extended over that margin).
    """
    shape = tuple(int(n) for n in _triple(size, "size"))
    if any(n < 1 for n in shape):
        raise ValueError(f"resize_to: size must be positive, got {size}")
    extent = ct.extent_mm if extent_mm is None else tuple(float(e) for e in _triple(extent_mm, "extent_mm"))
    for axis, (new, old, s) in enumerate(zip(extent, ct.extent_mm, ct.spacing, strict=True)):
        if abs(new - old) > s * (1 + 1e-6):
            raise ValueError(f"resize_to: extent_mm {extent} differs from the volume's extent {ct.extent_mm} by "
                             f"more than one voxel on axis {'DHW'[axis]}; crop or pad it first (crop_or_pad)")
    spacing = tuple(e / n for e, n in zip(extent, shape, strict=True))
    return _resample_centred(ct, shape, spacing)


def crop_or_pad(ct: CTVolume, fov_mm: float | Sequence[float], pad_hu: float = AIR_HU) -> CTVolume:
    """Crop or pad each axis to round(fov_mm / spacing) voxels around the volume centre.

    Whole voxels only (no interpolation), so the field of view is met to the nearest voxel (`resize_to` with
    ``extent_mm`` makes it exact). When the old and new voxel counts differ in parity the centre moves by
    half a voxel, and the origin records that exactly. Padding uses ``pad_hu``.
    """
    fov = _triple(fov_mm, "fov_mm")
    target = tuple(max(1, round(f / s)) for f, s in zip(fov, ct.spacing, strict=True))
    out = np.full(target, pad_hu, dtype=np.float32)
    src, dst = [], []
    offsets = []  # index in the old grid of the new voxel 0, per axis (negative when padding)
    for n_old, n_new in zip(ct.shape, target, strict=True):
        start = (n_old - n_new) // 2
        offsets.append(start)
        lo, hi = max(start, 0), min(start + n_new, n_old)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = ct.hu[tuple(src)]
    origin = _shift_origin(ct.origin, [o * s for o, s in zip(offsets, ct.spacing, strict=True)])
    return dataclasses.replace(ct, hu=out, origin=origin)


def remove_bed(ct: CTVolume, threshold_hu: float = BODY_THRESHOLD_HU, opening_mm: float = BED_OPENING_MM,
               pad_hu: float = AIR_HU) -> CTVolume:
    """Keep only the body; the table, cushions, blankets and air become ``pad_hu``.

    Body = voxels above ``threshold_hu`` in the largest 3D connected component after an in-plane opening of
    ``opening_mm`` (which cuts thin table surfaces that touch the back), with holes (lungs, airways) filled slice
    by slice. Voxels inside the body keep their HU. Assumes the table is separated from the body by more than
    ``opening_mm`` of material below the threshold (the usual air gap or foam cushion) except for thin layers.
    """
    candidate = ct.hu > threshold_hu
    radius = round(opening_mm / min(ct.spacing[1:])) if opening_mm > 0 else 0
    in_slice = _in_slice_structure()
    if radius:
        body = _largest_component(ndimage.binary_erosion(candidate, in_slice, iterations=radius))
        body = ndimage.binary_dilation(body, in_slice, iterations=radius) & candidate
    else:
        body = _largest_component(candidate)
    if not body.any():
        raise ValueError(f"remove_bed: {ct.source or '<array>'} has no body: no region above {threshold_hu} HU "
                         f"survives an opening of {opening_mm} mm")
    body = _fill_holes_per_slice(body)
    return dataclasses.replace(ct, hu=np.where(body, ct.hu, np.float32(pad_hu)).astype(np.float32))


# ---------------------------------------------------------------------------------------------------- helpers


def _resample_centred(ct: CTVolume, shape: tuple[int, ...], spacing: tuple[float, ...]) -> CTVolume:
    """Linear resampling onto ``shape`` voxels of ``spacing`` mm sharing the old grid's centre.

    New index m maps to old index (m - (n_new - 1) / 2) * s_new / s_old + (n_old - 1) / 2 on each axis.
    """
    scale = np.array([s_new / s_old for s_new, s_old in zip(spacing, ct.spacing, strict=True)])
    n_old, n_new = np.array(ct.shape, dtype=np.float64), np.array(shape, dtype=np.float64)
    offset = (n_old - 1) / 2 - scale * (n_new - 1) / 2
    hu = ndimage.affine_transform(ct.hu, scale, offset=offset, output_shape=shape, output=np.float32, order=1,
                                  mode="nearest")
    # World position of the new voxel 0 = old position of (fractional) old index `offset`.
    origin = _shift_origin(ct.origin, offset * np.array(ct.spacing))
    return dataclasses.replace(ct, hu=hu, spacing=tuple(float(s) for s in spacing), origin=origin)


def _shift_origin(origin: Sequence[float], shift_dhw_mm: Sequence[float]) -> tuple[float, float, float]:
    """Move an (x, y, z) origin by a shift given in (D, H, W) order (D is z, H is y, W is x)."""
    sd, sh, sw = (float(v) for v in shift_dhw_mm)
    x, y, z = origin
    return (x + sw, y + sh, z + sd)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)  # face connectivity
    if n == 0:
        return mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill background regions of each axial (D) slice that do not touch the slice border.

    One 3D labelling whose structure only connects within a slice, instead of a loop of 2D hole fills.
    """
    labels, _ = ndimage.label(~mask, structure=_in_slice_structure())
    touches_border = np.zeros(labels.max() + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        touches_border[edge] = True
    return mask | ~touches_border[labels]  # label 0 (the mask itself) is kept by the `mask |`


def _in_slice_structure() -> np.ndarray:
    """3x3x3 face-connectivity structure that links voxels only within one axial (D) slice."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    return structure


def _triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """One value or three (D, H, W) values as a 3-tuple."""
    if isinstance(value, int | float | np.number):
        return (value,) * 3
    values = tuple(value)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise ValueError(f"{name} must be one value or three (D, H, W), got {value}")
    return values


def _plain(value: Any) -> Any:
    """Config values as JSON types (tuples and OmegaConf lists become lists)."""
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return [_plain(v) for v in value]
