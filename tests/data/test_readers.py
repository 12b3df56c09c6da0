"""NIfTI and DICOM readers: orientation, spacing, origin and HU against hand-built files; bad input errors."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from x2ct.data.ct_volume import CTVolume
from x2ct.data.readers import CTReadError, find_ct_files, read_ct, read_dicom_series, read_nifti

MARKER_HU = 3000.0


def random_ct(shape=(6, 7, 8), spacing=(2.5, 1.25, 0.8), origin=(10.0, -20.0, 30.0), seed=0) -> CTVolume:
    """A canonical CT with integer HU values (exact in float32) and anisotropic spacing."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1000, size=shape).astype(np.float32)
    return CTVolume(hu=hu, spacing=spacing, origin=origin, source="synthetic")


def save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def assert_same_volume(a: CTVolume, b: CTVolume) -> None:
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)


# ------------------------------------------------------------------------------------------------ NIfTI


def test_canonical_round_trip(tmp_path):
    ct = random_ct()
    back = read_nifti(ct.save_nifti(tmp_path / "ct.nii.gz"))
    assert_same_volume(back, ct)
    assert back.hu.dtype == np.float32
    assert back.metadata["original_axcodes"] == "RAS"
    assert back.metadata["oblique"] is False
    assert json.loads(json.dumps(back.metadata)) == back.metadata


def test_lps_file_is_reoriented_marker_lands_left_anterior_superior(tmp_path):
    """File axes i -> patient Left, j -> Posterior, k -> Superior (LPS, as DICOM converters often write)."""
    ct = random_ct()
    sd, sh, sw = ct.spacing
    n_d, n_h, n_w = ct.shape
    ras = ct.hu.transpose(2, 1, 0)  # [i=W (right), j=H (anterior), k=D (superior)]
    lps = ras[::-1, ::-1, :].copy()
    lps[-1, 0, -1] = MARKER_HU  # i last = most left, j first = most anterior, k last = most superior
    affine = np.array([[-sw, 0, 0, 0], [0, -sh, 0, 0], [0, 0, sd, 0], [0, 0, 0, 1.0]])
    affine[:3, 3] = ct.affine[:3, :3] @ [n_w - 1, n_h - 1, 0] + ct.origin  # world of ras voxel (n_w-1, n_h-1, 0)
    back = read_nifti(save(lps, affine, tmp_path / "lps.nii.gz"))

    assert back.metadata["original_axcodes"] == "LPS"
    assert back.shape == ct.shape
    # Left = W index 0, anterior = last H index, superior = last D index.
    assert np.unravel_index(np.argmax(back.hu), back.shape) == (n_d - 1, n_h - 1, 0)
    expected = ct.hu.copy()
    expected[n_d - 1, n_h - 1, 0] = MARKER_HU
    np.testing.assert_array_equal(back.hu, expected)
    np.testing.assert_allclose(back.spacing, ct.spacing)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-5)


def test_permuted_axes_file(tmp_path):
    """File stored as (D, W, H) with H flipped: axes codes S, R, P."""
    ct = random_ct(shape=(5, 6, 7), spacing=(3.0, 1.0, 0.5))
    sd, sh, sw = ct.spacing
    data = ct.hu.transpose(0, 2, 1)[:, :, ::-1].copy()  # [k, i, j reversed]
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2] = sd, sw, -sh
    affine[:3, 3] = np.asarray(ct.origin) + np.array([0, (ct.shape[1] - 1) * sh, 0])
    affine[3, 3] = 1
    back = read_nifti(save(data, affine, tmp_path / "srp.nii"))
    assert back.metadata["original_axcodes"] == "SRP"
    assert_same_volume(back, ct)


def test_nifti_scaling_and_4d_singleton_are_applied(tmp_path):
    ct = random_ct()
    stored = ((ct.hu.transpose(2, 1, 0) + 1024) / 2).astype(np.int16)  # values are even or odd: keep exactness
    path = save(stored[..., None], ct.affine, tmp_path / "scaled4d.nii")
    _patch_header(path, scl_slope=2.0, scl_inter=-1024.0)
    expected = np.floor((ct.hu + 1024) / 2) * 2 - 1024
    back = read_nifti(path)
    np.testing.assert_array_equal(back.hu, expected)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-5)


