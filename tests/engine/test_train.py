"""The training entrypoint end to end on tiny configs: files, resume equality, NaN handling, config errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import TINY_OVERRIDES, assert_same_state, compose_config
from x2ct.config_files import register_resolvers
from x2ct.engine.checkpoint import CheckpointError, state_checksum
from x2ct.engine.config_schema import validate_train_config
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.trainer import NonFiniteLossError, train
from x2ct.models import Reconstruction, ReconstructionModel, count_parameters


def tiny_train_overrides(data_root, out_dir, *extra):
    return ["trainer=debug", "logger=none", f"data.root={data_root}", "data.prepare=null", "data.batch_size=2",
            "data.num_workers=0", "model.base_channels=4", "model.depth=2", "scheduler.warmup_steps=1",
            f"paths.output_dir={out_dir}", *extra]


def tiny_cfg(data_root, out_dir, *extra):
    register_resolvers()
    return compose_config("train", tiny_train_overrides(data_root, out_dir, *extra))


def run(cfg, run_dir):
    return train(cfg, run_dir=run_dir)


def test_train_end_to_end_writes_metrics_checkpoints_and_config(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    best = run(tiny_cfg(tiny_dataset, tmp_path), run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 2 and best == pytest.approx(max(r["psnr"] for r in val))
    assert [r for r in rows if r["split"] == "val_mean_volume"]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert {"loss", "loss_l1", "lr", "samples_per_s", "grad_norm"} <= set(train_rows[0])
    for name in ("last.pt", "best.pt", "epoch_0001.pt", "epoch_0002.pt"):
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["config"]["model"]["num_views"] == 2
    assert state["config"]["model"]["view_angles_deg"] == [0.0, 90.0]
    saved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert saved.model.volume_size == 24 and saved.trainer.max_epochs == 2
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["psnr"] > 0 and 0 < test["ssim"] <= 1
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "finished" and info["sessions"] == 1 and info["model"].endswith("BaselineUNet")
    assert info["parameters"] == count_parameters(instantiate(state["config"]["model"]))
    assert 0 < info["wall_time_s"] <= info["finished"] - info["started"] + 1e-6
    spec = state["extra"]["input_spec"]
    assert spec["views"] == ["pa", "lateral"] and spec["view_shape"] == [32, 32] and spec["ct_size"] == [24, 24, 24]


def test_resumed_run_matches_an_unbroken_one(tiny_dataset, tmp_path):
    extra = ("trainer.max_epochs=3", "trainer.checkpoint_every_epochs=1", "trainer.limit_train_batches=null")
    unbroken = tmp_path / "unbroken"
    run(tiny_cfg(tiny_dataset, tmp_path, *extra), unbroken)
    # the state a run stopped after its first epoch leaves behind
    stopped = tmp_path / "stopped"
    (stopped / "checkpoints").mkdir(parents=True)
    shutil.copy(unbroken / "checkpoints" / "epoch_0001.pt", stopped / "checkpoints" / "last.pt")
    best = torch.load(unbroken / "checkpoints" / "epoch_0001.pt", weights_only=True)
    torch.save(best, stopped / "checkpoints" / "best.pt")
    run(tiny_cfg(tiny_dataset, tmp_path, *extra, "resume=auto"), stopped)

    a = torch.load(unbroken / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert train_losses(unbroken, after_epoch=0) == train_losses(stopped, after_epoch=0)


def train_losses(run_dir, after_epoch):
    rows = read_metrics(run_dir / "metrics.jsonl")
    return [r["loss"] for r in rows if r["split"] == "train" and r["epoch"] > after_epoch]


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tiny_dataset, tmp_path):
    run(tiny_cfg(tiny_dataset, tmp_path, "trainer.max_epochs=1"), tmp_path / "run")
    with pytest.raises(FileExistsError, match="resume=auto"):
        run(tiny_cfg(tiny_dataset, tmp_path, "trainer.max_epochs=1"), tmp_path / "run")


class NaNFirstModel(ReconstructionModel):
    """Predicts NaN for its first ``bad_calls`` forward passes in training, then a learnable constant."""

    def __init__(self, bad_calls: int = 1, num_views: int = 2, **_: object) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(0.5))
        self.bad_calls, self.num_views, self.volume_size = bad_calls, num_views, 24
        self.calls = 0

    def forward(self, views, angles_deg=None):
        self.calls += 1
        out = self.value.expand(views.shape[0], 1, 24, 24, 24)
        return Reconstruction(out * float("nan") if self.training and self.calls <= self.bad_calls else out)


def test_a_nonfinite_step_is_skipped_and_counted(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path, "+model.bad_calls=1")
    cfg.model._target_ = f"{__name__}.NaNFirstModel"
    run(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert sum(r.get("skipped_nonfinite", 0) for r in rows) == 1
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert torch.isfinite(state["model"]["value"])


def test_nonfinite_loss_in_a_row_stops_with_a_clear_error_and_no_nan_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, tmp_path, "+model.bad_calls=1000", "trainer.max_nonfinite_steps=2")
    cfg.model._target_ = f"{__name__}.NaNFirstModel"
    with pytest.raises(NonFiniteLossError, match="2 optimizer steps in a row"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["status"] == "failed"


def test_experiments_override_top_level_keys_and_the_command_line_overrides_them():
    register_resolvers()
    assert compose_config("train", ["experiment=demo"]).run_name.startswith("demo_")
    assert compose_config("train", ["experiment=demo", "run_name=mine"]).run_name == "mine"
    assert compose_config("train", ["experiment=demo"]).trainer.max_epochs == 30
    assert compose_config("train", ["experiment=demo", "trainer.max_epochs=3"]).trainer.max_epochs == 3
    # a recipe's schedule is a trainer choice of its own, so trainer=debug replaces it whole: no recipe says a
    # trainer key itself (it would win over trainer=debug's)
    conf = Path(__file__).parents[2] / "conf" / "experiment"
    recipes = [path.relative_to(conf).with_suffix("").as_posix() for path in sorted(conf.rglob("*.yaml"))]
    recipes.remove("benchmark/common")  # the benchmark recipes' shared part, not a recipe
    debug = compose_config("train", ["trainer=debug"]).trainer
    assert len(recipes) >= 14 and (debug.max_epochs, debug.limit_train_batches) == (2, 2)
    for experiment in recipes:
        assert compose_config("train", [f"experiment={experiment}", "trainer=debug"]).trainer == debug, experiment


def test_config_typos_and_wrong_types_name_the_key(tmp_path):
    register_resolvers()
    with pytest.raises(ConfigCompositionException, match=r"trainer\.max_epoch"):
        compose_config("train", ["trainer.max_epoch=3"])
    cfg = compose_config("train", [])
    bad = OmegaConf.to_container(cfg)
    bad["trainer"]["grad_clip"] = 1.0  # a typo inside a YAML file
    with pytest.raises(Exception, match="grad_clip"):
        validate_train_config(OmegaConf.create(bad))
    bad = OmegaConf.to_container(cfg)
    bad["trainer"]["max_epochs"] = "many"
    with pytest.raises(Exception, match="max_epochs"):
        validate_train_config(OmegaConf.create(bad))
    bad = OmegaConf.to_container(cfg)
    bad["trainer"]["precision"] = "fp8"
    with pytest.raises(ValueError, match=r"trainer\.precision"):
        validate_train_config(OmegaConf.create(bad))


@pytest.mark.parametrize("experiment", ["demo", "baseline"])
def test_every_experiment_composes_and_trains_on_tiny_settings(experiment, tiny_dataset, tmp_path):
    register_resolvers()
    cfg = compose_config("train", [f"experiment={experiment}",
                                   *tiny_train_overrides(tiny_dataset, tmp_path, "trainer.max_epochs=1")])
    validate_train_config(cfg)
    assert run(cfg, tmp_path / "run") > 0


def test_a_run_resumed_with_ema_switched_on_scores_an_earlier_best_without_one(tiny_run, tiny_dataset, tmp_path):
    """The resumed epochs do not beat the best score (set out of reach here), so best.pt stays the one saved
    without an EMA: the test split scores its model weights."""
    from x2ct.engine.checkpoint import load_checkpoint, state_checksum

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    for path in (run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        state["best_metric"] = 1.0e9
        torch.save(state | {"checksum": state_checksum(state)}, path)
    with pytest.warns(UserWarning, match="no EMA state"):
        run(tiny_cfg(tiny_dataset, tmp_path, "trainer.max_epochs=3", "trainer.ema_decay=0.5", "resume=auto"), run_dir)
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["ema"] is None  # the earlier best, kept
    scored = json.loads((run_dir / "test_metrics.json").read_text())
    assert scored["checkpoint"].endswith("best.pt") and math.isfinite(scored["psnr"])


def test_accumulation_and_ema_change_what_a_step_is_and_what_is_saved(tiny_dataset, tmp_path):
    # 3 train patients, batch 1, 2 epochs: 6 batches; accumulating 2 gives 2 optimizer steps per epoch
    cfg = tiny_cfg(tiny_dataset, tmp_path, "data.batch_size=1", "trainer.limit_train_batches=null",
                   "trainer.accumulate_grad_batches=2", "trainer.ema_decay=0.5")
    run(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4
    assert state["ema"] is not None and state["ema"]["updates"] == 4
    ema_weights = state["ema"]["module"]
    assert any(not torch.equal(ema_weights[k], state["model"][k]) for k in state["model"])


def test_milestone1_recipe_trains_at_tiny_size_and_logs_each_loss_component(tiny_dataset, tmp_path):
    """experiment=milestone1 with the debug trainer: the hybrid CNN-ViT and all six loss terms, end to end."""
    cfg = tiny_cfg(tiny_dataset, tmp_path, "experiment=milestone1", "trainer=debug", "logger=none",
                   "loss.components.perceptual.weights=random", "loss.components.perceptual.slices_per_axis=2",
                   "model.base_channels=4", "model.depth=3", "model.channel_multipliers=[1,2,4,8]",
                   "model.num_heads=2", "model.transformer_levels=[1]", "model.pyramid_channels=4",
                   "model.cross_view_grid=4", "model.cross_view_heads=2")
    assert cfg.trainer.max_epochs == 2  # trainer=debug wins over the recipe's 60 epochs
    run_dir = tmp_path / "run"
    best = run(cfg, run_dir)
    train_rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
    parts = {f"loss_{name}" for name in ("l1", "ssim", "perceptual", "edge", "deep_supervision", "frequency")}
    assert parts <= set(train_rows[-1]) and all(math.isfinite(train_rows[-1][p]) for p in parts)
    weights = {"l1": 1.0, "ssim": 0.3, "perceptual": 0.2, "edge": 0.2, "deep_supervision": 0.2, "frequency": 0.3}
    assert train_rows[-1]["loss"] == pytest.approx(sum(w * train_rows[-1][f"loss_{k}"] for k, w in weights.items()),
                                                   rel=1e-5)
    val = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "val"]
    assert best == pytest.approx(max(r["psnr"] for r in val)) and all(math.isfinite(r["loss"]) for r in val)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["model"]["_target_"] == "x2ct.models.hybrid_vit.HybridViT"


def test_milestone2_cascade_trains_on_patches_at_tiny_size(tiny_dataset, tmp_path):
    """experiment=milestone2 with the debug trainer: a hybrid coarse stage at 12^3, a refiner at 24^3 trained on
    12^3 patches (the loss crops the target), whole-volume validation."""
    register_resolvers()
    base = [o for o in tiny_train_overrides(tiny_dataset, tmp_path) if not o.startswith("model.")]  # baseline keys
    cfg = compose_config("train", [
        *base, "experiment=milestone2", "trainer=debug", "logger=none",
        "loss.components.perceptual.weights=random", "loss.components.perceptual.slices_per_axis=2",
        "model.stage_sizes=[12,24]", "model.train_patch_size=12", "model.refiner_channels=4",
        "model.coarse_kwargs.base_channels=4", "model.coarse_kwargs.depth=2",
        "model.coarse_kwargs.channel_multipliers=[1,2,4]", "model.coarse_kwargs.num_heads=2",
        "model.coarse_kwargs.transformer_levels=[1]", "+model.coarse_kwargs.pyramid_channels=4",
        "+model.coarse_kwargs.cross_view_grid=4", "+model.coarse_kwargs.cross_view_heads=2"])
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert {"loss_l1", "loss_deep_supervision", "loss_perceptual"} <= set(train_rows[-1])
    val = [r for r in rows if r["split"] == "val"]
    assert all(math.isfinite(r["psnr"]) and math.isfinite(r["psnr_stage1"]) and "ssim_stage1" in r for r in val)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["model"]["_target_"] == "x2ct.models.multires.MultiResCascade"


SGD = ("optimizer._target_=torch.optim.SGD", "~optimizer.betas", "optimizer.weight_decay=0", "optimizer.lr=0.1",
       "trainer.grad_clip_norm=null", "trainer.max_epochs=1", "trainer.limit_train_batches=1")


def test_a_short_last_accumulation_group_is_divided_by_its_own_length(tiny_dataset, tmp_path):
    """accumulate_grad_batches=2 over one micro-batch makes the same step as no accumulation over it (SGD, whose
    step is proportional to the gradient: dividing by 2 would halve it)."""
    run(tiny_cfg(tiny_dataset, tmp_path, *SGD, "trainer.accumulate_grad_batches=2"), tmp_path / "accumulated")
    run(tiny_cfg(tiny_dataset, tmp_path, *SGD, "trainer.accumulate_grad_batches=1"), tmp_path / "plain")
    a = torch.load(tmp_path / "accumulated" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 1
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-6, atol=1e-7, msg=key)


def test_fp16_scaler_overflows_are_not_counted_as_nonfinite_steps(tiny_dataset, tmp_path, monkeypatch):
    """While GradScaler settles its scale, overflowing gradients are normal: the scaler skips those steps and halves
    the scale. They must not add up to max_nonfinite_steps (here every step overflows at the huge start scale)."""
    import x2ct.engine.trainer as trainer

    monkeypatch.setattr(trainer, "make_scaler",
                        lambda precision, device: torch.amp.GradScaler("cpu", init_scale=2.0**60))
    run_dir = tmp_path / "run"
    run(tiny_cfg(tiny_dataset, tmp_path, "trainer.precision=fp16", "trainer.max_nonfinite_steps=2"), run_dir)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert len(rows) == 4 and sum(r["skipped_nonfinite"] for r in rows) == 0
    assert [r["grad_scale"] for r in rows] == [2.0**59, 2.0**58, 2.0**57, 2.0**56]  # each overflow halves it
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0**56


def test_fp16_trains_on_the_cpu_with_the_scaler(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    run(tiny_cfg(tiny_dataset, tmp_path, "trainer.precision=fp16"), run_dir)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) and r["grad_scale"] > 0 for r in rows)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"] is not None


def resume_copy(tiny_run, tiny_dataset, tmp_path, *extra):
    """Resume a copy of the session's tiny run (2 epochs, finished) with ``resume=auto``; returns its folder."""
    run_dir = tmp_path / "copy"
    if not run_dir.exists():
        shutil.copytree(tiny_run, run_dir)
    run(tiny_cfg(tiny_dataset, tmp_path, "resume=auto", *extra), run_dir)
    return run_dir


