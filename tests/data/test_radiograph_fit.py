"""Fitting a radiograph to a model's detector: DRRs saved as clinical files come back onto the detector the model
was trained on (orientation, size, field, intensity), every source of spacing and magnification is taken in its
order, and what cannot be fitted is refused naming the file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.data.test_xray_io import write_dicom
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.input_spec import InputSpec
from x2ct.data.phantom import generate_chest_phantom
from x2ct.data.radiograph_fit import (
    FitOptions,
    RadiographFitError,
    air_mask,
    area_resample,
    body_midline,
    dataset_view_quantiles,
    fit_radiograph,
    isocentre_spacing,
    match_quantiles,
    view_orientation,
)
from x2ct.data.views import render_views
from x2ct.data.xray_io import Radiograph, read_radiograph
from x2ct.physics.geometry import ProjectionGeometry

MU_WATER = 0.0193
# The tiny data set's detector: 32 x 32 pixels of 16 mm at SDD 1500 mm, SID 1000 mm (10.67 mm at the isocentre).
MODEL = {"kind": "cone", "angles_deg": [0.0], "detector_shape": [32, 32], "pixel_spacing_mm": [16.0, 16.0],
         "source_to_isocenter_mm": 1000.0, "source_to_detector_mm": 1500.0, "detector_offset_mm": [0.0, 0.0]}
FINE = 4  # the "clinical" DRR: 4 x 4 pixels per model pixel, the same field


def spec_for(geometry: dict, view: str = "pa", **extra) -> InputSpec:
    """A one-view model's input spec on ``geometry`` (the CT grid is not read by the fit)."""
    return InputSpec(**{"views": (view,), "angles_deg": tuple(geometry["angles_deg"]),
                        "view_shape": tuple(geometry["detector_shape"]), "radiograph": "log",
                        "normalisation": "global_max", "scale": 1.0, "hu_window": (-1000.0, 1000.0),
                        "ct_size": (32, 32, 32), "ct_fov_mm": (352.0, 352.0, 352.0), "mu_water": MU_WATER,
                        "geometry": ProjectionGeometry.from_dict(geometry)} | extra)


def render(ct, geometry: dict) -> np.ndarray:
    """Line integrals ``(rows, cols)`` of the single view of ``geometry``."""
    return render_views(ct, ProjectionGeometry.from_dict(geometry), MU_WATER)[0].double().numpy()


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    rows, cols = image.shape
    return image.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def phantom():
    return generate_chest_phantom(1, shape=(32, 32, 32), spacing_mm=(11.0, 11.0, 11.0))


@pytest.fixture(scope="module")
def drrs(phantom):
    """The phantom's PA DRR on the model's detector and on a 4x finer one over the same field."""
    fine = dict(MODEL, detector_shape=[32 * FINE, 32 * FINE], pixel_spacing_mm=[16.0 / FINE, 16.0 / FINE])
    return render(phantom, MODEL), render(phantom, fine)


def stored_as(image: np.ndarray, ops: str) -> tuple[np.ndarray, tuple[str, str]]:
    """``image`` (PA, columns toward L, rows toward F) as a file would store it after ``ops`` (``t``: transpose,
    ``c``: flip columns, ``r``: flip rows, in order), and the PatientOrientation that file then carries."""
    opposite = {"L": "R", "R": "L", "F": "H", "H": "F"}
    cols, rows = "L", "F"
    for op in ops:
        if op == "t":
            image, cols, rows = image.T, rows, cols
        elif op == "c":
            image, cols = image[:, ::-1], opposite[cols]
        else:
            image, rows = image[::-1], opposite[rows]
    return np.ascontiguousarray(image), (cols, rows)


# ------------------------------------------------------------------------------------------------ orientation
def test_view_orientation_follows_the_geometry_table():
    assert view_orientation(0.0) == ("L", "F")  # PA: patient right -> left
    assert view_orientation(90.0) == ("P", "F")  # left lateral: anterior -> posterior
    assert view_orientation(180.0) == ("R", "F")  # AP: the mirror of PA
    assert view_orientation(270.0) == ("A", "F")


