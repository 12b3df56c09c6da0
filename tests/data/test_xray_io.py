"""Reading X-rays for inference: round trips per format, DICOM scaling and inversion, and every refusal."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from x2ct.data.xray_io import XrayReadError, parse_patient_orientation, read_radiograph, read_xray, write_xray_png

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def _ramp(shape=(5, 7)) -> np.ndarray:
    """A [0, 1] image with every pixel different, both ends included."""
    return np.linspace(0.0, 1.0, shape[0] * shape[1]).reshape(shape)


def write_dicom(path, stored: np.ndarray, photometric="MONOCHROME2", bits_stored=12, slope="1", intercept="0",
                frames=None, signed=False, **tags):
    """A DX-for-presentation DICOM of ``stored`` (16 bits allocated); ``tags``: more keywords to set (PixelSpacing,
    PatientOrientation, ...). Shared with the fitting and predict.py tests."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if frames is not None:
        ds.NumberOfFrames = frames
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _assert_refused(path, *fragments, **kwargs):
    with pytest.raises(XrayReadError) as info:
        read_xray(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------------------------------ round trips
def test_png16_round_trip_within_one_count(tmp_path):
    image = _ramp()
    image[1, 1] = 0.123456789  # not a multiple of 1/65535
    path = write_xray_png(image, tmp_path / "view.png")
    back = read_xray(path)
    assert back.dtype == np.float32 and back.shape == image.shape
    np.testing.assert_allclose(back, image, atol=1.0 / 65535)
    assert back[0, 0] == 0.0 and back[-1, -1] == 1.0  # full scale maps to exactly 0 and 1
    assert Image.open(path).mode.startswith("I;16")
    assert [p.name for p in tmp_path.iterdir()] == ["view.png"]  # the atomic write left no temporary file


def test_png8_is_divided_by_255(tmp_path):
    counts = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    Image.fromarray(counts).save(tmp_path / "view8.png")
    np.testing.assert_array_equal(read_xray(tmp_path / "view8.png"), (counts / 255.0).astype(np.float32))


def test_tiff_float_is_taken_as_is(tmp_path):
    image = _ramp().astype(np.float32)
    Image.fromarray(image).save(tmp_path / "view.tif")
    np.testing.assert_array_equal(read_xray(tmp_path / "view.tif"), image)


def test_npy_is_taken_as_is(tmp_path):
    image = _ramp() * 1.5 - 0.2  # not clipped: .npy views are assumed to be in the model's convention already
    np.save(tmp_path / "view.npy", image)
    back = read_xray(tmp_path / "view.npy", expected_shape=(5, 7))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))


