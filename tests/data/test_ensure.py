from functools import partial

import pytest
from omegaconf import OmegaConf

from x2ct.data.ensure import ensure_dataset
from x2ct.engine.distributed import run_on_main_then_wait


class Recorder:
    """A ``run_once`` that records what it was asked to run instead of preparing a data set."""

    def __init__(self):
        self.calls = []

    def __call__(self, prepare, *, what):
        self.calls.append(what)


def test_an_existing_data_set_is_returned_without_preparing(tmp_path):
    (tmp_path / "dataset.json").write_text("{}")
    run_once = Recorder()
    assert ensure_dataset(OmegaConf.create({"root": str(tmp_path), "prepare": ["data=phantom"]}), run_once) == tmp_path
    assert run_once.calls == []


def test_a_missing_data_set_without_a_recipe_is_refused_naming_the_folder(tmp_path):
    run_once = Recorder()
    with pytest.raises(FileNotFoundError, match=f"data.root={tmp_path / 'nothing'} holds no data set"):
        ensure_dataset(OmegaConf.create({"root": str(tmp_path / "nothing"), "prepare": None}), run_once)
    assert run_once.calls == []


def test_a_missing_data_set_is_prepared_once_through_run_once(tmp_path):
    run_once = Recorder()
    root = ensure_dataset(OmegaConf.create({"root": str(tmp_path / "new"), "prepare": ["data=phantom"]}), run_once)
    assert root == tmp_path / "new" and run_once.calls == [f"preparing the data set {tmp_path / 'new'}"]


def test_the_engines_rank_zero_runner_fits_run_once():
    """Training and evaluation pass ``partial(run_on_main_then_wait, timeout_s=...)``; in one process it runs."""
    ran = []
    partial(run_on_main_then_wait, timeout_s=1.0)(lambda: ran.append(True), what="preparing the data set /x")
    assert ran == [True]
