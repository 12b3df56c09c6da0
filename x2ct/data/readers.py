"""Read CT scans (NIfTI files, DICOM series) into one canonical `CTVolume`.

Both formats go through the same last step, `_canonical_volume`: an in-memory NIfTI image with a RAS affine is
reoriented to the closest canonical RAS+ axes (``nibabel.as_closest_canonical``) and transposed to (D, H, W).
So a scan read from DICOM and the same scan converted to NIfTI give identical arrays, spacing and origin.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np

from x2ct.data.ct_volume import CTVolume

NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Rotation of the voxel axes against the world axes (degrees) above which a scan counts as oblique. Canonical
# reorientation only permutes and flips axes, so an oblique scan is stored as if it were axis-aligned.
OBLIQUE_TOLERANCE_DEG = 0.01

# Relative deviation from the nominal slice step that still counts as "the same spacing" in a DICOM series.
SLICE_SPACING_TOLERANCE = 0.05

# Two DICOM slices whose ImageOrientationPatient differ by less than this (direction cosines) are parallel.
ORIENTATION_TOLERANCE = 1e-4

# DICOM files start with a 128-byte preamble and the magic "DICM".
_DICOM_PREAMBLE_BYTES = 128
_DICOM_MAGIC = b"DICM"

# SOP classes of CT images (CT, Enhanced CT, Legacy Converted Enhanced CT Image Storage).
_CT_IMAGE_STORAGE = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}

# LPS (DICOM patient frame) -> RAS (NIfTI world frame): negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# The physical CT scale, the 12-bit one scanners store: -1024 (below air, -1000) to 3071 (dense bone, metal
# saturated at the scale's top; the example CT peaks there). Outside it lies scanner padding (one constant value,
# e.g. -2048 outside the reconstruction circle), an extended-scale scan's metal, or a misread file: a writer
# that stores HU as unsigned 16-bit with intercept -1024 wraps every value below -1024 to about +64,500.
PHYSICAL_HU_RANGE = (-1024.0, 3071.0)


class CTReadError(ValueError):
    """A CT file or folder that cannot be read; the message names it and says what was wrong."""


class HURangeWarning(UserWarning):
    """A source CT holds voxels outside `PHYSICAL_HU_RANGE` (other than padding); the message names the file."""


def read_ct(path: str | os.PathLike) -> CTVolume:
    """Read a source CT from a DICOM series folder or a ``.nii`` / ``.nii.gz`` file.

    Voxels outside `PHYSICAL_HU_RANGE` (`hu_outside_scale`) are counted into ``metadata["hu_outside_scale"]``
    and, if any, warned about (`HURangeWarning`) with the file named: they may be a wrapped or misread file.
    """
    path = Path(path)
    if path.is_dir():
        ct = read_dicom_series(path)
    elif _is_nifti(path):
        ct = read_nifti(path)
    elif not path.exists():
        raise CTReadError(f"{path}: no such file or folder")
    else:
        raise CTReadError(f"{path}: unknown CT format; expected a .nii / .nii.gz file or a folder of DICOM files")
    outside = hu_outside_scale(ct.hu)
    ct.metadata["hu_outside_scale"] = outside
    if outside["below"] or outside["above"]:
        lo, hi = PHYSICAL_HU_RANGE
        warnings.warn(f"{path}: {outside['below']} voxel(s) below {lo:.0f} HU and {outside['above']} above "
                      f"{hi:.0f} HU (HU range [{outside['min']:.0f}, {outside['max']:.0f}]), outside the CT scale "
                      f"[{lo:.0f}, {hi:.0f}]. A DICOM writer storing HU as unsigned 16-bit wraps values below "
                      f"{lo:.0f} to about +64,500; unless this scan uses an extended HU scale for metal, check "
                      "its PixelRepresentation and RescaleIntercept", HURangeWarning, stacklevel=2)
    return ct


def hu_outside_scale(hu: np.ndarray) -> dict:
    """How many voxels of ``hu`` lie outside `PHYSICAL_HU_RANGE`, as plain JSON types: ``below``, ``above``,
    the ``range``, the volume's ``min`` and ``max``, and ``padding`` voxels holding ``padding_hu``.

    Padding is the volume's minimum when it lies below the range: scanners fill the area outside the
    reconstruction circle with one constant (-2048, -3024), which is not a misread value and is not counted in
    ``below``.
    """
    lo, hi = PHYSICAL_HU_RANGE
    low, high = float(hu.min()), float(hu.max())
    padding = int(np.count_nonzero(hu == low)) if low < lo else 0
    return {"range": [lo, hi], "below": int(np.count_nonzero(hu < lo)) - padding,
            "above": int(np.count_nonzero(hu > hi)), "min": low, "max": high,
            "padding_hu": low if padding else None, "padding": padding}


def find_ct_files(folder: str | os.PathLike) -> list[Path]:
    """The CT inputs below ``folder`` (searched recursively), sorted: each NIfTI file and each DICOM folder.

    A folder counts as a DICOM series folder when it directly holds at least one file with the DICOM preamble
    or a ``.dcm`` suffix. Hidden files and folders (names starting with ".", e.g. unfinished atomic writes)
    are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTReadError(f"{folder}: not a folder; cannot search it for CT files")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files = [Path(dirpath) / name for name in filenames if not name.startswith(".")]
        found.extend(f for f in files if _is_nifti(f))
        if any(_looks_like_dicom(f) for f in files if not _is_nifti(f)):
            found.append(Path(dirpath))
    return sorted(found)


