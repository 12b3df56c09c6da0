"""GPU readiness as far as the CPU can show it: every shipped recipe's training step under bf16 autocast (what
``precision=auto`` gives on CUDA), at tiny size, in one process."""

from __future__ import annotations

import math

import pytest
import torch

from tests.engine.test_ddp import RECIPES, _recipe_cfg, eight_view_dataset  # noqa: F401  (the fixture)
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.trainer import train


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_trains_in_bf16_on_the_cpu(eight_view_dataset, tmp_path, recipe):  # noqa: F811
    cfg = _recipe_cfg(recipe, eight_view_dataset, tmp_path, None)
    cfg.trainer.precision = "bf16"
    cfg.trainer.limit_train_batches = 1
    run_dir = tmp_path / "run"
    train(cfg, run_dir=run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(math.isfinite(r["loss"]) and r["skipped_nonfinite"] == 0 for r in train_rows)
    assert math.isfinite([r for r in rows if r["split"] == "val"][-1]["psnr"])
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 1 and state["config"]["trainer"]["precision"] == "bf16"
