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


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny baseline trained for two epochs on ``tiny_dataset`` (a few seconds); returns its run folder."""
    from tests.engine.test_train import tiny_cfg
    from x2ct.engine.trainer import train

    out = tmp_path_factory.mktemp("tiny_run")
    run_dir = out / "run"
    train(tiny_cfg(tiny_dataset, out), run_dir=run_dir)
    return run_dir
