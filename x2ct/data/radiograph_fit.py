"""Fit a radiograph to a model's detector: orientation, size at the isocentre, field of view, intensity.

A model trained on DRRs expects each view on its own detector (``geometry.detector_shape`` pixels of
``geometry.pixel_spacing_mm``, the body's mid-plane at the isocentre magnified by SDD / SID), its rows and
columns pointing as `ProjectionGeometry.frames` says (PA: rows head->feet, columns patient right->left), and
values in its input convention (normalised line integrals, bone bright). `fit_radiograph` takes a `Radiograph`
there in five steps; each writes its numbers into `FittedView.steps` and each assumption, as a sentence, into
`FittedView.assumptions`:

1. **Orientation**: PatientOrientation (the file's, a flag's, else the model view's own, stated) gives the flips
   and transpose that point the radiograph's rows and columns where the detector's point. A film seen along
   another axis (a lateral film for a PA view) cannot be turned into the view and is refused, as is a
   ViewPosition of the other family (LL/RL for a frontal view, PA/AP for a lateral one).
2. **Size at the isocentre**: the pixel spacing (flag > calibrated PixelSpacing > ImagerPixelSpacing > a film
   digitiser's NominalScannedPixelSpacing > uncalibrated PixelSpacing > an estimate: a typical detector across
   the image's longer side) divided by the radiograph's magnification at the patient's mid-plane (flag >
   EstimatedRadiographicMagnificationFactor > DistanceSourceToDetector / DistanceSourceToPatient > the source
   distance (tag or typical) over itself less a typical mid-plane-to-detector distance). The model's pixels at
   the isocentre are its detector spacing over its own magnification.
3. **Field**: the model's detector, mapped to the isocentre plane (offsets included), is laid over the
   radiograph centred on its centre (``align="centre"``) or on the body's left-right midline (``align="body"``:
   halfway between the skin edges of an Otsu body mask). Failure mode of ``body``: a body wider than the image
   (a skin edge outside it) or a mask that the threshold splits inside the body (a film with no direct exposure
   to set air against): it falls back to the centre and says so. Rows are not aligned: the head-feet position of
   the training views is their CTs' field, which a radiograph does not reveal.
4. **Resampling**: each detector pixel is the exact area average of the radiograph over its footprint (an
   integral image read bilinearly), the part outside the radiograph filled with the radiograph's air level (its
   0.5th percentile), so a 0.2 mm film becomes a 10 mm detector without aliasing.
5. **Intensity**: ``quantile`` (when the training views' quantiles are known, `dataset_view_quantiles`):
   histogram matching, class by class, to the pooled distribution of the training views of that name: the air
   around the body (`air_mask`: the dark region connected to the image's border; padding counts as air) to
   their air, the rest to their body. Matching cancels any monotone display curve (log, gamma, LUT, a window
   that clips nothing); the two classes keep a chest that fills the field (no air, unlike CT-based DRRs) from
   having its lungs pushed down to air. It does not undo local processing (unsharp masking, multi-scale
   contrast enhancement), scatter, or a body class of another content (a field cropped onto the lungs, a lung
   cut by the film's edge and so counted as air). ``linear``: the 0.5th-99.5th percentiles stretched onto
   [0, 1] (the range of per-image-max views; for other normalisations an approximation, stated). LIN images
   (values following the detector signal) are first turned into line integrals by ``-log``; other images are
   taken as monotone in them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from x2ct.data.input_spec import InputSpec
from x2ct.data.xray_io import Radiograph, parse_patient_orientation
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.radiograph import normalise_views, to_intensity

if TYPE_CHECKING:
    from x2ct.data.dataset import PatientDRRDataset

ALIGN_MODES = ("centre", "body")
INTENSITY_MODES = ("quantile", "linear")
QUANTILE_LEVELS = 101  # 0, 1, ..., 100 percent
MAX_QUANTILE_PATIENTS = 64  # patients of the training split pooled for the quantiles, evenly spread
AIR_PERCENTILE = 0.5  # the radiograph's air level, filling the detector outside it
LINEAR_PERCENTILES = (0.5, 99.5)  # stretched onto [0, 1] by the linear intensity mapping
BODY_COLUMN_FRACTION = 0.5  # a column belongs to the body when this fraction of it is above the Otsu threshold
BODY_MASK_MM = 2.0  # the body mask is computed on the radiograph block-averaged to about this pixel size
LIN_FLOOR = 1.0 / 65535  # the smallest transmission a LIN image's -log is taken of
AIR_THRESHOLD_FRACTION = 0.25  # air: below this fraction of the way from the 0.5th to the 99.5th percentile
AIR_COVER = 0.5  # a detector pixel is air when at least this fraction of it is (padding counts as air)
PADDING_NOTED = 1e-6  # padding below this fraction of the detector is float rounding at the film's edge

# ViewPosition -> family; ap/pa see the same projection from opposite sides, as do ll/rl.
VIEW_FAMILIES = {"PA": "frontal", "AP": "frontal", "LL": "lateral", "RL": "lateral"}
_AXIS_OF_LETTER = {"R": "x", "L": "x", "A": "y", "P": "y", "H": "z", "F": "z"}
_LETTERS = (("R", "L"), ("A", "P"), ("H", "F"))  # +x, -x; +y, -y; +z, -z in RAS


class RadiographFitError(ValueError):
    """A radiograph that cannot be fitted to the model's view; the message names the file and says why."""