# ---------------------------------------------------------------------------------------------------- NIfTI


def read_nifti(path: str | os.PathLike) -> CTVolume:
    """Read a ``.nii`` / ``.nii.gz`` CT in HU into canonical (D, H, W) RAS+ layout.

    Voxel values are the stored values after the header's scl_slope/scl_inter, as float32. A 4D file whose
    extra dimensions all have length 1 is squeezed to 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise CTReadError(f"{path}: no such file")
    try:
        img = nib.load(path)
        raw_header = _raw_header(path, type(img.header))
        # Lazy read: a truncated gzip or short file only fails here.
        data = img.get_fdata(dtype=np.float32)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as e:
        raise CTReadError(f"{path}: cannot read NIfTI file (corrupt or truncated?): {e}") from e

    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise CTReadError(f"{path}: expected a 3D CT volume, got a {data.ndim}D array of shape {data.shape}")
    if min(data.shape) < 2:
        raise CTReadError(f"{path}: expected a 3D CT volume, got a single slice of shape {data.shape}")
    if raw_header["sform_code"] == 0 and np.any(raw_header["pixdim"][1:4] <= 0):
        # Without an sform the spacing comes from pixdim, which nibabel would silently "fix" to 1 or abs().
        raise CTReadError(f"{path}: voxel spacing (pixdim) must be positive, got {raw_header['pixdim'][1:4]}")
    return _canonical_volume(data, img.affine, source=str(path), metadata={"format": "nifti"})


def _raw_header(path: Path, header_class: type) -> nib.Nifti1Header:
    """The header exactly as stored, before nibabel's automatic fixes (which hide zero or negative pixdim)."""
    with nib.openers.ImageOpener(path) as f:
        return header_class.from_fileobj(f, check=False)