def test_oblique_affine_is_flagged(tmp_path):
    ct = random_ct()
    angle = np.radians(5.0)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    with pytest.warns(UserWarning, match="oblique"):
        back = read_nifti(save(ct.hu.transpose(2, 1, 0), rot @ ct.affine, tmp_path / "oblique.nii.gz"))
    assert back.metadata["oblique"] is True
    assert back.metadata["obliquity_deg"] == pytest.approx(5.0, abs=1e-3)
    np.testing.assert_allclose(back.spacing, ct.spacing, rtol=1e-6)


def test_metadata_records_original_geometry(tmp_path):
    ct = random_ct()
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
    back = read_nifti(save(ct.hu.transpose(2, 1, 0), lps_affine, tmp_path / "x.nii.gz"))
    assert back.metadata["format"] == "nifti"
    assert back.metadata["original_shape"] == [8, 7, 6]
    np.testing.assert_allclose(back.metadata["original_affine"], lps_affine)


# ------------------------------------------------------------------------------------------------ bad NIfTI


def test_missing_file(tmp_path):
    with pytest.raises(CTReadError, match=r"nothere\.nii\.gz"):
        read_nifti(tmp_path / "nothere.nii.gz")


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated_file(tmp_path, name):
    path = random_ct(shape=(20, 20, 20)).save_nifti(tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CTReadError, match=name):
        read_nifti(path)


@pytest.mark.parametrize("name", ["garbage.nii.gz", "garbage.nii"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(CTReadError, match=name):
        read_nifti(path)


def test_gzip_of_garbage(tmp_path):
    path = tmp_path / "gz_garbage.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 50))
    with pytest.raises(CTReadError, match=r"gz_garbage\.nii\.gz"):
        read_nifti(path)


@pytest.mark.parametrize(("name", "shape", "what"), [
    ("flat.nii.gz", (16, 16), "2D"),
    ("single.nii.gz", (16, 16, 1), "single slice"),
    ("series.nii.gz", (8, 8, 8, 3), "4D"),
])
def test_wrong_dimensionality(tmp_path, name, shape, what):
    path = save(np.zeros(shape, dtype=np.float32), np.eye(4), tmp_path / name)
    with pytest.raises(CTReadError, match=rf"{name}.*{what}"):
        read_nifti(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path, bad):
    data = np.zeros((8, 8, 8), dtype=np.float32)
    data[3, 4, 5] = bad
    path = save(data, np.eye(4), tmp_path / "nonfinite.nii.gz")
    with pytest.raises(CTReadError, match=r"nonfinite.nii.gz.*1 voxels are NaN or inf"):
        read_nifti(path)


def _patch_header(path: Path, **fields) -> None:
    """Rewrite header fields of an uncompressed .nii in place, bypassing nibabel's checks."""
    raw = path.read_bytes()
    with open(path, "rb") as f:
        header = nib.Nifti1Header.from_fileobj(f, check=False)
    for key, value in fields.items():
        header[key] = value
    path.write_bytes(header.binaryblock + raw[len(header.binaryblock):])


@pytest.mark.parametrize("spacing", [0.0, -1.5])
def test_zero_or_negative_pixdim(tmp_path, spacing):
    path = save(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4), tmp_path / "pixdim.nii")
    _patch_header(path, pixdim=[1, 1, spacing, 1, 1, 1, 1, 1], sform_code=0, qform_code=1)
    with pytest.raises(CTReadError, match=r"pixdim.nii.*spacing"):
        read_nifti(path)


def test_zero_sform_column(tmp_path):
    path = save(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4), tmp_path / "sform.nii")
    _patch_header(path, srow_y=[0, 0, 0, 0], sform_code=1)
    with pytest.raises(CTReadError, match=r"sform.nii.*spacing must be positive"):
        read_nifti(path)


# ------------------------------------------------------------------------------------------------ DICOM