@dataclass(frozen=True)
class TypicalAcquisition:
    """Values taken when neither the file nor a flag gives them: adult erect chest radiography, stated in the
    report whenever used (none is measured on the patient)."""

    detector_extent_mm: float = 430.0  # the image's longer side: a 43 cm (17 in) chest detector or cassette
    source_to_detector_mm: float = 1800.0  # erect PA / lateral chest at 180 cm (72 in)
    frontal_midplane_to_detector_mm: float = 150.0  # half an adult chest's depth (~110 mm) + detector cover (~40)
    lateral_midplane_to_detector_mm: float = 200.0  # half an adult chest's width (~160 mm) + detector cover (~40)

    def midplane_to_detector_mm(self, family: str | None) -> float:
        return self.lateral_midplane_to_detector_mm if family == "lateral" else self.frontal_midplane_to_detector_mm


@dataclass(frozen=True)
class FitOptions:
    """What the user supplies (flags of predict.py); None: read from the file, else a stated typical value.

    ``pixel_spacing_mm`` (row, col) at the detector; ``magnification``: detector size over size at the patient's
    mid-plane (>= 1); ``patient_orientation``: DICOM letters (column direction, row direction), e.g. ("L", "F");
    ``view_position``: PA, AP, LL or RL, overriding the file's.
    """

    pixel_spacing_mm: tuple[float, float] | None = None
    magnification: float | None = None
    patient_orientation: tuple[str, str] | None = None
    view_position: str | None = None
    align: str = "centre"
    intensity: str = "quantile"
    typical: TypicalAcquisition = field(default_factory=TypicalAcquisition)

    def __post_init__(self) -> None:
        if self.pixel_spacing_mm is not None:
            spacing = tuple(float(s) for s in self.pixel_spacing_mm)
            if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise ValueError(f"pixel_spacing_mm must be two positive numbers (row, col), got "
                                 f"{self.pixel_spacing_mm}")
            object.__setattr__(self, "pixel_spacing_mm", spacing)
        if self.magnification is not None and not (math.isfinite(self.magnification) and self.magnification >= 1):
            raise ValueError(f"magnification must be >= 1 (a projection only enlarges), got {self.magnification}")
        if self.patient_orientation is not None:
            parsed = parse_patient_orientation(self.patient_orientation)
            if parsed is None:
                raise ValueError(f"patient_orientation must be two DICOM direction codes (letters of APRLHF), e.g. "
                                 f"L,F, got {self.patient_orientation!r}")
            object.__setattr__(self, "patient_orientation", parsed)
        if self.view_position is not None:
            if self.view_position.upper() not in VIEW_FAMILIES:
                raise ValueError(f"view_position must be one of {sorted(VIEW_FAMILIES)}, got {self.view_position!r}")
            object.__setattr__(self, "view_position", self.view_position.upper())
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {self.align!r}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")