def test_copies_lost_between_checkpoint_writes_are_restored_on_resume(tiny_run, tiny_dataset, tmp_path, capsys):
    """A kill after last.pt but before its copies: resuming restores them from last.pt, and the test scores best.pt
    again without a second val_mean_volume or test record."""
    checkpoints = tmp_path / "copy" / "checkpoints"
    shutil.copytree(tiny_run, tmp_path / "copy")
    last = torch.load(checkpoints / "last.pt", weights_only=True)
    assert "epoch_0002.pt" in last["copies"]
    (checkpoints / "epoch_0002.pt").unlink()
    if "best.pt" in last["copies"]:  # best.pt as the kill leaves it: still epoch 1's
        shutil.copy(checkpoints / "epoch_0001.pt", checkpoints / "best.pt")
    resume_copy(tiny_run, tiny_dataset, tmp_path)
    out = capsys.readouterr().out
    assert f"restored {checkpoints / 'epoch_0002.pt'} as a copy of last.pt (epoch 2, step 4): it was missing" in out
    for name in last["copies"]:
        assert (checkpoints / name).read_bytes() == (checkpoints / "last.pt").read_bytes(), name
    rows = read_metrics(tmp_path / "copy" / "metrics.jsonl")
    assert [r["split"] for r in rows].count("val_mean_volume") == 1 and [r["split"] for r in rows].count("test") == 1
    assert rows == read_metrics(tiny_run / "metrics.jsonl")[:-1] + rows[-1:]  # only the test record is new


