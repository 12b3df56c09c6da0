"""Fixtures for the real example chest CT (fetched by `python -m x2ct.data.example_ct`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from x2ct.data.ct_volume import CTVolume
from x2ct.data.example_ct import ENV_VAR, example_ct_path
from x2ct.data.readers import read_nifti


@pytest.fixture(scope="session")
def example_ct_file() -> Path:
    """Path of the example cxr.nii.gz, or skip: CI fetches it before the tests run."""
    path = example_ct_path()
    if path is None:
        pytest.skip(f"example CT not found (data/example or ${ENV_VAR}); run `python -m x2ct.data.example_ct`")
    return path


@pytest.fixture(scope="session")
def example_ct(example_ct_file: Path) -> CTVolume:
    """The example CT read once per session (reading the 34 MB .nii.gz takes about a second)."""
    return read_nifti(example_ct_file)