@dataclass(frozen=True, eq=False)
class FittedView:
    """A radiograph on a model's detector.

    ``image`` ``(rows, cols)`` float32: the model's input. ``resampled``: the same before the intensity mapping
    (attenuation-like, the radiograph's own scale). ``oriented``: the radiograph at full resolution turned to the
    view's orientation; ``field_px`` (top, bottom, left, right): the detector's outline on it, in pixel-edge
    coordinates (pixel k spans [k, k + 1)).
    """

    view: str
    image: np.ndarray
    resampled: np.ndarray
    oriented: np.ndarray
    field_px: tuple[float, float, float, float]
    steps: dict
    assumptions: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ the fit
def fit_radiograph(radiograph: Radiograph, spec: InputSpec, view: str, options: FitOptions | None = None) -> FittedView:
    """Put ``radiograph`` on the detector of ``view`` of a model with input spec ``spec`` (see the module docstring)."""
    options = options or FitOptions()
    if view not in spec.views:
        raise RadiographFitError(f"{radiograph.path}: the model has no view {view!r}; its views are "
                                 f"{list(spec.views)}")
    if not radiograph.image.max() > radiograph.image.min():
        raise RadiographFitError(f"{radiograph.path}: the image is uniform (every pixel "
                                 f"{radiograph.image.flat[0]:.4g}); nothing of a radiograph to fit")
    geometry = spec.geometry
    angle = float(geometry.angles_deg[spec.views.index(view)])
    assumptions: list[str] = []
    family = view_family(angle)
    position = _check_view_position(radiograph, view, family, options, assumptions)

    oriented_image, orientation = orient_to_view(radiograph, angle, options, assumptions)
    spacing = isocentre_spacing(radiograph, family, options, assumptions)
    attenuation, domain = _attenuation_like(oriented_image, radiograph)
    detector = model_detector(geometry, spec.views.index(view))

    iso = spacing["isocentre_spacing_mm"]
    centre_mm, alignment = _alignment(attenuation, iso, options.align, radiograph.path, assumptions)
    edges_r, edges_c = detector_edges_on_image(detector, iso, attenuation.shape, centre_mm)
    air_level = float(np.percentile(attenuation, AIR_PERCENTILE))
    resampled, covered = area_resample(attenuation, edges_r, edges_c, fill=air_level)
    air_cover, _ = area_resample(air_mask(attenuation).astype(np.float32), edges_r, edges_c, fill=1.0)
    field_mm = _field_record(attenuation.shape, iso, edges_r, edges_c, covered)
    if field_mm["padded_fraction"] > PADDING_NOTED:
        assumptions.append(f"{100 * field_mm['padded_fraction']:.1f} % of the detector lies outside the radiograph "
                           f"and is filled with its air level (its {AIR_PERCENTILE}th percentile)")
    image, intensity = map_intensity(resampled, air_cover >= AIR_COVER, spec, view, options.intensity,
                                     assumptions)
    intensity["domain"] = domain
    steps = {"view": view, "view_angle_deg": angle, "file": radiograph.to_dict(), "view_position": position,
             "orientation": orientation, "spacing": spacing, "model_detector": detector, "alignment": alignment,
             "field": field_mm, "intensity": intensity}
    return FittedView(view=view, image=image.astype(np.float32), resampled=resampled.astype(np.float32),
                      oriented=oriented_image, field_px=(edges_r[0], edges_r[-1], edges_c[0], edges_c[-1]),
                      steps=steps, assumptions=tuple(assumptions))


# ------------------------------------------------------------------------------------------------ orientation
def view_family(angle_deg: float) -> str | None:
    """``frontal`` (0 / 180 degrees), ``lateral`` (90 / 270) or None (oblique) for a gantry angle."""
    folded = angle_deg % 180.0
    if min(folded, 180.0 - folded) < 1e-6:
        return "frontal"
    if abs(folded - 90.0) < 1e-6:
        return "lateral"
    return None


def view_orientation(angle_deg: float) -> tuple[str, str]:
    """DICOM PatientOrientation of a model's view at ``angle_deg``: (column direction, row direction), each the
    dominant RAS direction of `ProjectionGeometry.frames`' column axis u and row axis v (PA: ("L", "F"))."""
    geometry = ProjectionGeometry("parallel", (angle_deg,), (1, 1), (1.0, 1.0))
    _, u, v = geometry.frames(torch.float64)
    return _letter(u[0].tolist()), _letter(v[0].tolist())