def write_dicom_slice(path: Path, stored: np.ndarray, position, orientation=(1, 0, 0, 0, 1, 0),
                      pixel_spacing=(0.75, 0.5), slope=1.0, intercept=-1024.0, series_uid="1.2.826.0.1.3680043.2.1",
                      preamble=True, description="chest") -> None:
    """One uint16 CT slice; ``stored`` (Rows, Columns) holds the raw values, HU = stored * slope + intercept."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.0"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = list(pixel_spacing)
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [float(p) for p in position]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype("<u2").tobytes()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)


def write_axial_series(folder: Path, hu: np.ndarray, z0=-40.0, dz=2.5, xy0=(-5.0, 7.0), seed=0,
                       **kwargs) -> list[Path]:
    """``hu`` (S, Rows, Columns), slice s at z = z0 + s * dz; files named in shuffled order. Returns paths by s."""
    folder.mkdir(parents=True, exist_ok=True)
    names = np.random.default_rng(seed).permutation(len(hu))
    paths = []
    for s, image in enumerate(hu):
        path = folder / f"IM{names[s]:04d}.dcm"
        write_dicom_slice(path, (image + 1024).astype(np.uint16), (*xy0, z0 + s * dz), **kwargs)
        paths.append(path)
    return paths


def synthetic_hu(shape=(8, 16, 16), seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(np.float32)


def test_dicom_axial_series_matches_hand_built_nifti(tmp_path):
    hu = synthetic_hu()
    write_axial_series(tmp_path / "series", hu)
    ct = read_dicom_series(tmp_path / "series")

    # The same scan as a NIfTI: i = column (patient left in LPS, so -x in RAS), j = row (posterior: -y), k = slice.
    row_spacing, col_spacing, dz = 0.75, 0.5, 2.5
    affine = np.diag([-col_spacing, -row_spacing, dz, 1.0])
    affine[:3, 3] = [5.0, -7.0, -40.0]  # LPS (-5, 7, -40) in RAS
    reference = read_nifti(save(hu.transpose(2, 1, 0), affine, tmp_path / "same.nii.gz"))
    assert_same_volume(ct, reference)
    assert ct.metadata["original_axcodes"] == reference.metadata["original_axcodes"] == "LPS"

    # And explicitly: slice s -> D index s; row r (anterior first) -> H index R-1-r; column c -> W index C-1-c.
    np.testing.assert_array_equal(ct.hu, hu[:, ::-1, ::-1])
    np.testing.assert_allclose(ct.spacing, (dz, row_spacing, col_spacing))
    n_rows, n_cols = hu.shape[1:]
    np.testing.assert_allclose(ct.origin, (5.0 - (n_cols - 1) * col_spacing, -7.0 - (n_rows - 1) * row_spacing, -40.0))
    assert ct.metadata["format"] == "dicom"
    assert ct.metadata["n_slices"] == 8
    assert json.loads(json.dumps(ct.metadata)) == ct.metadata


def test_dicom_coronal_series_orientation(tmp_path):
    """Rows run toward the feet, slices step toward the back: a marker in the first file's top-left pixel is
    the anterior-superior-right corner."""
    hu = np.zeros((4, 5, 6), dtype=np.float32)  # (slices, rows, columns)
    hu[0, 0, 0] = MARKER_HU
    folder = tmp_path / "coronal"
    folder.mkdir()
    for s in range(4):
        write_dicom_slice(folder / f"{3 - s}.dcm", (hu[s] + 1024).astype(np.uint16), position=(0.0, 10.0 + 2 * s, 0.0),
                          orientation=(1, 0, 0, 0, 0, -1), pixel_spacing=(1.5, 1.0))
    ct = read_dicom_series(folder)
    assert ct.shape == (5, 4, 6)  # D from rows, H from slices, W from columns
    np.testing.assert_allclose(ct.spacing, (1.5, 2.0, 1.0))
    assert np.unravel_index(np.argmax(ct.hu), ct.shape) == (4, 3, 5)  # superior, anterior, right


def test_dicom_per_slice_rescale(tmp_path):
    hu = synthetic_hu(shape=(3, 4, 4))
    folder = tmp_path / "rescale"
    folder.mkdir()
    for s, image in enumerate(hu):
        slope, intercept = (2.0, -2048.0) if s == 1 else (1.0, -1024.0)
        write_dicom_slice(folder / f"{s}.dcm", ((image - intercept) / slope).astype(np.uint16), (0, 0, 3.0 * s),
                          slope=slope, intercept=intercept)
    hu[1] = np.floor((hu[1] + 2048) / 2) * 2 - 2048  # what survives integer storage with slope 2
    np.testing.assert_array_equal(read_dicom_series(folder).hu, hu[:, ::-1, ::-1])


def test_dicom_skips_non_image_files_and_reads_headerless_slices(tmp_path):
    hu = synthetic_hu(shape=(4, 6, 6))
    folder = tmp_path / "mixed"
    paths = write_axial_series(folder, hu)
    # Rewrite one slice without the 128-byte preamble and meta header.
    write_dicom_slice(paths[2], (hu[2] + 1024).astype(np.uint16), (-5.0, 7.0, -40.0 + 2 * 2.5), preamble=False)
    assert paths[2].read_bytes()[128:132] != b"DICM"
    (folder / "notes.txt").write_text("scanner export notes\n")
    (folder / "random.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    _write_dicomdir_like(folder / "DICOMDIR")
    ct = read_dicom_series(folder)
    np.testing.assert_array_equal(ct.hu, hu[:, ::-1, ::-1])


def _write_dicomdir_like(path: Path) -> None:
    """A valid DICOM file with no pixel data (as DICOMDIR or a structured report)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_dicom_missing_slice_names_folder_and_gap(tmp_path):
    folder = tmp_path / "gappy"
    paths = write_axial_series(folder, synthetic_hu(), z0=-40.0, dz=2.5)
    paths[4].unlink()
    with pytest.raises(CTReadError, match=r"gappy: missing slice between z=-32.500 and z=-27.500"):
        read_dicom_series(folder)