def test_write_xray_png_refuses_values_outside_unit_range(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_xray_png(np.full((2, 2), 1.01), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="2D"):
        write_xray_png(np.zeros((1, 2, 2)), tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------ DICOM
@pytest.mark.parametrize("suffix", [".dcm", ""])
def test_dicom_monochrome2_scaled_by_bits_stored(tmp_path, suffix):
    stored = np.array([[0, 1000, 4095], [2048, 7, 4000]], dtype=np.uint16)
    path = write_dicom(tmp_path / f"film{suffix}", stored)  # no suffix: recognised by the DICM preamble
    np.testing.assert_allclose(read_xray(path), stored / 4095.0, atol=1e-7)


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    stored = np.array([[0, 1000, 4095], [2048, 7, 4000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "film.dcm", stored, photometric="MONOCHROME1")
    image = read_xray(path)
    np.testing.assert_allclose(image, 1.0 - stored / 4095.0, atol=1e-7)
    assert image[0, 0] == 1.0 and image[0, 2] == 0.0


def test_dicom_rescale_is_applied(tmp_path):
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    path = write_dicom(tmp_path / "film.dcm", stored, slope="2", intercept="10")
    np.testing.assert_allclose(read_xray(path), (stored * 2.0 + 10.0) / 4095.0, atol=1e-7)


def test_dicom_refusals(tmp_path):
    stored = np.zeros((2, 3), dtype=np.uint16)
    _assert_refused(write_dicom(tmp_path / "rgb.dcm", stored, photometric="RGB"), "PhotometricInterpretation",
                    "'RGB'")
    frames = np.zeros((2, 2, 3), dtype=np.uint16)
    _assert_refused(write_dicom(tmp_path / "cine.dcm", frames, frames=2), "multi-frame")
    _assert_refused(write_dicom(tmp_path / "ct.dcm", stored + 100, intercept="-1024"), "RescaleIntercept")
    (tmp_path / "fake.dcm").write_bytes(b"not a dicom file at all")
    _assert_refused(tmp_path / "fake.dcm", "DICOM")
    assert pydicom.dcmread(tmp_path / "rgb.dcm").PhotometricInterpretation == "RGB"  # the fixture is valid DICOM


# --------------------------------------------------------------------------------------------------- refusals
def test_colour_png_refused_with_mode(tmp_path):
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[..., 0] = 200  # red: channels differ by 200 counts
    Image.fromarray(colour).save(tmp_path / "colour.png")
    _assert_refused(tmp_path / "colour.png", "colour", "'RGB'", "200 counts", "greyscale")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).convert("P").save(tmp_path / "palette.png")
    _assert_refused(tmp_path / "palette.png", "colour", "'P'")
    transparent = np.full((4, 4, 4), 90, dtype=np.uint8)
    transparent[0, 0, 3] = 0
    Image.fromarray(transparent, mode="RGBA").save(tmp_path / "transparent.png")
    _assert_refused(tmp_path / "transparent.png", "transparent")


def test_garbage_and_truncated_png_refused(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"\x00\x01 definitely not an image " * 10)
    _assert_refused(tmp_path / "garbage.png", "not a readable image")
    good = write_xray_png(np.random.default_rng(0).random((64, 64)), tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    _assert_refused(tmp_path / "truncated.png", "not a readable image")


def test_bad_npy_refused(tmp_path):
    np.save(tmp_path / "volume.npy", np.zeros((2, 3, 4)))
    _assert_refused(tmp_path / "volume.npy", "2D", "(2, 3, 4)")
    nan = np.zeros((3, 3))
    nan[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _assert_refused(tmp_path / "nan.npy", "NaN")
    np.save(tmp_path / "counts.npy", np.zeros((3, 3), dtype=np.uint16))
    _assert_refused(tmp_path / "counts.npy", "uint16")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    _assert_refused(tmp_path / "broken.npy", "not a readable .npy")


def test_wrong_shape_refused_with_both_shapes(tmp_path):
    path = write_xray_png(np.zeros((5, 7)), tmp_path / "small.png")
    _assert_refused(path, "5x7", "128x128", "resize", expected_shape=(128, 128))
    assert read_xray(path, expected_shape=(5, 7)).shape == (5, 7)


def test_unknown_extension_and_missing_file_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "view.bmp")
    _assert_refused(tmp_path / "view.bmp", "unknown X-ray format", "'.bmp'")
    (tmp_path / "view.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg-ish")
    _assert_refused(tmp_path / "view.jpg", "not a readable image")
    _assert_refused(tmp_path / "missing.png", "no such file")


# ------------------------------------------------------------------------------------------ clinical exports
def test_jpeg_and_grey_rgb_exports_read_as_grey(tmp_path):
    counts = (np.arange(64 * 48).reshape(64, 48) % 200 + 20).astype(np.uint8)
    Image.fromarray(counts).save(tmp_path / "film.jpg", quality=100)
    jpeg = read_radiograph(tmp_path / "film.jpg")
    assert jpeg.file_format == "jpeg" and jpeg.pixel_spacing_mm is None and jpeg.patient_orientation is None
    np.testing.assert_allclose(jpeg.image, counts / 255.0, atol=4 / 255)  # JPEG at quality 100: a few counts
    Image.fromarray(np.repeat(counts[..., None], 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    grey = read_radiograph(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(grey.image, (counts / 255.0).astype(np.float32))
    assert any("equal channels" in note for note in grey.notes)


def test_tiff16_export_is_divided_by_65535(tmp_path):
    counts = (np.arange(30 * 20).reshape(30, 20) * 100).astype(np.uint16)
    Image.fromarray(counts).save(tmp_path / "film.tif")
    radiograph = read_radiograph(tmp_path / "film.tif")
    assert radiograph.file_format == "tiff" and radiograph.shape == (30, 20)
    np.testing.assert_allclose(radiograph.image, counts / 65535.0, atol=1e-7)


# -------------------------------------------------------------------------------------- clinical DICOM tags
def test_dicom_geometry_and_display_tags_are_recorded(tmp_path):
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    path = write_dicom(tmp_path / "chest.dcm", stored, ViewPosition="PA", PatientOrientation=["L", "F"],
                       ImagerPixelSpacing=[0.143, 0.15], PixelSpacing=[0.13, 0.1364],
                       PixelSpacingCalibrationType="GEOMETRY", EstimatedRadiographicMagnificationFactor="1.1",
                       DistanceSourceToDetector="1800", DistanceSourceToPatient="1636", BodyPartExamined="CHEST",
                       WindowCenter="2048", WindowWidth="4096", PresentationIntentType="FOR PRESENTATION",
                       PixelIntensityRelationship="LOG")
    r = read_radiograph(path)
    assert (r.modality, r.body_part, r.view_position, r.patient_orientation) == ("DX", "CHEST", "PA", ("L", "F"))
    assert r.imager_pixel_spacing_mm == (0.143, 0.15) and r.pixel_spacing_mm == (0.13, 0.1364)
    assert r.pixel_spacing_calibration == "GEOMETRY" and r.estimated_magnification == pytest.approx(1.1)
    assert (r.source_to_detector_mm, r.source_to_patient_mm) == (1800.0, 1636.0)
    assert r.window == (2048.0, 4096.0) and r.intensity_relationship == "LOG"
    assert r.presentation_intent == "FOR PRESENTATION"
    np.testing.assert_allclose(r.image, stored / 4095.0, atol=1e-7)  # the window is recorded, not applied
    assert any("window centre 2048, width 4096 deliberately not applied" in note for note in r.notes)
    assert r.to_dict()["patient_orientation"] == ["L", "F"] and "image" not in r.to_dict()


def test_unusable_dicom_spacing_and_orientation_are_ignored_with_a_note(tmp_path):
    path = write_dicom(tmp_path / "cr.dcm", np.zeros((3, 4), np.uint16), PixelSpacing=[0, 0],
                       PatientOrientation=["X", "F"], DistanceSourceToDetector="0")
    r = read_radiograph(path)
    assert r.pixel_spacing_mm is None and r.patient_orientation is None and r.source_to_detector_mm is None
    notes = " | ".join(r.notes)
    assert "PixelSpacing [0.0, 0.0] is not two positive spacings" in notes
    assert "PatientOrientation" in notes and "DistanceSourceToDetector" in notes


@pytest.mark.parametrize(("photometric", "tags", "inverted", "why"), [
    ("MONOCHROME2", {"PixelIntensityRelationshipSign": 1}, True, "PixelIntensityRelationshipSign +1"),
    ("MONOCHROME1", {"PixelIntensityRelationshipSign": -1}, False, "PixelIntensityRelationshipSign -1"),
    ("MONOCHROME2", {"PresentationLUTShape": "INVERSE"}, True, "MONOCHROME2 under PresentationLUTShape INVERSE"),
    ("MONOCHROME1", {"PresentationLUTShape": "INVERSE"}, True, "its usual companion, not a second inversion"),
    ("MONOCHROME2", {"PresentationLUTShape": "IDENTITY"}, False, "MONOCHROME2 (high values shown white)"),
])
def test_which_way_is_bone_bright(tmp_path, photometric, tags, inverted, why):
    """The physical sign wins over the display convention; a DX INVERSE LUT is MONOCHROME1's companion."""
    stored = np.array([[0, 1000, 4095]], dtype=np.uint16)
    r = read_radiograph(write_dicom(tmp_path / "film.dcm", stored, photometric=photometric, **tags))
    expected = 1.0 - stored / 4095.0 if inverted else stored / 4095.0
    np.testing.assert_allclose(r.image, expected, atol=1e-7)
    assert any(why in note for note in r.notes), r.notes


def test_signed_pixels_and_modality_lut(tmp_path):
    signed = np.array([[-2048, 0, 2047]], dtype=np.int16)
    r = read_radiograph(write_dicom(tmp_path / "signed.dcm", signed, signed=True))
    np.testing.assert_allclose(r.image, (signed + 2048.0) / 4095.0, atol=1e-7)
    lut = Dataset()
    lut.add_new((0x0028, 0x3002), "US", [4, 10, 8])  # LUTDescriptor: 4 entries, first mapped value 10, 8 bits
    lut.add_new((0x0028, 0x3006), "US", [0, 51, 102, 255])  # LUTData
    stored = np.array([[5, 10, 11, 12, 13, 99]], dtype=np.uint16)  # below and above the table: clamped
    r = read_radiograph(write_dicom(tmp_path / "lut.dcm", stored, slope=None, ModalityLUTSequence=[lut]))
    np.testing.assert_allclose(r.image, np.array([[0, 0, 51, 102, 255, 255]]) / 255.0, atol=1e-7)
    assert any("Modality LUT Sequence applied" in note for note in r.notes)


def test_patient_orientation_parsing():
    assert parse_patient_orientation(["L", "F"]) == ("L", "F")
    assert parse_patient_orientation("a\\fr") == ("A", "FR")
    assert parse_patient_orientation("P,F") == ("P", "F")
    for bad in (None, "L", "L,F,H", "L,X", ["", "F"], 3):
        assert parse_patient_orientation(bad) is None
