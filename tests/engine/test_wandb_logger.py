"""x2ct/engine/wandb_logger.py: offline runs under run_dir, stable id on resume, finish twice, no files when off."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import compose_config
from x2ct.engine.wandb_logger import NullLogger, WandbLogger, image_to_uint8

pytest.importorskip("wandb")

CFG = {"model": {"name": "tiny"}, "trainer": {"lr": 0.001}}


@pytest.fixture(autouse=True)
def quiet_wandb(tmp_path, monkeypatch):
    """Offline, silent, and nothing written outside tmp_path."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb_home" / key.lower()))
    monkeypatch.delenv("RANK", raising=False)


def _is_run_folder(name: str, run_id: str) -> bool:
    """``offline-run-<date>_<time>-<id>``; W&B appends ``-1`` when a resumed run starts in the same second."""
    return re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?", name) is not None


def _create(run_dir, **kwargs):
    return WandbLogger.create(CFG, project="x2ct-tests", run_dir=run_dir, mode="offline", **kwargs)


def test_offline_run_writes_under_run_dir_and_resumes_same_id(tmp_path):
    run_dir = tmp_path / "run"
    logger = _create(run_dir, group="g", name="n", tags=["t"])
    assert isinstance(logger, WandbLogger)
    run_id = logger.run_id
    logger.log({"train/loss": torch.tensor(0.5), "lr": 1e-3}, step=1)
    ramp = np.linspace(0.1, 0.6, 16 * 16, dtype=np.float32).reshape(16, 16)
    images = [ramp, ramp.T]
    logger.log_images("val/views", images, step=1, captions=["pa", "lateral"])
    logger.summary({"best/val_psnr": 27.5})
    logger.finish()
    logger.finish()  # second call is a no-op
    with pytest.raises(RuntimeError, match="already finished"):
        logger.log({"x": 1.0}, step=2)

    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 and _is_run_folder(folders[0].name, run_id)
    assert (folders[0] / f"run-{run_id}.wandb").stat().st_size > 0
    pngs = sorted(folders[0].glob("files/media/images/val/views_1_*.png"))
    assert len(pngs) == 2
    from PIL import Image

    written = {np.asarray(Image.open(p).convert("L")).tobytes() for p in pngs}
    assert written == {image_to_uint8(image).tobytes() for image in images}  # [0, 1] floats -> 0..255, unscaled

    with _create(run_dir, run_id=run_id) as resumed:
        assert resumed.run_id == run_id
        resumed.log({"train/loss": 0.25}, step=2)
    names = [f.name for f in (run_dir / "wandb").glob("offline-run-*")]
    assert len(names) == 2 and all(_is_run_folder(name, run_id) for name in names), (run_id, names)


def test_disabled_makes_no_files(tmp_path):
    mode = compose_config("train", ["logger=none"]).logger.mode  # logger=none is the disabled mode
    assert mode == "disabled"
    logger = WandbLogger.create(CFG, project="p", run_dir=tmp_path / "run", mode=mode)
    assert isinstance(logger, NullLogger) and not isinstance(logger, WandbLogger)
    assert logger.run_id is None
    logger.log({"a": 1.0}, step=0)
    logger.log_images("x", [np.zeros((2, 2))], step=0)
    logger.summary({"a": 1.0})
    logger.finish()
    logger.finish(exit_code=1)
    assert not (tmp_path / "run").exists()


def test_ranks_other_than_zero_get_a_null_logger(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert type(_create(tmp_path / "run")) is NullLogger
    assert not (tmp_path / "run").exists()


def test_config_and_mode_are_checked(tmp_path):
    with pytest.raises(TypeError, match="DictConfig"):
        WandbLogger.create(OmegaConf.create(CFG), project="p", run_dir=tmp_path, mode="offline")
    with pytest.raises(ValueError, match="mode"):
        WandbLogger.create(CFG, project="p", run_dir=tmp_path, mode="offlne")


class FakeRun:
    """Stands in for a wandb Run to see exactly what the logger passes on."""

    def __init__(self) -> None:
        self.id = "fake"
        self.logged: list[tuple[dict, int]] = []
        self.summary: dict = {}
        self.exit_codes: list[int] = []

    def log(self, values, step):
        self.logged.append((values, step))

    def finish(self, exit_code=0):
        self.exit_codes.append(exit_code)


def test_exception_in_context_finishes_with_exit_code_one():
    run = FakeRun()
    with pytest.raises(KeyError), WandbLogger(run) as logger:
        logger.log({"loss": torch.tensor(2.0), "n": np.int64(3)}, step=np.int64(5))
        raise KeyError("boom")
    assert run.exit_codes == [1]
    values, step = run.logged[0]
    assert values == {"loss": 2.0, "n": 3} and type(values["loss"]) is float and step == 5 and type(step) is int
    logger.finish()
    assert run.exit_codes == [1]


def test_images_are_validated():
    logger = WandbLogger(FakeRun())
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        logger.log_images("v", [np.zeros((2, 2)), np.zeros((2, 2))], step=0, captions=["a"])
    with pytest.raises(ValueError, match=r"v\[0\].*\(1, 2, 2, 2\)"):
        logger.log_images("v", [np.zeros((1, 2, 2, 2))], step=0)


def test_image_to_uint8_clips_floats_and_keeps_uint8():
    out = image_to_uint8(np.array([[-0.5, 0.0], [0.5, 2.0]]))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0], [128, 255]]
    raw = np.array([[1, 200]], dtype=np.uint8)
    assert image_to_uint8(raw) is raw
    with pytest.raises(ValueError, match="dtype int64"):
        image_to_uint8(np.array([[1, 2]]))


def test_tables_keep_every_column_and_row(tmp_path):
    import json

    rows = [{"patient_id": "a", "psnr": 30.5}, {"patient_id": "b", "psnr": 28.0, "lungs_psnr": 25.0}]
    with _create(tmp_path / "run") as logger:
        logger.log_table("test/per_patient", rows)
    written = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/table/test/per_patient_*.json"))
    assert len(written) == 1
    table = json.loads(written[0].read_text())
    assert table["columns"] == ["patient_id", "psnr", "lungs_psnr"]
    assert table["data"] == [["a", 30.5, None], ["b", 28.0, 25.0]]
