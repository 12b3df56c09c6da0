"""Fixtures shared across test packages: a tiny phantom data set prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES, compose_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    root = tmp_path_factory.mktemp("tiny") / "phantom_default"
    cfg = compose_config("prepare", [*TINY_OVERRIDES, f"output_dir={root}"])
    report = prepare_dataset(load_prepare_config(cfg), progress=False)
    assert report.ok, report.failures
    return root
