"""Fixtures shared across test packages: a tiny phantom data set and a tiny trained run (once per session), and
the real example chest CT (fetched by `python -m x2ct.data.example_ct`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES, compose_config
from x2ct.data.ct_volume import CTVolume
from x2ct.data.example_ct import ENV_VAR, example_ct_path
from x2ct.data.readers import read_nifti


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    root = tmp_path_factory.mktemp("tiny") / "phantom_default"
    cfg = compose_config("prepare", [*TINY_OVERRIDES, f"output_dir={root}"])
    report = prepare_dataset(load_prepare_config(cfg), progress=False)
    assert report.ok, report.failures
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny baseline trained for two epochs on ``tiny_dataset`` (a few seconds); returns its run folder."""
    from tests.engine.test_train import tiny_cfg
    from x2ct.engine.trainer import train

    out = tmp_path_factory.mktemp("tiny_run")
    run_dir = out / "run"
    train(tiny_cfg(tiny_dataset, out), run_dir=run_dir)
    return run_dir


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