def test_a_fresh_start_empties_what_a_run_killed_before_its_first_checkpoint_left(tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "epoch": 0, "split": "val_mean_volume", "psnr": 1.0}\n'
                                           '{"step": 1, "epoch": 0, "split": "train", "loss": 1.0}\n')
    (run_dir / "checkpoints" / ".last.pt.abcd1234.tmp.pt").write_bytes(b"half a checkpoint")
    run(tiny_cfg(tiny_dataset, tmp_path, "trainer.max_epochs=1", "resume=auto"), run_dir)
    assert "removed 1 temporary file(s) left by an interrupted checkpoint write: .last.pt.abcd1234.tmp.pt" in (
        capsys.readouterr().out)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["split"] for r in rows].count("val_mean_volume") == 1 and rows[0]["psnr"] != 1.0
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "epoch_0001.pt", "last.pt"]


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_intact_one(tiny_run, tiny_dataset, tmp_path, capsys):
    checkpoints = tmp_path / "copy" / "checkpoints"
    shutil.copytree(tiny_run, tmp_path / "copy")
    (checkpoints / "last.pt").write_bytes((checkpoints / "last.pt").read_bytes()[:5000])
    (checkpoints / "epoch_0002.pt").unlink()
    resume_copy(tiny_run, tiny_dataset, tmp_path)
    out = capsys.readouterr().out
    assert f"cannot read checkpoint {checkpoints / 'last.pt'} (5000 bytes): it is truncated" in out
    resumed_from = "best.pt" if torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)["epoch"] else (
        "epoch_0001.pt")  # best.pt when epoch 2 improved: it is later
    assert f"resuming from {resumed_from} instead" in out
    assert f"restored {checkpoints / 'last.pt'} as a copy of {resumed_from}" in out
    # epoch 2 trained again from there (deterministic): the same weights as the unbroken run's
    a = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(checkpoints / "last.pt", weights_only=True)
    assert a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (checkpoints / "epoch_0002.pt").read_bytes() == (checkpoints / "last.pt").read_bytes()


