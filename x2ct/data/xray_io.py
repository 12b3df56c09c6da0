"""Read X-ray images: a clinical radiograph with what its file says about it, or a view in the model's convention.

- ``read_radiograph(path) -> Radiograph``: the image and every geometric and photometric fact its file holds
  (pixel spacing and the plane it is measured in, magnification, source distances, view position, patient
  orientation, photometric interpretation, window), each reading decision written as a sentence in ``notes``.
  Nothing missing is guessed here: `x2ct.data.radiograph_fit` supplies it from flags or stated typical values.
- ``read_xray(path, expected_shape)``: only the image, for files already in the model's input convention (views
  exported from a data set, of the detector's size).

The image is ``(rows, cols)`` float32 in ``[0, 1]``, rows and columns as stored, 1 the most attenuating (bone
bright, as a chest film is read and as the model's "log" DRRs are). Each format is mapped by its full integer
range, never by the image's own min/max, so the same film gives the same values however it is cropped:

- ``.npy``: a 2D float array, taken as-is (assumed to be in the model's convention already). Integer arrays
  are refused, since their scale is unknown.
- ``.png`` / ``.tif`` / ``.tiff`` / ``.jpg`` / ``.jpeg`` (Pillow): 8-bit ``L`` / 255, 16-bit ``I;16`` / 65535,
  ``I`` (32-bit integer) / 65535 if its values fit in 16 bits, float ``F`` as-is. An RGB(A) export whose channels
  agree within `GREY_RGB_TOLERANCE` counts (JPEG chroma rounding) and whose alpha is opaque is read as the grey
  image it is. These exports carry no spacing worth trusting (a PNG's pHYs or a TIFF's dpi describe a printer,
  not the detector), no orientation and no view position: flags or stated assumptions supply them.
- DICOM (``.dcm``, or any file with the DICOM preamble): stored values through the modality transform
  (RescaleSlope / RescaleIntercept, or a Modality LUT Sequence), divided by the full scale ``2**BitsStored - 1``
  (signed pixels shifted by half of it; a LUT's own output bits), then inverted where that makes attenuating
  tissue bright: by ``PixelIntensityRelationshipSign`` when present (+1: lower values mean less X-ray intensity,
  i.e. more attenuation: inverted), else by the display convention (MONOCHROME1, or MONOCHROME2 under an
  INVERSE Presentation LUT Shape: inverted). The VOI (WindowCenter / WindowWidth, a VOI LUT Sequence) is a
  display choice and is deliberately not applied: a window clips what lies outside it, and the fitting's
  histogram matching absorbs any monotone display curve. It is recorded, as are PresentationIntentType and
  PixelIntensityRelationship (LIN: values follow the detector signal, the fitting takes their logarithm; LOG;
  DISP: processed for display).

Anything else (colour images, multi-frame files, NaN/inf, values outside the format's range, a shape other
than ``expected_shape``) raises `XrayReadError` naming the file: a wrong input must never become a silently
wrong reconstruction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from x2ct.atomic_io import atomic_path
from x2ct.data.readers import has_dicom_preamble

NPY_SUFFIXES = (".npy",)
PIL_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
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
_RGB_MODES = ("RGB", "RGBA")
_COLOUR_MODES = ("RGBX", "RGBa", "P", "PA", "LA", "La", "CMYK", "YCbCr", "LAB", "HSV")
# An RGB export counts as grey when its channels differ by at most this many 8-bit counts (JPEG rounds chroma).
GREY_RGB_TOLERANCE = 3

# Slack for float rounding when checking that rescaled DICOM values lie in [0, 1].
_RANGE_TOLERANCE = 1e-6

# DICOM PatientOrientation letters: anterior, posterior, right, left, head, foot.
ORIENTATION_LETTERS = "APRLHF"


class XrayReadError(ValueError):
    """An X-ray file that cannot be read into the model's convention; the message names it and says why."""


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One radiograph as its file gives it. Spacings are the file's own values, not yet resolved.

    ``image`` ``(rows, cols)`` float32 in [0, 1], bone bright, rows and columns as stored.
    ``pixel_spacing_mm`` is DICOM PixelSpacing (row, col): in the patient when ``pixel_spacing_calibration`` is
    set (GEOMETRY, FIDUCIAL), else usually the detector's; ``imager_pixel_spacing_mm`` is at the detector's
    front plane; ``scanned_pixel_spacing_mm`` is a film digitiser's. ``patient_orientation`` is (direction of
    increasing column, direction of increasing row) in DICOM letters, e.g. ``("L", "F")`` for a PA chest.
    """

    image: np.ndarray
    path: str
    file_format: str  # "dicom", "png", "tiff", "jpeg", "npy"
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None  # DICOM ViewPosition: PA, AP, LL, RL, ...
    patient_orientation: tuple[str, str] | None = None
    photometric: str | None = None
    presentation_intent: str | None = None  # FOR PRESENTATION / FOR PROCESSING
    intensity_relationship: str | None = None  # LIN, LOG, DISP
    window: tuple[float, float] | None = None  # (centre, width) of the first VOI window, recorded, not applied
    pixel_spacing_mm: tuple[float, float] | None = None
    pixel_spacing_calibration: str | None = None
    imager_pixel_spacing_mm: tuple[float, float] | None = None
    scanned_pixel_spacing_mm: tuple[float, float] | None = None
    estimated_magnification: float | None = None
    source_to_detector_mm: float | None = None
    source_to_patient_mm: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    def to_dict(self) -> dict:
        """Everything but the pixels, as JSON types (for the prediction report)."""
        out = {"path": self.path, "file_format": self.file_format, "shape": list(self.shape)}
        for name in ("modality", "body_part", "view_position", "patient_orientation", "photometric",
                     "presentation_intent", "intensity_relationship", "window", "pixel_spacing_mm",
                     "pixel_spacing_calibration", "imager_pixel_spacing_mm", "scanned_pixel_spacing_mm",
                     "estimated_magnification", "source_to_detector_mm", "source_to_patient_mm"):
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        out["notes"] = list(self.notes)
        return out


def read_radiograph(path: str | os.PathLike) -> Radiograph:
    """Read one radiograph of any size with its metadata (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise XrayReadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        radiograph = Radiograph(image=_read_npy(path), path=str(path), file_format="npy",
                                notes=("a .npy array is taken as-is, in the model's convention",))
    elif suffix in PIL_SUFFIXES:
        image, notes = _read_pil(path)
        fmt = {".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(suffix, "png")
        radiograph = Radiograph(image=image, path=str(path), file_format=fmt, notes=tuple(notes))
    elif suffix in DICOM_SUFFIXES or has_dicom_preamble(path):
        radiograph = _read_dicom(path)
    else:
        raise XrayReadError(f"{path}: unknown X-ray format {suffix or '(no suffix)'!r}; expected .npy, "
                            f"{', '.join(PIL_SUFFIXES)}, or a DICOM file (.dcm or the DICM preamble)")
    image = radiograph.image
    if image.ndim != 2:
        raise XrayReadError(f"{path}: expected a 2D image (rows, cols), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise XrayReadError(f"{path}: the image holds {int((~np.isfinite(image)).sum())} NaN or infinite values")
    return radiograph


def read_xray(path: str | os.PathLike, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one X-ray as a ``(rows, cols)`` float32 image in the model's convention (see the module docstring).

    ``expected_shape`` (rows, cols): the detector size the model was trained on; a different size is an error
    rather than a silent resample, since resampling changes the pixel spacing the model assumes.
    """
    image = read_radiograph(path).image
    if expected_shape is not None and tuple(image.shape) != tuple(expected_shape):
        raise XrayReadError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (rows x cols) but the model "
                            f"expects {expected_shape[0]}x{expected_shape[1]}; resize it to that size (keeping "
                            f"the pixel spacing the model was trained with) first, or fit it to the detector "
                            f"(x2ct.data.radiograph_fit; predict.py does unless given --fit never)")
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


def parse_patient_orientation(value: object) -> tuple[str, str] | None:
    """``["L", "F"]``, ``"L\\F"`` or ``"L,F"`` -> ``("L", "F")``; None if it is not two strings of DICOM letters."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.replace("\\", ",").split(",")
    else:
        try:
            parts = [str(v) for v in value]
        except TypeError:
            return None
    parts = [p.strip().upper() for p in parts]
    if len(parts) != 2 or not all(p and set(p) <= set(ORIENTATION_LETTERS) for p in parts):
        return None
    return parts[0], parts[1]


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


def _read_pil(path: Path) -> tuple[np.ndarray, list[str]]:
    notes = []
    try:
        with Image.open(path) as img:
            mode = img.mode
            frames = getattr(img, "n_frames", 1)
            if mode in _COLOUR_MODES:
                raise XrayReadError(f"{path}: a colour image (mode {mode!r}); X-rays are greyscale: convert it to "
                                    f"single-channel greyscale (8-bit 'L' or 16-bit) first")
            if mode not in _GREY_MODE_SCALE and mode not in _RGB_MODES:
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
    if mode in _RGB_MODES:
        array = _grey_from_rgb(path, array, mode)
        notes.append(f"a {mode} image with equal channels (within {GREY_RGB_TOLERANCE} counts), read as grey")
        mode = "L"
    scale = _GREY_MODE_SCALE[mode]
    notes.append(f"Pillow mode {mode!r}, " + (f"divided by {scale}" if scale else "float values taken as-is")
                 + "; bone taken to be bright (the display convention of an exported radiograph)")
    if scale is None:
        return array.astype(np.float32), notes
    if array.size and (array.min() < 0 or array.max() > scale):
        raise XrayReadError(f"{path}: mode {mode!r} values span [{array.min()}, {array.max()}], outside the "
                            f"16-bit range [0, {int(scale)}] this reader maps to [0, 1]")
    return (array.astype(np.float64) / scale).astype(np.float32), notes


def _grey_from_rgb(path: Path, array: np.ndarray, mode: str) -> np.ndarray:
    """An RGB(A) export of a grey image -> its grey ``(rows, cols)`` uint8; a colour image is refused."""
    rgb = array[..., :3].astype(np.int16)
    spread = int((rgb.max(axis=-1) - rgb.min(axis=-1)).max()) if rgb.size else 0
    if spread > GREY_RGB_TOLERANCE:
        raise XrayReadError(f"{path}: a colour image (mode {mode!r}, channels differ by up to {spread} counts); "
                            f"X-rays are greyscale: convert it to single-channel greyscale (8-bit 'L' or 16-bit) "
                            f"first")
    if mode == "RGBA" and array.size and int(array[..., 3].min()) < UINT8_MAX:
        raise XrayReadError(f"{path}: an RGBA image with transparent pixels; expected an opaque grey radiograph")
    return np.round(rgb.mean(axis=-1)).astype(np.uint8)


def _read_dicom(path: Path) -> Radiograph:
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
    notes: list[str] = []
    image = _modality_values(path, ds, stored, int(bits_stored), notes)
    if _attenuation_is_low(ds, photometric, notes):
        image = 1.0 - image
    intent = _text(ds, "PresentationIntentType")
    relationship = _text(ds, "PixelIntensityRelationship")
    window = _window(ds, notes)
    if intent:
        notes.append(f"PresentationIntentType {intent}")
    if relationship:
        notes.append(f"PixelIntensityRelationship {relationship}" + (
            " (values follow the detector signal: the fitting takes their logarithm)" if relationship == "LIN"
            else ""))
    spacing = _spacing(ds, "PixelSpacing", notes)
    calibration = _text(ds, "PixelSpacingCalibrationType")
    orientation_raw = ds.get("PatientOrientation")
    orientation = parse_patient_orientation(orientation_raw)
    if orientation_raw not in (None, "") and orientation is None:
        notes.append(f"PatientOrientation {orientation_raw!r} is not two DICOM direction codes; ignored")
    return Radiograph(
        image=image.astype(np.float32), path=str(path), file_format="dicom",
        modality=_text(ds, "Modality"), body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"), patient_orientation=orientation, photometric=photometric,
        presentation_intent=intent, intensity_relationship=relationship, window=window,
        pixel_spacing_mm=spacing, pixel_spacing_calibration=calibration,
        imager_pixel_spacing_mm=_spacing(ds, "ImagerPixelSpacing", notes),
        scanned_pixel_spacing_mm=_spacing(ds, "NominalScannedPixelSpacing", notes),
        estimated_magnification=_positive(ds, "EstimatedRadiographicMagnificationFactor", notes),
        source_to_detector_mm=_positive(ds, "DistanceSourceToDetector", notes),
        source_to_patient_mm=_positive(ds, "DistanceSourceToPatient", notes),
        notes=tuple(notes))


def _modality_values(path: Path, ds, stored: np.ndarray, bits_stored: int, notes: list[str]) -> np.ndarray:
    """Stored values through the modality transform, as a fraction of the full scale: ``(rows, cols)`` float64."""
    lut_sequence = ds.get("ModalityLUTSequence")
    if lut_sequence:
        entries, first, bits = (int(v) for v in lut_sequence[0].LUTDescriptor)
        data = lut_sequence[0].LUTData
        lut = (np.frombuffer(data, dtype="<u2" if bits > 8 else np.uint8) if isinstance(data, bytes)
               else np.asarray(data)).astype(np.float64)
        entries = entries or 65536
        index = np.clip(stored.astype(np.int64) - first, 0, min(entries, len(lut)) - 1)
        notes.append(f"Modality LUT Sequence applied ({entries} entries, {bits}-bit output), divided by 2**{bits} - 1")
        return lut[index] / (2.0 ** bits - 1.0)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    full_scale = 2.0 ** bits_stored - 1.0
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    offset = 2.0 ** (bits_stored - 1) if signed else 0.0
    image = (stored.astype(np.float64) * slope + intercept + offset) / full_scale
    if image.size and (image.min() < -_RANGE_TOLERANCE or image.max() > 1.0 + _RANGE_TOLERANCE):
        raise XrayReadError(f"{path}: rescaled values span [{image.min():.4g}, {image.max():.4g}] of the "
                            f"full scale 2**BitsStored - 1 = {full_scale:.0f}; expected [0, 1] (check "
                            f"RescaleSlope {slope}, RescaleIntercept {intercept}, BitsStored {bits_stored})")
    notes.append(f"stored values * RescaleSlope {slope:g} + RescaleIntercept {intercept:g}"
                 + (f" + 2**{bits_stored - 1} (signed pixels)" if signed else "")
                 + f", divided by 2**BitsStored - 1 = {full_scale:.0f}")
    return np.clip(image, 0.0, 1.0)


def _attenuation_is_low(ds, photometric: str, notes: list[str]) -> bool:
    """Whether low values mean more attenuation (so the image is inverted to make bone bright), and why."""
    sign = ds.get("PixelIntensityRelationshipSign")
    if sign in (1, -1):
        notes.append(f"PixelIntensityRelationshipSign {int(sign):+d}: "
                     + ("lower values mean less X-ray intensity, inverted so bone is bright" if sign == 1
                        else "higher values mean less X-ray intensity, kept (bone bright)")
                     + f" (PhotometricInterpretation {photometric} not used for this)")
        return sign == 1
    shape = _text(ds, "PresentationLUTShape")
    if photometric == "MONOCHROME1":
        notes.append("MONOCHROME1 (low values shown white): inverted so bone is bright"
                     + (f"; PresentationLUTShape {shape} is its usual companion, not a second inversion"
                        if shape == "INVERSE" else ""))
        return True
    if shape == "INVERSE":
        notes.append("MONOCHROME2 under PresentationLUTShape INVERSE (low values shown white): inverted so bone "
                     "is bright")
        return True
    notes.append("MONOCHROME2 (high values shown white): kept, bone bright")
    return False


def _window(ds, notes: list[str]) -> tuple[float, float] | None:
    """The first VOI window (centre, width), recorded and deliberately not applied (see the module docstring)."""
    if ds.get("VOILUTSequence"):
        notes.append("a VOI LUT Sequence is present and deliberately not applied (a display curve)")
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    first = [float(v[0] if isinstance(v, MultiValue | list | tuple) else v) for v in (centre, width)]
    notes.append(f"VOI window centre {first[0]:g}, width {first[1]:g} deliberately not applied (a display "
                 "choice; the fitting's intensity mapping absorbs monotone display curves)")
    return first[0], first[1]


def _text(ds, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip().upper()
    return text or None


def _spacing(ds, keyword: str, notes: list[str]) -> tuple[float, float] | None:
    """A (row, col) spacing tag in mm; None (with a note) when absent or not two positive numbers."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 2 or not all(np.isfinite(n) and n > 0 for n in numbers):
        shown = value if isinstance(value, str) else ", ".join(str(v) for v in value)
        notes.append(f"{keyword} [{shown}] is not two positive spacings in mm; ignored")
        return None
    return numbers


def _positive(ds, keyword: str, notes: list[str]) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number > 0):
        notes.append(f"{keyword} {value!r} is not a positive number; ignored")
        return None
    return number