def orient_to_view(radiograph: Radiograph, angle_deg: float, options: FitOptions, assumptions: list[str]
                   ) -> tuple[np.ndarray, dict]:
    """The radiograph's image flipped / transposed so its columns and rows point as the view's; and the record."""
    target = view_orientation(angle_deg)
    if options.patient_orientation is not None:
        given, source = options.patient_orientation, "--patient-orientation"
    elif radiograph.patient_orientation is not None:
        given, source = radiograph.patient_orientation, "PatientOrientation"
    else:
        given, source = target, "assumed"
        assumptions.append(f"no patient orientation in {radiograph.file_format} file {radiograph.path}: taken to be "
                           f"displayed as the model's view (columns toward {target[0]}, rows toward {target[1]}; "
                           "for a frontal chest the radiological convention, patient's right on the viewer's left)")
    cols_to, rows_to = given[0][0], given[1][0]  # DICOM lists the dominant direction first
    want_cols, want_rows = target
    image = radiograph.image
    axes, want = (_AXIS_OF_LETTER[cols_to], _AXIS_OF_LETTER[rows_to]), (_AXIS_OF_LETTER[want_cols],
                                                                      _AXIS_OF_LETTER[want_rows])
    if axes == want:
        transpose = False
    elif axes == want[::-1]:
        transpose = True
        image = image.T
        cols_to, rows_to = rows_to, cols_to
    else:
        raise RadiographFitError(f"{radiograph.path}: its orientation ({source} {given[0]},{given[1]}: columns "
                                 f"toward {given[0]}, rows toward {given[1]}) cannot be turned into the model's "
                                 f"view (columns toward {want_cols}, rows toward {want_rows}): the film was taken "
                                 "along another axis (a lateral film for a frontal view, or the reverse); give it "
                                 "to the matching view, or correct the orientation with --patient-orientation")
    flip_cols, flip_rows = cols_to != want_cols, rows_to != want_rows
    image = image[::-1 if flip_rows else 1, ::-1 if flip_cols else 1]
    record = {"given": list(given), "source": source, "model": list(target), "transpose": transpose,
              "flip_rows": flip_rows, "flip_cols": flip_cols}
    return np.ascontiguousarray(image, dtype=np.float32), record


def _letter(vector: Sequence[float]) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return _LETTERS[axis][0 if vector[axis] > 0 else 1]


def _check_view_position(radiograph: Radiograph, view: str, family: str | None, options: FitOptions,
                         assumptions: list[str]) -> dict:
    """The radiograph's view position against the model view's family; refused across families."""
    given = options.view_position or radiograph.view_position
    source = "--view-position" if options.view_position else "ViewPosition"
    if given is None:
        assumptions.append(f"no view position for {radiograph.path}: taken to be the model's {view!r} view")
        return {"given": None, "source": "assumed", "model_view": view}
    theirs = VIEW_FAMILIES.get(given)
    if theirs is None:
        assumptions.append(f"{source} {given} is none of {sorted(VIEW_FAMILIES)}: taken to be the model's "
                           f"{view!r} view")
    elif family is not None and theirs != family:
        raise RadiographFitError(f"{radiograph.path}: {source} {given} is a {theirs} radiograph, the model's view "
                                 f"{view!r} is {family}; give it to a {theirs} view of the model (NAME=FILE), or "
                                 "correct the tag with --view-position")
    elif given.lower() != view.lower() and family == "frontal":
        assumptions.append(f"{source} {given} for the model's {view!r} view: the same projection from the other "
                           "side, oriented by the patient orientation; structures far from the detector appear "
                           "larger than in the training views")
    return {"given": given, "source": source, "model_view": view}