def _canonical_volume(data: np.ndarray, affine: np.ndarray, source: str, metadata: dict) -> CTVolume:
    """Turn a NIfTI-layout array ``data[i, j, k]`` with a voxel->RAS ``affine`` into a canonical `CTVolume`.

    The shared last step of every reader. ``metadata`` gains the original axis codes, shape and affine, and
    whether the affine was oblique (then the rotation is dropped: the volume is stored axis-aligned).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise CTReadError(f"{source}: affine contains NaN or inf:\n{affine}")
    voxel_sizes = nib.affines.voxel_sizes(affine)
    if np.any(voxel_sizes <= 0) or abs(np.linalg.det(affine[:3, :3])) <= 0:
        raise CTReadError(f"{source}: voxel spacing must be positive and the affine invertible, got voxel sizes "
                          f"{voxel_sizes.tolist()} from affine\n{affine}")
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise CTReadError(f"{source}: {n_bad} voxels are NaN or inf; a CT must hold finite HU values")

    obliquity_deg = float(np.degrees(np.max(nib.affines.obliquity(affine))))
    oblique = obliquity_deg > OBLIQUE_TOLERANCE_DEG
    if oblique:
        warnings.warn(f"{source}: oblique affine (axes rotated up to {obliquity_deg:.2f} deg from the world "
                      "axes); stored axis-aligned in the closest canonical orientation", stacklevel=3)

    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    hu = np.ascontiguousarray(np.asanyarray(canonical.dataobj).transpose(2, 1, 0), dtype=np.float32)
    spacing_xyz = nib.affines.voxel_sizes(canonical.affine)
    metadata = {
        **metadata,
        "original_axcodes": "".join(nib.aff2axcodes(affine)),
        "original_shape": [int(n) for n in data.shape],
        "original_affine": affine.tolist(),
        "oblique": bool(oblique),
        "obliquity_deg": obliquity_deg,
    }
    return CTVolume(hu=hu, spacing=tuple(float(s) for s in spacing_xyz[::-1]),
                    origin=tuple(float(o) for o in canonical.affine[:3, 3]), source=source, metadata=metadata)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


# ---------------------------------------------------------------------------------------------------- DICOM


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> CTVolume:
    """Read one DICOM CT series from ``folder`` (not recursive) into canonical (D, H, W) RAS+ layout.

    Files that are not DICOM images (DICOMDIR, text, ...) are skipped. If the folder holds several series,
    pass ``series_uid`` to pick one. Slices are ordered along the slice normal (cross product of the
    ImageOrientationPatient rows), rescaled to HU with each slice's RescaleSlope/RescaleIntercept, and must be
    evenly spaced (within `SLICE_SPACING_TOLERANCE`) with the same size, pixel spacing and orientation.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTReadError(f"{folder}: not a folder; a DICOM series is read from a folder of slice files")
    slices = [ds for f in sorted(folder.iterdir()) if f.is_file() and (ds := _read_dicom_image(f)) is not None]
    if not slices:
        raise CTReadError(f"{folder}: no DICOM image files found")
    slices = _select_series(slices, series_uid, folder)
    if len(slices) < 2:
        raise CTReadError(f"{folder}: series has a single slice ({slices[0].filename}); need at least 2 for a "
                          "3D volume")

    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        for ds in slices:
            if tag not in ds:
                raise CTReadError(f"{ds.filename}: DICOM slice lacks {tag}; cannot place it in 3D")
    _check_same(slices, "ImageOrientationPatient", folder, atol=ORIENTATION_TOLERANCE)
    _check_same(slices, "PixelSpacing", folder, atol=0.0)
    _check_same(slices, "Rows", folder, atol=0.0)
    _check_same(slices, "Columns", folder, atol=0.0)

    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # directions of increasing column index / increasing row index (LPS)
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    along_normal = positions @ normal
    order = np.argsort(along_normal, kind="stable")
    slices = [slices[i] for i in order]
    positions, along_normal = positions[order], along_normal[order]
    _check_slice_spacing(along_normal, slices, folder)

    # NIfTI layout data[i, j, k] = pixel[column, row, slice]; affine columns follow the same (i, j, k) order.
    row_spacing, col_spacing = (float(s) for s in slices[0].PixelSpacing)  # between rows, between columns
    data = np.stack([_slice_hu(ds) for ds in slices], axis=-1).transpose(1, 0, 2)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = (positions[-1] - positions[0]) / (len(slices) - 1)
    affine_lps[:3, 3] = positions[0]

    first = slices[0]
    metadata = {
        "format": "dicom",
        "series_instance_uid": str(first.SeriesInstanceUID),
        "series_description": str(first.get("SeriesDescription", "")),
        "modality": str(first.get("Modality", "")),
        "n_slices": len(slices),
    }
    return _canonical_volume(data, _LPS_TO_RAS @ affine_lps, source=str(folder), metadata=metadata)