@pytest.mark.parametrize(("ops", "photometric"), [("", "MONOCHROME2"), ("c", "MONOCHROME1"), ("r", "MONOCHROME2"),
                                                  ("cr", "MONOCHROME1"), ("t", "MONOCHROME2"),
                                                  ("tc", "MONOCHROME1"), ("tr", "MONOCHROME2"),
                                                  ("tcr", "MONOCHROME1")])
def test_a_drr_saved_as_dicom_round_trips_onto_the_detector(drrs, tmp_path, ops, photometric):
    """Every flip and transpose a file can store, undone by its PatientOrientation; size from ImagerPixelSpacing
    and SID / SOD; the result is the fine DRR's area average on the model's detector."""
    coarse, fine = drrs
    counts = np.round(fine / fine.max() * 4095).astype(np.uint16)
    stored, orientation = stored_as(counts, ops)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    path = write_dicom(tmp_path / "drr.dcm", stored, photometric=photometric, PatientOrientation=list(orientation),
                       ImagerPixelSpacing=[16.0 / FINE] * 2, DistanceSourceToDetector="1500",
                       DistanceSourceToPatient="1000", ViewPosition="PA")
    fitted = fit_radiograph(read_radiograph(path), spec_for(MODEL), "pa", FitOptions(intensity="linear"))
    steps = fitted.steps
    assert steps["orientation"]["given"] == list(orientation) and steps["orientation"]["source"] == "PatientOrientation"
    assert steps["orientation"]["transpose"] == ("t" in ops)
    assert steps["spacing"]["magnification"] == pytest.approx(1.5)
    assert steps["spacing"]["isocentre_spacing_mm"] == pytest.approx([16 / FINE / 1.5] * 2)
    assert steps["field"]["padded_fraction"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(fitted.resampled, block_mean(counts / 4095.0, FINE), atol=1e-6)
    # against the DRR the model was trained on, point-sampled at its own pixels: the same image, the right way up
    # (the phantom's heart and liver make a mirror image 5x further off, measured: 0.005 vs 0.026)
    error = {name: np.abs(fitted.resampled - reference / coarse.max()).mean()
             for name, reference in (("same", coarse), ("mirrored", coarse[:, ::-1]), ("upside down", coarse[::-1]))}
    assert error["same"] < 0.01
    assert error["mirrored"] > 3 * error["same"] and error["upside down"] > 3 * error["same"]


def test_another_pixel_size_magnification_and_field_is_scaled_cropped_and_padded(phantom, drrs, tmp_path):
    """A 100 x 80 detector of 5.3 mm with EstimatedRadiographicMagnificationFactor 1.5: 353 x 283 mm at the
    isocentre against the model's 341 mm: rows cropped 6 mm each side, columns padded 29 mm each side."""
    coarse, _ = drrs
    clinical = dict(MODEL, detector_shape=[100, 80], pixel_spacing_mm=[5.3, 5.3])
    line_integrals = render(phantom, clinical)
    scale = coarse.max()
    counts = np.round(np.clip(line_integrals / scale, 0, 1) * 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "dx.dcm", counts, ImagerPixelSpacing=[5.3, 5.3],
                       EstimatedRadiographicMagnificationFactor="1.5")
    fitted = fit_radiograph(read_radiograph(path), spec_for(MODEL), "pa", FitOptions(intensity="linear"))
    crop = fitted.steps["field"]["crop_mm"]
    assert crop["top"] == pytest.approx((100 * 5.3 - 32 * 16) / 1.5 / 2)
    assert crop["left"] == pytest.approx((80 * 5.3 - 32 * 16) / 1.5 / 2)  # negative: padded
    assert fitted.steps["spacing"]["magnification_source"] == "EstimatedRadiographicMagnificationFactor"
    covered = slice(3, 29)  # columns the 283 mm film covers entirely (29.3 mm = 2.75 pixels padded each side)
    np.testing.assert_allclose(fitted.resampled[:, covered], coarse[:, covered] / scale, atol=0.06)
    assert np.abs(fitted.resampled[:, covered] - coarse[:, covered] / scale).mean() < 0.01
    air_level = np.percentile(counts / 4095.0, 0.5)
    np.testing.assert_allclose(fitted.resampled[:, :2], air_level, atol=1e-6)  # fully outside: the air level
    assert "lies outside the radiograph" in " ".join(fitted.assumptions)


def test_a_lin_image_is_taken_back_to_line_integrals(drrs, tmp_path):
    """For-processing data proportional to the detector signal: -log of the transmission gives the line integral."""
    _, fine = drrs
    counts = np.round(np.exp(-fine) * 65535).astype(np.uint16)
    path = write_dicom(tmp_path / "raw.dcm", counts, bits_stored=16, PixelIntensityRelationship="LIN",
                       PixelIntensityRelationshipSign=1, PresentationIntentType="FOR PROCESSING",
                       ImagerPixelSpacing=[16.0 / FINE] * 2, EstimatedRadiographicMagnificationFactor="1.5",
                       PatientOrientation=["L", "F"])
    fitted = fit_radiograph(read_radiograph(path), spec_for(MODEL), "pa", FitOptions(intensity="linear"))
    np.testing.assert_allclose(fitted.resampled, block_mean(fine, FINE), atol=0.01)
    assert fitted.steps["intensity"]["domain"].startswith("-log")


# ------------------------------------------------------------------------------------------------ intensity
def test_histogram_matching_undoes_a_monotone_display_curve(drrs):
    coarse, _ = drrs
    target = coarse / coarse.max()
    levels = np.linspace(0, 1, 1001)
    displayed = 0.1 + 0.7 * np.sqrt(target)  # a display curve: the order of the pixels is all that survives
    matched = match_quantiles(displayed, levels, np.quantile(target, levels))
    assert np.abs(matched - target).max() < 0.02
    transmission = np.exp(-coarse)  # "intensity" models: bright where little attenuates
    matched = match_quantiles(displayed, levels, np.quantile(transmission, levels), descending=True)
    assert np.abs(matched - transmission).mean() < 0.005
    # at most half the widest gap between neighbouring values: ranks are interpolated between the pixels
    assert np.abs(matched - transmission).max() <= np.diff(np.sort(transmission.ravel())).max() / 2 + 1e-6
    np.testing.assert_allclose(match_quantiles(np.ones((3, 3)), [0, 0.5, 1], [0, 2, 10]), 2.0)  # ties: mid-rank


def test_a_drr_with_a_display_curve_comes_back_in_the_models_convention(drrs, tmp_path):
    """The whole fit with the intensity step: quantiles of the training views (here: this DRR's own) make a
    gamma-displayed, MONOCHROME1 film of the DRR the model's view again."""
    coarse, fine = drrs
    scale = coarse.max()
    views = coarse / scale
    levels = np.linspace(0, 1, 101)
    air = air_mask(coarse)
    quantiles = {"levels": levels.tolist(), "values": {"pa": np.quantile(views, levels).tolist()},
                 "body_values": {"pa": np.quantile(views[~air], levels).tolist()},
                 "air_values": {"pa": np.quantile(views[air], levels).tolist()},
                 "air_fraction": {"pa": float(air.mean())}, "patients": 1}
    counts = np.round((1 - np.clip(fine / scale, 0, 1) ** 0.6) * 1023).astype(np.uint16)  # dark bone: MONOCHROME1
    path = write_dicom(tmp_path / "film.dcm", counts, photometric="MONOCHROME1", bits_stored=10,
                       ImagerPixelSpacing=[16.0 / FINE] * 2, EstimatedRadiographicMagnificationFactor="1.5")
    spec = spec_for(MODEL, view_quantiles=quantiles)
    fitted = fit_radiograph(read_radiograph(path), spec, "pa")
    assert fitted.steps["intensity"]["mode"] == "quantile"
    # air is a threshold on the film's own (display) scale: the skin's partial-volume pixels may fall either way
    assert fitted.steps["intensity"]["air_fraction"]["radiograph"] == pytest.approx(air.mean(), abs=0.05)
    assert np.abs(fitted.image - views).mean() < 0.03  # measured 0.025, mostly those skin pixels
    assert correlation(fitted.image, views) > 0.99
    linear = fit_radiograph(read_radiograph(path), spec, "pa", FitOptions(intensity="linear"))
    assert np.abs(linear.image - views).mean() > 2 * np.abs(fitted.image - views).mean()


def test_air_is_the_dark_region_that_touches_the_border():
    image = np.full((60, 80), 0.8)
    image[:, :10] = 0.05  # air beside the body
    image[20:40, 20:35] = 0.1  # a "lung": as dark, but enclosed by the body
    mask = air_mask(image)
    assert mask[:, :10].all() and not mask[:, 10:].any()
    assert not air_mask(np.full((5, 5), 0.3)).any()


def test_dataset_view_quantiles_equal_numpy_over_the_views_a_model_sees(tiny_dataset):
    dataset = PatientDRRDataset(tiny_dataset, "train", views=["pa"])
    quantiles = dataset_view_quantiles(dataset)
    views = np.stack([dataset[i]["views"][0, 0].double().numpy() for i in range(len(dataset))])
    levels = np.linspace(0, 1, 101)
    np.testing.assert_allclose(quantiles["values"]["pa"], np.quantile(views, levels), rtol=1e-6, atol=1e-7)
    assert quantiles["patients"] == len(dataset) and quantiles["split"] == "train"
    assert 0 < quantiles["air_fraction"]["pa"] < 0.5
    assert quantiles["air_values"]["pa"][-1] <= quantiles["body_values"]["pa"][50]
    assert dataset.input_spec().view_quantiles == quantiles


# ------------------------------------------------------------------------------------------------ resampling
def test_area_resample_closed_forms():
    rng = np.random.default_rng(0)
    image = rng.random((12, 8))
    out, covered = area_resample(image, np.arange(0, 13, 3.0), np.arange(0, 9, 2.0), fill=0.0)
    np.testing.assert_allclose(out, block_mean(image, 1).reshape(4, 3, 4, 2).mean(axis=(1, 3)), atol=1e-12)
    np.testing.assert_allclose(covered, 1.0)
    rows = np.arange(4.0)[:, None] * np.ones((1, 3))  # pixel value = its row index
    out, _ = area_resample(rows, np.array([0.5, 2.5, 4.0]), np.array([0.0, 3.0]), fill=0.0)
    np.testing.assert_allclose(out[:, 0], [(0 * 0.5 + 1 + 2 * 0.5) / 2, (2 * 0.5 + 3) / 1.5])  # fractional pixels
    out, covered = area_resample(np.ones((4, 4)), np.array([-2.0, 2.0]), np.array([0.0, 4.0]), fill=0.25)
    np.testing.assert_allclose(covered, 0.5)
    np.testing.assert_allclose(out, 0.5 * 1.0 + 0.5 * 0.25)  # half outside: the fill


# ------------------------------------------------------------------------------------------------ spacing
def radiograph(**fields) -> Radiograph:
    return Radiograph(image=np.zeros((100, 50), np.float32), path="film.dcm", file_format="dicom", **fields)


@pytest.mark.parametrize(("fields", "options", "spacing", "source", "magnification", "said"), [
    ({"imager_pixel_spacing_mm": (0.15, 0.15), "estimated_magnification": 1.1},
     {"pixel_spacing_mm": (0.2, 0.2), "magnification": 1.25}, 0.2, "--pixel-spacing", 1.25, ""),
    ({"pixel_spacing_mm": (0.15, 0.15), "pixel_spacing_calibration": "GEOMETRY",
      "imager_pixel_spacing_mm": (0.165, 0.165)}, {"magnification": 1.3}, 0.15, "PixelSpacing (GEOMETRY)", 1.0,
     "not used"),
    ({"pixel_spacing_mm": (0.15, 0.15), "imager_pixel_spacing_mm": (0.165, 0.165)}, {}, 0.15,
     "PixelSpacing (differs from ImagerPixelSpacing)", 1.0, ""),
    ({"imager_pixel_spacing_mm": (0.2, 0.2), "estimated_magnification": 1.1}, {}, 0.2, "ImagerPixelSpacing", 1.1,
     ""),
    ({"imager_pixel_spacing_mm": (0.2, 0.2), "source_to_detector_mm": 1800.0, "source_to_patient_mm": 1500.0}, {},
     0.2, "ImagerPixelSpacing", 1.2, "DistanceSourceToPatient taken as the distance to the patient's mid-plane"),
    ({"imager_pixel_spacing_mm": (0.2, 0.2), "source_to_detector_mm": 2000.0}, {}, 0.2, "ImagerPixelSpacing",
     2000 / 1850, "mid-plane taken 150 mm in front of the image plane"),
    ({"scanned_pixel_spacing_mm": (0.1, 0.1)}, {}, 0.1, "NominalScannedPixelSpacing (the film)", 1800 / 1650,
     "no source-to-detector distance: 1800 mm assumed"),
    ({"pixel_spacing_mm": (0.3, 0.3)}, {}, 0.3, "PixelSpacing (no calibration stated)", 1800 / 1650,
     "taken at the detector"),
    ({}, {}, 4.3, "estimate", 1800 / 1650, "estimated as 4.3 mm (a 430 mm detector across the image's longer side"),
])
def test_spacing_and_magnification_are_taken_in_order(fields, options, spacing, source, magnification, said):
    assumptions: list[str] = []
    record = isocentre_spacing(radiograph(**fields), "frontal", FitOptions(**options), assumptions)
    assert record["detector_spacing_mm"] == pytest.approx([spacing, spacing])
    assert record["spacing_source"].startswith(source)
    assert record["magnification"] == pytest.approx(magnification)
    assert record["isocentre_spacing_mm"] == pytest.approx([spacing / magnification] * 2)
    assert said in " ".join(assumptions)


def test_a_lateral_film_uses_the_lateral_mid_plane_and_bad_distances_are_refused():
    assumptions: list[str] = []
    record = isocentre_spacing(radiograph(imager_pixel_spacing_mm=(0.2, 0.2)), "lateral", FitOptions(), assumptions)
    assert record["magnification"] == pytest.approx(1800 / 1600)
    with pytest.raises(RadiographFitError, match=r"film\.dcm: DistanceSourceToDetector 1000 mm is shorter"):
        isocentre_spacing(radiograph(imager_pixel_spacing_mm=(0.2, 0.2), source_to_detector_mm=1000.0,
                                     source_to_patient_mm=1200.0), "frontal", FitOptions(), [])


# ------------------------------------------------------------------------------------------------ refusals
def pa_film(**fields) -> Radiograph:
    return replace(radiograph(imager_pixel_spacing_mm=(2.0, 2.0)), image=np.random.default_rng(0).random(
        (200, 180)).astype(np.float32), **fields)


def test_views_from_another_axis_are_refused_naming_file_and_reason():
    spec = spec_for(MODEL)
    with pytest.raises(RadiographFitError, match=r"film\.dcm: ViewPosition LL is a lateral radiograph, the model's "
                                                 r"view 'pa' is frontal"):
        fit_radiograph(pa_film(view_position="LL"), spec, "pa")
    with pytest.raises(RadiographFitError, match=r"film\.dcm: its orientation \(PatientOrientation P,F.*another "
                                                 r"axis"):
        fit_radiograph(pa_film(patient_orientation=("P", "F")), spec, "pa")
    with pytest.raises(RadiographFitError, match=r"no view 'lateral'; its views are \['pa'\]"):
        fit_radiograph(pa_film(), spec, "lateral")
    # the flags correct what the file says wrong
    fitted = fit_radiograph(pa_film(view_position="LL", patient_orientation=("P", "F")), spec, "pa",
                            FitOptions(view_position="pa", patient_orientation=("L", "F")))
    assert fitted.steps["view_position"]["source"] == "--view-position"
    assert fitted.steps["orientation"]["source"] == "--patient-orientation"


def test_what_the_file_lacks_is_assumed_and_said():
    fitted = fit_radiograph(pa_film(), spec_for(MODEL), "pa")
    said = " ".join(fitted.assumptions)
    assert "no patient orientation" in said and "no view position" in said
    assert "no distribution of the model's 'pa' training views is known" in said  # no quantiles in this spec
    ap = fit_radiograph(pa_film(view_position="AP", patient_orientation=("L", "F")), spec_for(MODEL), "pa")
    assert "the same projection from the other side" in " ".join(ap.assumptions)
    lateral = dict(MODEL, angles_deg=[90.0])
    fitted = fit_radiograph(pa_film(view_position="LL", patient_orientation=("A", "F")), spec_for(lateral, "lateral"),
                            "lateral")
    assert fitted.steps["orientation"]["flip_cols"] and not fitted.steps["orientation"]["flip_rows"]


@pytest.mark.parametrize(("options", "message"), [
    ({"pixel_spacing_mm": (0.2, -1)}, "pixel_spacing_mm must be two positive numbers"),
    ({"magnification": 0.9}, "magnification must be >= 1"),
    ({"patient_orientation": "L"}, "patient_orientation must be two DICOM direction codes"),
    ({"view_position": "OBLIQUE"}, "view_position must be one of"),
    ({"align": "lungs"}, "align must be one of"),
    ({"intensity": "cyclegan"}, "intensity must be one of"),
])
def test_bad_options_are_refused_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        FitOptions(**options)


# ------------------------------------------------------------------------------------------------ alignment
def test_body_alignment_centres_the_field_on_the_midline_and_names_its_failure():
    rows, cols = np.mgrid[0:300, 0:400]
    body = ((cols - 240) / 120.0) ** 2 + ((rows - 150) / 140.0) ** 2 < 1  # 40 px right of the image centre
    image = np.where(body, 0.7, 0.1).astype(np.float32)
    midline, reason = body_midline(image, (1.0, 1.0))
    assert midline == pytest.approx(40.0, abs=2.0) and reason == ""
    fitted = fit_radiograph(replace(pa_film(), image=image, imager_pixel_spacing_mm=(1.5, 1.5)), spec_for(MODEL),
                            "pa", FitOptions(align="body"))
    assert fitted.steps["alignment"]["shift_mm"][1] == pytest.approx(40 * 1.5 / (1800 / 1650), abs=2.0)
    wide = np.where(np.abs(cols - 100) < 150, 0.7, 0.1).astype(np.float32)  # cut by the image's left edge
    assert body_midline(wide, (1.0, 1.0)) == (None, "the body reaches the image's side edge, so a skin edge is "
                                                    "outside it")
    fitted = fit_radiograph(replace(pa_film(), image=wide), spec_for(MODEL), "pa", FitOptions(align="body"))
    assert fitted.steps["alignment"]["shift_mm"] == [0.0, 0.0]
    assert "body alignment of film.dcm failed (the body reaches the image's side edge" in " ".join(fitted.assumptions)
