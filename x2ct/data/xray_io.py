"""Read X-ray images for inference into the model's input convention, and write them back as 16-bit PNGs.

The model sees each view as a ``(rows, cols)`` float32 image in ``[0, 1]`` where 1 is the most attenuating
(bone bright): the "log" radiograph convention of the DRRs it was trained on. ``read_xray`` maps each format
onto it by its full integer range, never by the image's own min/max, so the same film gives the same values
however it is cropped:

- ``.npy``: a 2D float array, taken as-is: it is assumed to be in the model's convention already (e.g. a view
  saved from a dataset). Integer arrays are refused, since their scale is unknown.
- ``.png`` / ``.tif`` / ``.tiff`` (Pillow): greyscale only. 8-bit ``L`` / 255, 16-bit ``I;16`` / 65535,
  ``I`` (32-bit integer) / 65535 if its values fit in 16 bits, float ``F`` as-is.
- DICOM (``.dcm``, or any file with the DICOM preamble): stored values with RescaleSlope / RescaleIntercept
  applied, divided by ``2**BitsStored - 1``; MONOCHROME1 (bright = low attenuation) is inverted so bone is
  bright. The display window (VOI LUT, WindowCenter/Width) is ignored: the stored values are what a
  "for presentation" radiograph holds.

Anything else (colour images, multi-frame files, NaN/inf, values outside the format's range, a shape other
than ``expected_shape``) raises `XrayReadError` naming the file: a wrong input must never become a silently
wrong reconstruction.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from x2ct.atomic_io import atomic_path
from x2ct.data.readers import has_dicom_preamble

NPY_SUFFIXES = (".npy",)
PIL_SUFFIXES = (".png", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")

UINT8_MAX = 255
UINT16_MAX = 65535

# Pillow greyscale modes and the full-scale value each is divided by (None: a float image, taken as-is).
_GREY_MODE_SCALE: dict[str, float | None] = {
    "L": UINT8_MAX,
    "I;16": UINT16_MAX,
    "I;16L": UINT16_MAX,
    "I;16B": UINT16_MAX,
    "I;16N": UINT16_MAX,
    "I": UINT16_MAX,
    "F": None,
}
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "LA", "La", "CMYK", "YCbCr", "LAB", "HSV")


# Slack for float rounding when checking that rescaled DICOM values lie in [0, 1].
_RANGE_TOLERANCE = 1e-6


class XrayReadError(ValueError):
    """An X-ray file that cannot be read into the model's convention; the message names it and says why."""


