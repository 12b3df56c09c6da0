"""Reading X-rays for inference: round trips per format, DICOM scaling and inversion, and every refusal."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from x2ct.data.xray_io import XrayReadError, read_xray, write_xray_png

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def _ramp(shape=(5, 7)) -> np.ndarray:
    """A [0, 1] image with every pixel different, both ends included."""
    return np.linspace(0.0, 1.0, shape[0] * shape[1]).reshape(shape)


def _write_dicom(path, stored: np.ndarray, photometric="MONOCHROME2", bits_stored=12, slope="1", intercept="0",
                 frames=None):
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
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PixelData = stored.astype("<u2").tobytes()
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
    path = _write_dicom(tmp_path / f"film{suffix}", stored)  # no suffix: recognised by the DICM preamble
    np.testing.assert_allclose(read_xray(path), stored / 4095.0, atol=1e-7)


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    stored = np.array([[0, 1000, 4095], [2048, 7, 4000]], dtype=np.uint16)
    path = _write_dicom(tmp_path / "film.dcm", stored, photometric="MONOCHROME1")
    image = read_xray(path)
    np.testing.assert_allclose(image, 1.0 - stored / 4095.0, atol=1e-7)
    assert image[0, 0] == 1.0 and image[0, 2] == 0.0


def test_dicom_rescale_is_applied(tmp_path):
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    path = _write_dicom(tmp_path / "film.dcm", stored, slope="2", intercept="10")
    np.testing.assert_allclose(read_xray(path), (stored * 2.0 + 10.0) / 4095.0, atol=1e-7)


def test_dicom_refusals(tmp_path):
    stored = np.zeros((2, 3), dtype=np.uint16)
    _assert_refused(_write_dicom(tmp_path / "rgb.dcm", stored, photometric="RGB"), "PhotometricInterpretation",
                    "'RGB'")
    frames = np.zeros((2, 2, 3), dtype=np.uint16)
    _assert_refused(_write_dicom(tmp_path / "cine.dcm", frames, frames=2), "multi-frame")
    _assert_refused(_write_dicom(tmp_path / "ct.dcm", stored + 100, intercept="-1024"), "RescaleIntercept")
    (tmp_path / "fake.dcm").write_bytes(b"not a dicom file at all")
    _assert_refused(tmp_path / "fake.dcm", "DICOM")
    assert pydicom.dcmread(tmp_path / "rgb.dcm").PhotometricInterpretation == "RGB"  # the fixture is valid DICOM


# --------------------------------------------------------------------------------------------------- refusals
def test_colour_png_refused_with_mode(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    _assert_refused(tmp_path / "colour.png", "colour", "'RGB'", "greyscale")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).convert("P").save(tmp_path / "palette.png")
    _assert_refused(tmp_path / "palette.png", "colour", "'P'")


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
    (tmp_path / "view.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg-ish")
    _assert_refused(tmp_path / "view.jpg", "unknown X-ray format", "'.jpg'")
    _assert_refused(tmp_path / "missing.png", "no such file")