# ------------------------------------------------------------------------------------------------ size
def isocentre_spacing(radiograph: Radiograph, family: str | None, options: FitOptions,
                      assumptions: list[str]) -> dict:
    """The radiograph's pixel spacing (row, col) at the patient's mid-plane, and where each number came from."""
    r = radiograph
    typical = options.typical
    if options.pixel_spacing_mm is not None:
        spacing, source, plane = options.pixel_spacing_mm, "--pixel-spacing (at the detector)", "detector"
    elif r.pixel_spacing_mm is not None and r.pixel_spacing_calibration:
        spacing, source, plane = r.pixel_spacing_mm, f"PixelSpacing ({r.pixel_spacing_calibration})", "patient"
    elif (r.pixel_spacing_mm is not None and r.imager_pixel_spacing_mm is not None
          and not np.allclose(r.pixel_spacing_mm, r.imager_pixel_spacing_mm, rtol=1e-4)):
        spacing, source, plane = r.pixel_spacing_mm, "PixelSpacing (differs from ImagerPixelSpacing)", "patient"
    elif r.imager_pixel_spacing_mm is not None:
        spacing, source, plane = r.imager_pixel_spacing_mm, "ImagerPixelSpacing", "detector"
    elif r.scanned_pixel_spacing_mm is not None:
        spacing, source, plane = r.scanned_pixel_spacing_mm, "NominalScannedPixelSpacing (the film)", "detector"
    elif r.pixel_spacing_mm is not None:
        spacing, source, plane = r.pixel_spacing_mm, "PixelSpacing (no calibration stated)", "detector"
        assumptions.append("PixelSpacing without a calibration type or ImagerPixelSpacing: taken at the detector")
    else:
        size = typical.detector_extent_mm / max(r.shape)
        spacing, source, plane = (size, size), "estimate", "detector"
        assumptions.append(f"no pixel spacing for {r.path}: estimated as {size:.4g} mm (a "
                           f"{typical.detector_extent_mm:g} mm detector across the image's longer side, "
                           f"{max(r.shape)} pixels); give --pixel-spacing to replace it")
    record = {"detector_spacing_mm": [float(s) for s in spacing], "spacing_source": source, "plane": plane}
    if plane == "patient":
        if options.magnification is not None:
            assumptions.append(f"--magnification {options.magnification:g} not used: {source} is already at the "
                               "patient")
        magnification, m_source = 1.0, "none (the spacing is at the patient)"
    else:
        magnification, m_source = _magnification(r, family, options, assumptions)
    record |= {"magnification": magnification, "magnification_source": m_source,
               "isocentre_spacing_mm": [float(s) / magnification for s in spacing]}
    return record


def _magnification(r: Radiograph, family: str | None, options: FitOptions, assumptions: list[str]
                   ) -> tuple[float, str]:
    typical = options.typical
    if options.magnification is not None:
        return float(options.magnification), "--magnification"
    if r.estimated_magnification is not None:
        return r.estimated_magnification, "EstimatedRadiographicMagnificationFactor"
    if r.source_to_detector_mm is not None and r.source_to_patient_mm is not None:
        magnification = r.source_to_detector_mm / r.source_to_patient_mm
        if magnification < 1:
            raise RadiographFitError(f"{r.path}: DistanceSourceToDetector {r.source_to_detector_mm:g} mm is shorter "
                                     f"than DistanceSourceToPatient {r.source_to_patient_mm:g} mm; give "
                                     "--magnification")
        assumptions.append("DistanceSourceToPatient taken as the distance to the patient's mid-plane (DX defines "
                           "it to the patient support, which makes this magnification a few percent too small)")
        return magnification, "DistanceSourceToDetector / DistanceSourceToPatient"
    midplane = typical.midplane_to_detector_mm(family)
    if r.source_to_detector_mm is not None:
        sid, sid_source = r.source_to_detector_mm, "DistanceSourceToDetector"
    else:
        sid, sid_source = typical.source_to_detector_mm, "typical"
        assumptions.append(f"no source-to-detector distance: {sid:g} mm assumed (erect chest radiography)")
    if sid <= midplane:
        raise RadiographFitError(f"{r.path}: source-to-detector distance {sid:g} mm is not beyond the typical "
                                 f"mid-plane-to-detector distance {midplane:g} mm; give --magnification")
    assumptions.append(f"patient's mid-plane taken {midplane:g} mm in front of the image plane (typical "
                       f"{family or 'frontal'} chest), magnification {sid:g} / {sid - midplane:g} = "
                       f"{sid / (sid - midplane):.4f}; give --magnification to replace it")
    return sid / (sid - midplane), f"{sid_source} SID {sid:g} mm and a typical mid-plane distance {midplane:g} mm"