def read_xray(path: str | os.PathLike, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one X-ray as a ``(rows, cols)`` float32 image in the model's convention (see the module docstring).

    ``expected_shape`` (rows, cols): the detector size the model was trained on; a different size is an error
    rather than a silent resample, since resampling changes the pixel spacing the model assumes.
    """
    path = Path(path)
    if not path.is_file():
        raise XrayReadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        image = _read_npy(path)
    elif suffix in PIL_SUFFIXES:
        image = _read_pil(path)
    elif suffix in DICOM_SUFFIXES or has_dicom_preamble(path):
        image = _read_dicom(path)
    else:
        raise XrayReadError(f"{path}: unknown X-ray format {suffix or '(no suffix)'!r}; expected .npy, "
                            f"{', '.join(PIL_SUFFIXES)}, or a DICOM file (.dcm or the DICM preamble)")
    if image.ndim != 2:
        raise XrayReadError(f"{path}: expected a 2D image (rows, cols), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise XrayReadError(f"{path}: the image holds {int((~np.isfinite(image)).sum())} NaN or infinite values")
    if expected_shape is not None and tuple(image.shape) != tuple(expected_shape):
        raise XrayReadError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (rows x cols) but the model "
                            f"expects {expected_shape[0]}x{expected_shape[1]}; resize it to that size (keeping "
                            f"the pixel spacing the model was trained with) first")
    return image.astype(np.float32, copy=False)


def write_xray_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a ``(rows, cols)`` image in ``[0, 1]`` as a 16-bit greyscale PNG (``round(x * 65535)``), atomically.

    ``read_xray`` returns it within ``1 / 65535``.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"write_xray_png({path}): expected a 2D image (rows, cols), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError(f"write_xray_png({path}): the image holds NaN or infinite values")
    if image.size and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"write_xray_png({path}): values must lie in [0, 1], got [{image.min()}, {image.max()}]")
    counts = np.round(image.astype(np.float64) * UINT16_MAX).astype(np.uint16)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(counts).save(tmp, format="PNG")
    return path


# ------------------------------------------------------------------------------------------------ formats
def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise XrayReadError(f"{path}: not a readable .npy array ({err})") from err
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        raise XrayReadError(f"{path}: expected a float array already in the model's [0, 1] convention, got "
                            f"dtype {getattr(array, 'dtype', type(array).__name__)}; an integer image has no "
                            f"known scale (save it as a PNG or divide by its full-scale value first)")
    return array


def _read_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            mode = img.mode
            frames = getattr(img, "n_frames", 1)
            if mode in _COLOUR_MODES:
                raise XrayReadError(f"{path}: a colour image (mode {mode!r}); X-rays are greyscale: convert it to "
                                    f"single-channel greyscale (8-bit 'L' or 16-bit) first")
            if mode not in _GREY_MODE_SCALE:
                raise XrayReadError(f"{path}: unsupported image mode {mode!r}; expected greyscale "
                                    f"{', '.join(_GREY_MODE_SCALE)}")
            if frames != 1:
                raise XrayReadError(f"{path}: holds {frames} frames; expected a single image")
            img.load()  # decode now, so a truncated file fails here
            array = np.asarray(img)
    except XrayReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise XrayReadError(f"{path}: not a readable image ({err})") from err
    scale = _GREY_MODE_SCALE[mode]
    if scale is None:
        return array.astype(np.float32)
    if array.size and (array.min() < 0 or array.max() > scale):
        raise XrayReadError(f"{path}: mode {mode!r} values span [{array.min()}, {array.max()}], outside the "
                            f"16-bit range [0, {int(scale)}] this reader maps to [0, 1]")
    return (array.astype(np.float64) / scale).astype(np.float32)




def _read_dicom(path: Path) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise XrayReadError(f"{path}: not a readable DICOM file ({err})") from err
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise XrayReadError(f"{path}: PhotometricInterpretation {photometric or '(missing)'!r}; expected a "
                            f"greyscale radiograph (MONOCHROME1 or MONOCHROME2)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise XrayReadError(f"{path}: a multi-frame DICOM ({frames} frames); expected a single radiograph")
    bits_stored = ds.get("BitsStored")
    if bits_stored is None:
        raise XrayReadError(f"{path}: DICOM without BitsStored; cannot tell the full-scale value")
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types (missing decoder plugins, bad lengths, ...)
        raise XrayReadError(f"{path}: cannot decode the DICOM pixel data ({type(err).__name__}: {err})") from err
    if stored.ndim != 2:
        raise XrayReadError(f"{path}: DICOM pixel array has shape {stored.shape}; expected a single 2D image "
                            f"(multi-frame and 3D images are not radiographs)")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    full_scale = 2.0 ** int(bits_stored) - 1.0
    image = (stored.astype(np.float64) * slope + intercept) / full_scale
    if image.size and (image.min() < -_RANGE_TOLERANCE or image.max() > 1.0 + _RANGE_TOLERANCE):
        raise XrayReadError(f"{path}: rescaled values span [{image.min():.4g}, {image.max():.4g}] of the "
                            f"full scale 2**BitsStored - 1 = {full_scale:.0f}; expected [0, 1] (check "
                            f"RescaleSlope {slope}, RescaleIntercept {intercept}, BitsStored {bits_stored})")
    image = np.clip(image, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return image.astype(np.float32)
