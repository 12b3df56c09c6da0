"""train.py as users start it: under torchrun (one shared run folder), as a multirun sweep, with W&B offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.test_train import tiny_train_overrides
from x2ct.config_files import run_dir
from x2ct.engine.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[2]


def launch(args, cwd, timeout=300):
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env.pop("X2CT_RUN_STAMP", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_run_dir_follows_the_resumed_run():
    assert run_dir("out", "exp1") == str(Path("out/runs/exp1"))
    assert run_dir("out", "exp1", "auto") == str(Path("out/runs/exp1"))
    assert run_dir("out", "x", "/old/runs/exp1/checkpoints/last.pt") == "/old/runs/exp1"


@pytest.mark.slow
def test_torchrun_two_ranks_share_one_run_folder_and_agree(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO / "train.py"), *tiny_train_overrides(tiny_dataset, out, "logger=wandb")]
    result = launch(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs  # one folder, not one per rank
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").exists()
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # W&B from rank 0 only
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pt", "epoch_0001.pt", "epoch_0002.pt", "last.pt"]
    # the logged validation PSNR covers the whole val split (all-reduced over both ranks' shards):
    # re-evaluating the saved weights in one process gives the same number
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from x2ct.data.dataset import PatientDRRDataset
    from x2ct.ops.metrics import psnr

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    model = instantiate(OmegaConf.create(state["config"]["model"]))
    model.load_state_dict(state["model"])
    model.eval()
    val = PatientDRRDataset(tiny_dataset, "val")
    with torch.no_grad():
        scores = [psnr(model(val[i]["views"][None]).volume, val[i]["ct"][None]).item() for i in range(len(val))]
    logged = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "val"][-1]["psnr"]
    assert logged == pytest.approx(sum(scores) / len(scores), abs=1e-3)


@pytest.mark.slow
def test_multirun_sweep_runs_each_job_in_its_own_folder(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "train.py"), "-m", "loss.weights.l1=1.0,0.5",
            *tiny_train_overrides(tiny_dataset, out, "logger=wandb", "trainer.max_epochs=1")]
    result = launch(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweeps = list((out / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    assert "loss.weights.l1=0.5" in (jobs[1] / ".hydra" / "overrides.yaml").read_text()
    for job in jobs:
        assert (job / "checkpoints" / "last.pt").exists()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    weights = [torch.load(j / "checkpoints" / "last.pt", weights_only=True)["config"]["loss"]["weights"]["l1"]
               for j in jobs]
    assert weights == [1.0, 0.5]


@pytest.mark.slow
def test_multirun_inside_torchrun_is_refused(tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO / "train.py"), "-m", "loss.weights.l1=1.0,0.5"]
    result = launch(args, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "multirun (-m) cannot run inside torchrun" in result.stderr + result.stdout


def test_an_enabled_key_typed_for_train_py_is_refused_naming_its_switch(tmp_path):
    result = launch([sys.executable, str(REPO / "train.py"), "logger.enabled=false"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "train.py: error: " in result.stderr and "use logger.mode=disabled" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_torchrun_trains_the_milestone1_recipe_with_deep_supervision(tiny_dataset, tmp_path):
    """DDP with the hybrid CNN-ViT and all six loss terms: every parameter gets a gradient on every rank."""
    out = tmp_path / "out"
    overrides = tiny_train_overrides(
        tiny_dataset, out, "experiment=milestone1", "trainer=debug", "logger=none", "run_name=m1",
        "loss.components.perceptual.weights=random", "loss.components.perceptual.slices_per_axis=2",
        "model.base_channels=4", "model.depth=3", "model.channel_multipliers=[1,2,4,8]", "model.num_heads=2",
        "model.transformer_levels=[1]", "model.pyramid_channels=4", "model.cross_view_grid=4",
        "model.cross_view_heads=2")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO / "train.py"), *overrides]
    result = launch(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_metrics(out / "runs" / "m1" / "metrics.jsonl")
    assert [r["epoch"] for r in rows if r["split"] == "val"] == [0, 1]
    assert "loss_deep_supervision" in [r for r in rows if r["split"] == "train"][-1]


@pytest.mark.slow
def test_torchrun_trains_with_discriminators(tiny_dataset, tmp_path):
    """DDP with adversarial training: generator and discriminators each under their own DDP wrapper."""
    from tests.engine.test_adversarial import ADV

    out = tmp_path / "out"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO / "train.py"), *tiny_train_overrides(tiny_dataset, out, *ADV, "logger=none", "run_name=gan")]
    result = launch(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [r for r in read_metrics(out / "runs" / "gan" / "metrics.jsonl") if r["split"] == "train"]
    assert {"loss_adv_d_volume", "loss_adv_d_projection", "loss_adv_g_volume"} <= set(rows[-1])
    state = torch.load(out / "runs" / "gan" / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["adversarial"]["nets"])