def test_dicom_uneven_spacing_and_duplicates(tmp_path):
    folder = tmp_path / "uneven"
    folder.mkdir()
    for s, z in enumerate([0.0, 2.0, 4.0, 7.0, 9.0]):
        write_dicom_slice(folder / f"{s}.dcm", np.zeros((4, 4), np.uint16), (0, 0, z))
    with pytest.raises(CTReadError, match=r"uneven: uneven slice spacing between z=4.000 and z=7.000"):
        read_dicom_series(folder)
    write_dicom_slice(folder / "3.dcm", np.zeros((4, 4), np.uint16), (0, 0, 4.0))
    write_dicom_slice(folder / "4.dcm", np.zeros((4, 4), np.uint16), (0, 0, 6.0))
    with pytest.raises(CTReadError, match=r"uneven: duplicate slice position z=4.000"):
        read_dicom_series(folder)


def test_dicom_inconsistent_size(tmp_path):
    folder = tmp_path / "sizes"
    paths = write_axial_series(folder, synthetic_hu(shape=(3, 8, 8)))
    write_dicom_slice(paths[1], np.zeros((8, 6), np.uint16), (-5.0, 7.0, -37.5))
    with pytest.raises(CTReadError, match=r"sizes: slices differ in Columns"):
        read_dicom_series(folder)


def test_dicom_several_series(tmp_path):
    folder = tmp_path / "two"
    hu = synthetic_hu(shape=(3, 4, 4))
    write_axial_series(folder, hu, series_uid="1.2.3.1", description="soft")
    for s, image in enumerate(hu):
        write_dicom_slice(folder / f"B{s}.dcm", (image + 1024).astype(np.uint16), (0, 0, s), series_uid="1.2.3.2")
    with pytest.raises(CTReadError, match=r"two: holds 2 DICOM series.*1\.2\.3\.1 \(3 files, soft\).*1\.2\.3\.2"):
        read_dicom_series(folder)
    ct = read_dicom_series(folder, series_uid="1.2.3.1")
    np.testing.assert_array_equal(ct.hu, hu[:, ::-1, ::-1])
    assert ct.metadata["series_instance_uid"] == "1.2.3.1"
    with pytest.raises(CTReadError, match=r"no series with SeriesInstanceUID 9\.9"):
        read_dicom_series(folder, series_uid="9.9")


def test_dicom_empty_or_non_dicom_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CTReadError, match=r"empty: no DICOM image files"):
        read_dicom_series(empty)
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(CTReadError, match=r"empty: no DICOM image files"):
        read_dicom_series(empty)


def test_dicom_single_slice(tmp_path):
    folder = tmp_path / "one"
    write_axial_series(folder, synthetic_hu(shape=(1, 4, 4)))
    with pytest.raises(CTReadError, match=r"one: series has a single slice"):
        read_dicom_series(folder)


@pytest.mark.parametrize("keep", [200, 400, -10])
def test_dicom_truncated_file(tmp_path, keep):
    """Cut in the meta header, in the dataset, in the pixel data: pydicom reads each without complaint."""
    folder = tmp_path / "corrupt"
    paths = write_axial_series(folder, synthetic_hu(shape=(3, 4, 4)))
    paths[1].write_bytes(paths[1].read_bytes()[:keep])
    with pytest.raises(CTReadError, match=paths[1].name):
        read_dicom_series(folder)


# ------------------------------------------------------------------------------------------------ dispatch