def _read_dicom_image(path: Path):
    """The pydicom dataset of ``path`` if it is a DICOM image (has pixel data), else None."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        # No "DICM" preamble: some exporters omit it. Accept the file only if it parses and has pixel data.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
                is_image = "PixelData" in ds and "SeriesInstanceUID" in ds
        except Exception:  # arbitrary bytes can fail anywhere in the parser; such a file is not a slice
            return None
        if not is_image:
            return None
        _set_transfer_syntax_from_encoding(ds)
    except OSError as e:
        raise CTReadError(f"{path}: cannot read file: {e}") from e
    except Exception as e:  # a file that claims to be DICOM but does not parse must not vanish silently
        raise CTReadError(f"{path}: corrupt DICOM file: {e}") from e
    if "PixelData" not in ds:
        # pydicom stops quietly at the end of a truncated file; a CT image without pixels is such a file.
        sop_class = ds.get("file_meta", {}).get("MediaStorageSOPClassUID", ds.get("SOPClassUID"))
        if sop_class in _CT_IMAGE_STORAGE or len(ds) == 0:
            raise CTReadError(f"{path}: DICOM CT image without pixel data (truncated file?)")
        return None  # DICOMDIR, structured reports, presentation states
    if "SeriesInstanceUID" not in ds:
        raise CTReadError(f"{path}: DICOM image lacks SeriesInstanceUID")
    return ds


def _set_transfer_syntax_from_encoding(ds) -> None:
    """Give a file read without its meta header the transfer syntax it was parsed with (pixel decoding needs it)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    if hasattr(ds, "original_encoding"):  # pydicom >= 3
        implicit, little = ds.original_encoding
    else:
        implicit, little = ds.is_implicit_VR, ds.is_little_endian
    ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit
                                      else ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _select_series(slices: list, series_uid: str | None, folder: Path) -> list:
    by_series: dict[str, list] = defaultdict(list)
    for ds in slices:
        by_series[str(ds.SeriesInstanceUID)].append(ds)
    if series_uid is not None:
        if series_uid not in by_series:
            raise CTReadError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found {sorted(by_series)}")
        return by_series[series_uid]
    if len(by_series) > 1:
        listing = "; ".join(f"{uid} ({len(s)} files, {s[0].get('SeriesDescription', 'no description')!s})"
                            for uid, s in sorted(by_series.items()))
        raise CTReadError(f"{folder}: holds {len(by_series)} DICOM series, pass series_uid to pick one: {listing}")
    return next(iter(by_series.values()))


def _check_same(slices: list, tag: str, folder: Path, atol: float) -> None:
    reference = np.atleast_1d(np.asarray(slices[0].get(tag), dtype=np.float64))
    for ds in slices[1:]:
        value = np.atleast_1d(np.asarray(ds.get(tag), dtype=np.float64))
        if value.shape != reference.shape or not np.allclose(value, reference, rtol=0.0, atol=atol):
            raise CTReadError(f"{folder}: slices differ in {tag}: {slices[0].filename} has {reference.tolist()}, "
                              f"{ds.filename} has {value.tolist()}")


def _check_slice_spacing(along_normal: np.ndarray, slices: list, folder: Path) -> None:
    """Reject duplicate slices, gaps (missing slices) and uneven spacing; positions sorted ascending (mm)."""
    steps = np.diff(along_normal)
    nominal = float(np.median(steps))
    for n, step in enumerate(steps):
        if step <= SLICE_SPACING_TOLERANCE * nominal:
            raise CTReadError(f"{folder}: duplicate slice position z={along_normal[n]:.3f} mm in "
                              f"{slices[n].filename} and {slices[n + 1].filename}")
    for n, step in enumerate(steps):
        lo, hi = along_normal[n], along_normal[n + 1]
        if abs(step - nominal) > SLICE_SPACING_TOLERANCE * nominal:
            kind = "missing slice" if step > (2 - SLICE_SPACING_TOLERANCE) * nominal else "uneven slice spacing"
            raise CTReadError(f"{folder}: {kind} between z={lo:.3f} and z={hi:.3f} mm (step {step:.3f} mm, "
                              f"nominal {nominal:.3f} mm)")


def _slice_hu(ds) -> np.ndarray:
    """One slice in HU, shape (Rows, Columns), float32."""
    try:
        pixels = ds.pixel_array
    except Exception as e:  # missing decoder plugins or corrupt pixel data, reported with the file name
        raise CTReadError(f"{ds.filename}: cannot decode DICOM pixel data "
                          f"(transfer syntax {ds.file_meta.get('TransferSyntaxUID', 'unknown')}): {e}") from e
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _looks_like_dicom(path: Path) -> bool:
    return path.suffix.lower() == ".dcm" or has_dicom_preamble(path)


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """True if the file starts with DICOM's 128-byte preamble and ``DICM`` (files named without .dcm)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_DICOM_PREAMBLE_BYTES + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_PREAMBLE_BYTES:] == _DICOM_MAGIC