def test_a_damaged_checkpoint_named_by_resume_is_refused_naming_an_intact_one(tiny_run, tiny_dataset, tmp_path):
    checkpoints = tmp_path / "copy" / "checkpoints"
    shutil.copytree(tiny_run, tmp_path / "copy")
    (checkpoints / "epoch_0002.pt").write_bytes((checkpoints / "epoch_0002.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"epoch_0002\.pt .*truncated.*The newest intact checkpoint beside "
                                              r"it is .*last\.pt \(epoch 2, step 4\): pass resume="):
        run(tiny_cfg(tiny_dataset, tmp_path, f"resume={checkpoints / 'epoch_0002.pt'}"), tmp_path / "other")
    for name in ("last.pt", "best.pt", "epoch_0001.pt"):
        (checkpoints / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"has no intact checkpoint to resume from: .*last\.pt.*; "
                                              r".*epoch_0002\.pt.*; .*epoch_0001\.pt.*; .*best\.pt"):
        run(tiny_cfg(tiny_dataset, tmp_path, "resume=auto"), tmp_path / "copy")


def test_resuming_an_older_checkpoint_of_the_folder_keeps_later_files_and_the_best_score(
        tiny_run, tiny_dataset, tmp_path, capsys):
    """resume=<epoch_0001.pt of this folder>: last.pt and a best.pt from later epochs are kept, and the best score
    to beat is best.pt's (here made 99 dB: nothing beats it, so best.pt is never replaced)."""
    checkpoints = tmp_path / "copy" / "checkpoints"
    shutil.copytree(tiny_run, tmp_path / "copy")
    best = torch.load(checkpoints / "last.pt", weights_only=True) | {"best_metric": 99.0, "copies": []}
    torch.save(best | {"checksum": state_checksum(best)}, checkpoints / "best.pt")
    kept = (checkpoints / "best.pt").read_bytes()
    assert resume_copy(tiny_run, tiny_dataset, tmp_path, f"resume={checkpoints / 'epoch_0001.pt'}")
    out = capsys.readouterr().out
    assert f"kept {checkpoints / 'last.pt'} (epoch 2, step 4): it is later than epoch_0001.pt" in out
    assert f"keeping {checkpoints / 'best.pt'} (val PSNR 99.00 dB" in out
    assert (checkpoints / "best.pt").read_bytes() == kept
    assert torch.load(checkpoints / "last.pt", weights_only=True)["best_metric"] == 99.0


def test_resuming_with_another_model_width_names_checkpoint_parameter_and_config(tiny_run, tiny_dataset, tmp_path):
    with pytest.raises(CheckpointError, match=r"last\.pt does not fit this run's model: '.*' is \(4, .*\) in the "
                                              r"checkpoint but \(8, .*\) in this run's model.*model\.base_channels: "
                                              r"4 \(checkpoint\) vs 8 \(this run\)"):
        resume_copy(tiny_run, tiny_dataset, tmp_path, "model.base_channels=8")


ADVERSARIAL_TINY = ("adversarial=default", "adversarial.start_epoch=0", "adversarial.ramp_epochs=0",
                    *(f"adversarial.discriminators.{d}.{k}={v}" for d in ("volume", "projection")
                      for k, v in (("base_channels", 4), ("num_layers", 2), ("receptive_field", "null"))))


@pytest.mark.parametrize("adversarial", [False, True], ids=["supervised", "adversarial"])
def test_training_never_sees_what_lies_beyond_the_scan(tmp_path, adversarial):
    """Truncated v2 phantoms (every scan shorter than the grid): whatever the stored CT holds in its unscanned
    voxels, the trained weights are the same with loss.scanned_only (the default), and differ without it; with
    adversarial training the discriminators' weights too (volume and projection discriminators)."""
    from x2ct.data.layout import DatasetLayout
    from x2ct.data.prepare import load_prepare_config, prepare_dataset
    from x2ct.data.readers import read_nifti
    from x2ct.data.scanned import load_scanned

    air = tmp_path / "air"
    prepare_dataset(load_prepare_config(compose_config("prepare", [
        *TINY_OVERRIDES, "source.generator=v2", "+source.phantom.truncation_probability=1.0",
        "+source.phantom.scan_margin_above_apex_mm=[0.0,0.0]", "+source.phantom.scan_margin_below_recess_mm=[0.0,0.0]",
        f"output_dir={air}"])), progress=False)
    painted = tmp_path / "painted"
    shutil.copytree(air, painted)
    layout = DatasetLayout(painted)
    for pid in json.loads(layout.manifest.read_text())["patients"]:
        ct, scanned = read_nifti(layout.ct(pid)), load_scanned(layout.scanned(pid))
        assert not scanned.all()
        ct.hu[~scanned] = 400.0  # a body where nobody scanned; the views are unchanged
        ct.save_nifti(layout.ct(pid))

    def weights(root, name, *extra):
        run(tiny_cfg(root, tmp_path / name, "trainer.max_epochs=1", "test_after_training=false",
                     *(ADVERSARIAL_TINY if adversarial else ()), *extra), tmp_path / name / "run")
        state = torch.load(tmp_path / name / "run" / "checkpoints" / "last.pt", weights_only=True)
        nets = state["adversarial"]["nets"] if adversarial else {}
        assert bool(nets) == adversarial
        return state["model"] | {f"discriminator.{k}": v for k, v in nets.items()}

    reference = weights(air, "a")
    assert_same_state(reference, weights(painted, "b"), "model trained on the painted CTs")
    everywhere = weights(painted, "c", "loss.scanned_only=false")
    assert any(not torch.equal(reference[k], everywhere[k]) for k in reference)
    if adversarial:  # the discriminators, too, learn from what lies beyond the scan without the mask
        assert any(not torch.equal(reference[k], everywhere[k]) for k in reference if k.startswith("discriminator."))