def test_read_ct_dispatch(tmp_path):
    ct = random_ct()
    assert_same_volume(read_ct(ct.save_nifti(tmp_path / "a.nii.gz")), ct)
    assert_same_volume(read_ct(ct.save_nifti(tmp_path / "b.NII")), ct)
    hu = synthetic_hu(shape=(3, 4, 4))
    write_axial_series(tmp_path / "dcm", hu)
    np.testing.assert_array_equal(read_ct(tmp_path / "dcm").hu, hu[:, ::-1, ::-1])
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(CTReadError, match=r"scan.mha: unknown CT format"):
        read_ct(tmp_path / "scan.mha")
    with pytest.raises(CTReadError, match=r"ghost.nii.gz"):
        read_ct(tmp_path / "ghost.nii.gz")


def test_find_ct_files(tmp_path):
    ct = random_ct()
    ct.save_nifti(tmp_path / "b.nii.gz")
    ct.save_nifti(tmp_path / "sub" / "a.nii")
    write_axial_series(tmp_path / "patient1" / "series1", synthetic_hu(shape=(2, 4, 4)))
    headerless = tmp_path / "patient2"
    headerless.mkdir()
    write_dicom_slice(headerless / "IM0.dcm", np.zeros((4, 4), np.uint16), (0, 0, 0), preamble=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("not a CT")
    ct.save_nifti(tmp_path / ".partial" / "c.nii.gz")
    found = find_ct_files(tmp_path)
    assert found == sorted([tmp_path / "b.nii.gz", tmp_path / "sub" / "a.nii", tmp_path / "patient1" / "series1",
                            headerless])
    shutil.rmtree(tmp_path / "patient1")
    assert tmp_path / "patient1" / "series1" not in find_ct_files(tmp_path)
    with pytest.raises(CTReadError, match=r"b\.nii\.gz: not a folder"):
        find_ct_files(tmp_path / "b.nii.gz")


# ------------------------------------------------------------------------------------------------ HU scale


def test_hu_wrapped_by_an_unsigned_16_bit_writer_is_warned_about_and_counted(tmp_path):
    """HU below -1024 stored as unsigned 16-bit (intercept -1024) wrap to about +64,500: the reader warns, naming
    the unsigned writer, and counts them."""
    from x2ct.data.readers import HURangeWarning

    hu = synthetic_hu(shape=(4, 8, 8))
    hu[0, 0, 0] = -1000.0  # air
    hu[1, :2, :3] = -2000.0  # 6 voxels below the stored range
    folder = tmp_path / "wrapped"
    folder.mkdir()
    for s, image in enumerate(hu):
        stored = ((image.astype(np.int64) + 1024) % 65536).astype(np.uint16)  # what the writer did
        write_dicom_slice(folder / f"IM{s}.dcm", stored, (0.0, 0.0, 2.5 * s))
    with pytest.warns(HURangeWarning, match=r"wrapped: 0 voxel\(s\) below -1024 HU and 6 above 3071 HU "
                                            r"\(HU range \[-1000, 63536\]\).*unsigned 16-bit"):
        ct = read_ct(folder)
    assert ct.metadata["hu_outside_scale"] == {"range": [-1024.0, 3071.0], "below": 0, "above": 6,
                                               "min": -1000.0, "max": 63536.0, "padding_hu": None, "padding": 0}


def test_padding_and_values_inside_the_ct_scale_are_not_warned_about(tmp_path):
    import warnings

    hu = synthetic_hu(shape=(4, 8, 8))
    hu[:, 0] = -2048.0  # scanner padding outside the reconstruction circle (as the example CT)
    hu[2, 4, 4] = 3071.0  # the scale's top: saturated metal
    ct = CTVolume(hu=hu, spacing=(2.0, 1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = read_ct(ct.save_nifti(tmp_path / "padded.nii.gz"))
    outside = back.metadata["hu_outside_scale"]
    assert (outside["below"], outside["above"], outside["padding_hu"], outside["padding"]) == (0, 0, -2048.0, 32)
    # below-range values other than the padding constant are counted and named
    hu[3, 5, 5] = -1500.0
    from x2ct.data.readers import HURangeWarning

    with pytest.warns(HURangeWarning, match=r"odd.nii.gz: 1 voxel\(s\) below -1024 HU and 0 above"):
        read_ct(CTVolume(hu=hu, spacing=(2.0, 1.0, 1.0)).save_nifti(tmp_path / "odd.nii.gz"))


@pytest.mark.realdata
def test_the_example_ct_is_inside_the_ct_scale_but_for_its_padding(example_ct_file):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outside = read_ct(example_ct_file).metadata["hu_outside_scale"]
    assert (outside["below"], outside["above"], outside["padding_hu"]) == (0, 0, -2048.0)