def model_detector(geometry: ProjectionGeometry, index: int) -> dict:
    """The model's detector for view ``index`` as seen at the isocentre: shape, spacing and offset in mm."""
    magnification = geometry.magnification
    return {"shape": list(geometry.detector_shape), "detector_spacing_mm": list(geometry.pixel_spacing_mm),
            "magnification": magnification, "kind": geometry.kind,
            "isocentre_spacing_mm": [s / magnification for s in geometry.pixel_spacing_mm],
            "isocentre_offset_mm": [o / magnification for o in geometry.detector_offset_mm],
            "field_mm": [n * s / magnification for n, s in zip(geometry.detector_shape, geometry.pixel_spacing_mm,
                                                                strict=True)],
            "angle_deg": float(geometry.angles_deg[index])}


def detector_edges_on_image(detector: dict, image_spacing_mm: Sequence[float], image_shape: Sequence[int],
                            centre_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-edge coordinates on the (oriented) radiograph of the detector's row and column edges:
    ``(rows + 1,)`` and ``(cols + 1,)``. The detector's isocentre point sits at ``centre_mm`` (row, col) from the
    radiograph's centre; radiograph pixel k spans [k, k + 1)."""
    edges = []
    for axis in range(2):
        n = detector["shape"][axis]
        mm = ((np.arange(n + 1) - n / 2) * detector["isocentre_spacing_mm"][axis]
              + detector["isocentre_offset_mm"][axis] + centre_mm[axis])
        edges.append(mm / image_spacing_mm[axis] + image_shape[axis] / 2)
    return edges[0], edges[1]


# ------------------------------------------------------------------------------------------------ resampling
def area_resample(image: np.ndarray, edges_r: np.ndarray, edges_c: np.ndarray, fill: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Exact area averages of ``image`` ``(R, C)`` (piecewise constant pixels) over the output pixels whose edges
    are ``edges_r`` ``(rows + 1,)`` / ``edges_c`` ``(cols + 1,)`` in pixel-edge coordinates (increasing); the
    part of a pixel outside the image counts as ``fill``. Returns the ``(rows, cols)`` averages and the fraction
    of each output pixel that the image covers."""
    rows, cols = image.shape
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = np.cumsum(np.cumsum(image.astype(np.float64), axis=0), axis=1)
    weights_r, clipped_r = _edge_weights(edges_r, rows)
    weights_c, clipped_c = _edge_weights(edges_c, cols)
    at_edges = weights_r @ integral @ weights_c.T  # integral up to each (row edge, col edge)
    sums = np.diff(np.diff(at_edges, axis=0), axis=1)
    covered = np.outer(np.diff(clipped_r), np.diff(clipped_c))
    area = np.outer(np.diff(edges_r), np.diff(edges_c))
    return (sums + (area - covered) * fill) / area, covered / area


def _edge_weights(edges: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation weights ``(len(edges), n + 1)`` reading an integral image at edges clipped to [0, n]."""
    clipped = np.clip(np.asarray(edges, dtype=np.float64), 0.0, float(n))
    low = np.minimum(np.floor(clipped).astype(int), n - 1)
    frac = clipped - low
    weights = np.zeros((len(clipped), n + 1))
    weights[np.arange(len(clipped)), low] = 1.0 - frac
    weights[np.arange(len(clipped)), low + 1] += frac
    return weights, clipped


def _field_record(shape: Sequence[int], spacing: Sequence[float], edges_r: np.ndarray, edges_c: np.ndarray,
                  covered: np.ndarray) -> dict:
    """What of the radiograph the detector keeps, in mm at the isocentre: positive crop = cut off, negative =
    padded."""
    crop = {"top": edges_r[0] * spacing[0], "bottom": (shape[0] - edges_r[-1]) * spacing[0],
            "left": edges_c[0] * spacing[1], "right": (shape[1] - edges_c[-1]) * spacing[1]}
    return {"radiograph_mm": [shape[0] * spacing[0], shape[1] * spacing[1]],
            "crop_mm": {k: float(v) for k, v in crop.items()},
            "padded_fraction": float(1.0 - covered.mean())}


# ------------------------------------------------------------------------------------------------ alignment
def _alignment(image: np.ndarray, spacing: Sequence[float], mode: str, path: str, assumptions: list[str]
               ) -> tuple[tuple[float, float], dict]:
    if mode == "centre":
        return (0.0, 0.0), {"mode": "centre", "shift_mm": [0.0, 0.0]}
    midline, reason = body_midline(image, spacing)
    if midline is None:
        assumptions.append(f"body alignment of {path} failed ({reason}): centred on the image instead")
        return (0.0, 0.0), {"mode": "body", "shift_mm": [0.0, 0.0], "fallback": reason}
    return (0.0, midline), {"mode": "body", "shift_mm": [0.0, midline]}


def body_midline(image: np.ndarray, spacing: Sequence[float]) -> tuple[float | None, str]:
    """Column position (mm from the image centre) halfway between the body's skin edges; None and why when
    they cannot both be seen. The body is the Otsu-thresholded attenuating part, on a ~2 mm copy of the image."""
    factor = max(1, round(BODY_MASK_MM / min(spacing)))
    rows, cols = (n // factor * factor for n in image.shape)
    if rows == 0 or cols == 0:
        return None, "image smaller than the mask's pixel"
    small = image[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))
    threshold = otsu_threshold(small)
    if threshold is None:
        return None, "the image is uniform"
    body_columns = np.flatnonzero((small > threshold).mean(axis=0) > BODY_COLUMN_FRACTION)
    if body_columns.size == 0:
        return None, "no column is mostly body"
    first, last = body_columns[0], body_columns[-1]
    if first == 0 or last == small.shape[1] - 1:
        return None, "the body reaches the image's side edge, so a skin edge is outside it"
    centre_col = (first + last + 1) / 2 * factor  # pixel-edge coordinate on the full image
    return float((centre_col - image.shape[1] / 2) * spacing[1]), ""


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float | None:
    """Otsu's threshold (maximum between-class variance over a ``bins`` histogram); None for a uniform image."""
    low, high = float(image.min()), float(image.max())
    if not high > low:
        return None
    counts, edges = np.histogram(image, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - mean * total) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


# ------------------------------------------------------------------------------------------------ intensity
def _attenuation_like(image: np.ndarray, radiograph: Radiograph) -> tuple[np.ndarray, str]:
    """Values that grow with the line integral: ``-log`` of a LIN image's transmission, else the image."""
    if radiograph.intensity_relationship == "LIN":
        return -np.log(np.clip(1.0 - image, LIN_FLOOR, 1.0)).astype(np.float32), "-log(transmission) of a LIN image"
    return image, "the image, bone bright (taken as monotone in the line integral)"


def map_intensity(resampled: np.ndarray, air: np.ndarray, spec: InputSpec, view: str, mode: str,
                  assumptions: list[str]) -> tuple[np.ndarray, dict]:
    """The resampled radiograph ``(rows, cols)`` in the model's input convention, and the record.

    ``air`` ``(rows, cols)`` bool: the detector pixels that are mostly air (`air_mask`, padding included). With
    ``quantile``, air and body pixels are each matched to the training views' air and body distributions, so
    a film that holds less air than the training views (a chest filling the field) keeps its lungs in the body
    class instead of having them pushed down to air.
    """
    quantiles = spec.view_quantiles
    descending = spec.radiograph == "intensity"  # transmission: bright where little attenuates
    if mode == "quantile" and quantiles is not None and view in quantiles.get("body_values", {}):
        levels = quantiles["levels"]
        body_values, air_values = quantiles["body_values"][view], quantiles["air_values"].get(view)
        image = np.empty(resampled.shape, dtype=np.float32)
        body = ~air
        if body.any():
            image[body] = match_quantiles(resampled[body], levels, body_values, descending=descending)
        if air.any():
            # no air in the training views: the faintest body value (the most transparent end of the body class)
            target = air_values if air_values is not None else [body_values[-1 if descending else 0]] * len(levels)
            image[air] = match_quantiles(resampled[air], levels, target, descending=descending)
        return image, {"mode": "quantile", "quantiles_from": quantiles.get("source", "checkpoint"),
                       "training_patients": quantiles.get("patients"),
                       "air_fraction": {"radiograph": float(air.mean()),
                                        "training": quantiles["air_fraction"][view]},
                       "training_body_percentiles": {p: _at(levels, body_values, int(p) / 100)
                                                     for p in ("1", "50", "99")}}
    if mode == "quantile":
        assumptions.append(f"no distribution of the model's {view!r} training views is known: intensity stretched "
                           f"linearly instead, {LINEAR_PERCENTILES[0]}th-{LINEAR_PERCENTILES[1]}th percentiles onto "
                           "[0, 1]")
    lo, hi = (float(v) for v in np.percentile(resampled, LINEAR_PERCENTILES))
    image = np.clip((resampled - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(resampled)
    if descending:
        image = 1.0 - image
    if spec.radiograph != "intensity" and spec.normalisation not in ("per_image_max",):
        assumptions.append(f"linear intensity for a model trained on {spec.normalisation}-normalised views: "
                           "the stretch to [0, 1] overstates their contrast (their values rarely reach 1)")
    return image, {"mode": "linear", "percentiles": list(LINEAR_PERCENTILES), "input_range": [lo, hi]}


def air_mask(image: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` bool: the air around the body in an attenuation-like image (bone bright): pixels darker
    than `AIR_THRESHOLD_FRACTION` of the way from its 0.5th to its 99.5th percentile, in regions that touch the
    image's border (the lungs are dark too, but enclosed by the chest wall). Failure mode: a film cut through
    the lungs (a lung touching the border) counts that lung as air."""
    low, high = np.percentile(image, (0.5, 99.5))
    if not high > low:
        return np.zeros(image.shape, dtype=bool)
    labels, _ = ndimage.label(image < low + AIR_THRESHOLD_FRACTION * (high - low))
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, border[border > 0])


def match_quantiles(image: np.ndarray, levels: Sequence[float], values: Sequence[float],
                    descending: bool = False) -> np.ndarray:
    """Histogram matching: each pixel's rank in ``image`` (mid-rank for ties, as a fraction in (0, 1)) mapped
    through the target quantile function (``levels`` in [0, 1] -> ``values``). ``descending``: the target runs
    the other way (transmission images)."""
    flat = np.asarray(image, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    fraction = (first + counts / 2.0) / flat.size  # the mid-rank of each distinct value
    rank = fraction[inverse.ravel()]
    if descending:
        rank = 1.0 - rank
    return np.interp(rank, levels, values).reshape(np.shape(image)).astype(np.float32)


def _at(levels: Sequence[float], values: Sequence[float], level: float) -> float:
    return float(np.interp(level, levels, values))


def dataset_view_quantiles(dataset: PatientDRRDataset, levels: int = QUANTILE_LEVELS,
                           max_patients: int = MAX_QUANTILE_PATIENTS) -> dict | None:
    """Quantiles of a split's views as a model sees them (normalised, clean: no noise or augmentation), pooled
    over up to ``max_patients`` patients evenly spread over the split, per view name: of all pixels, of the
    body and of the air around it (`air_mask` of each line-integral image). None without views.

    Returns ``{"levels": [0, ..., 1], "values" | "body_values" | "air_values": {view: [...] (air: None when
    no view has air)}, "air_fraction": {view: f}, "patients": n, "split": name}``.
    """
    ids = dataset.patient_ids
    if not ids:
        return None
    picked = sorted({round(float(i)) for i in np.linspace(0, len(ids) - 1, min(len(ids), max_patients))})
    stacks = []
    for i in picked:
        path = dataset.layout.drr(ids[i])
        if path.exists():
            drr = np.load(path, allow_pickle=False)[dataset.view_indices]
            if np.isfinite(drr).all():
                stacks.append(drr)
    if not stacks:
        return None
    line_integrals = torch.from_numpy(np.stack(stacks).astype(np.float32))  # (N, V, rows, cols)
    if dataset.radiograph == "intensity":
        views = to_intensity(line_integrals).double().numpy()
    else:
        views = normalise_views(line_integrals, dataset.normalisation, dataset.view_scale).double().numpy()
    q = np.linspace(0.0, 1.0, levels)
    out: dict = {"levels": q.tolist(), "values": {}, "body_values": {}, "air_values": {}, "air_fraction": {}}
    for v, name in enumerate(dataset.view_names):
        air = np.stack([air_mask(image) for image in line_integrals[:, v].numpy()])
        out["values"][name] = np.quantile(views[:, v], q).tolist()
        out["body_values"][name] = np.quantile(views[:, v][~air], q).tolist()
        out["air_values"][name] = np.quantile(views[:, v][air], q).tolist() if air.any() else None
        out["air_fraction"][name] = float(air.mean())
    return out | {"patients": len(stacks), "split": dataset.split}
