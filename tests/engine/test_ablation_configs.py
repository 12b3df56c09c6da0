"""The `ablation` config group (conf/ablation/): each option switches off exactly the milestone-1 part it
names, trains end to end through the trainer, and the study's W&B group can span several sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.engine.test_train import tiny_cfg
from tests.helpers import compose_config
from x2ct.config_files import register_resolvers
from x2ct.engine import trainer
from x2ct.engine.build import match_deep_supervision
from x2ct.engine.metrics_log import read_metrics
from x2ct.models import count_parameters

ABLATIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "ablation").glob("*.yaml"))
# what each option changes in experiment=benchmark/milestone1 (and nothing else)
CHANGES = {
    "none": {},
    "swin": {"model.swin": False},
    "cross_view": {"model.cross_view": False},
    "dense_blocks": {"model.dense_blocks": False},
    "attention_gates": {"model.attention_gates": False},
    "deep_supervision": {"loss.weights.deep_supervision": 0.0},
    "pyramid": {"model.pyramid_scales": 1},
}
# the tiny milestone-1 model of test_train.py's milestone-1 test
TINY_HYBRID = ("model.base_channels=4", "model.depth=3", "model.channel_multipliers=[1,2,4,8]", "model.num_heads=2",
               "model.transformer_levels=[1]", "model.pyramid_channels=4", "model.cross_view_grid=4",
               "model.cross_view_heads=2", "loss.weights.perceptual=0")


def flat(cfg) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value
    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return out


@pytest.fixture(scope="module")
def recipe():
    register_resolvers()
    return flat(compose_config("train", ["experiment=benchmark/milestone1"]))


def test_every_ablation_option_is_documented_here():
    assert ABLATIONS == sorted(CHANGES)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_option_changes_exactly_its_keys(recipe, name):
    ablated = flat(compose_config("train", ["experiment=benchmark/milestone1", f"ablation={name}"]))
    changed = {k: v for k, v in ablated.items() if recipe.get(k) != v}
    assert changed == CHANGES[name] and set(ablated) == set(recipe)


def test_ablating_deep_supervision_is_the_loss_sweeps_zero_weight_run():
    """scripts/benchmark_loss.sh's `loss.weights={deep_supervision:0}` and benchmark_components.sh's
    `ablation=deep_supervision` are one and the same run (the trainer switches the heads off for a zero weight)."""
    register_resolvers()
    by_weight = compose_config("train", ["experiment=benchmark/milestone1", "loss.weights={deep_supervision:0}"])
    by_ablation = compose_config("train", ["experiment=benchmark/milestone1", "ablation=deep_supervision"])
    for cfg in (by_weight, by_ablation):
        match_deep_supervision(cfg.model, float(cfg.loss.weights.deep_supervision))
    assert by_ablation.model.deep_supervision is False
    assert OmegaConf.to_container(by_weight) == OmegaConf.to_container(by_ablation)


def test_an_ablation_on_a_model_without_the_part_names_the_key():
    register_resolvers()
    cfg = compose_config("train", ["model=baseline_unet", "ablation=swin"])
    with pytest.raises(Exception, match="unexpected keyword argument 'swin'"):
        instantiate(cfg.model, num_views=2, view_size=32, volume_size=16)


# switched back on: the full design the ablated run is compared with
DESIGN = {"swin": True, "cross_view": True, "dense_blocks": True, "attention_gates": True, "deep_supervision": True,
          "pyramid_scales": 4}


@pytest.mark.parametrize("name", ["swin", "cross_view", "dense_blocks", "attention_gates", "deep_supervision",
                                  "pyramid"])
def test_each_ablation_trains_end_to_end_with_fewer_parameters_recorded(tiny_dataset, tmp_path, name):
    cfg = tiny_cfg(tiny_dataset, tmp_path, "experiment=milestone1", "trainer=debug", "logger=none", *TINY_HYBRID,
                   f"ablation={name}", "trainer.max_epochs=1")
    run_dir = tmp_path / "run"
    trainer.train(cfg, run_dir=run_dir)
    saved = OmegaConf.load(run_dir / "config_resolved.yaml")
    for key, value in CHANGES[name].items():
        assert OmegaConf.select(saved, key) == value
    recorded = json.loads((run_dir / "run_info.json").read_text())["parameters"]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert recorded == count_parameters(instantiate(saved.model)) == sum(v.numel() for k, v in state["model"].items()
                                                                         if not k.endswith("num_batches_tracked"))
    assert recorded < count_parameters(instantiate({**OmegaConf.to_container(saved.model), **DESIGN}))
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)


def test_logger_group_names_the_wandb_group_of_a_study_of_several_sweeps(tiny_dataset, tmp_path, monkeypatch):
    seen = {}

    def fake_create(*args, **kwargs):
        seen.update(kwargs)
        return trainer.NullLogger()
    monkeypatch.setattr(trainer.WandbLogger, "create", fake_create)
    trainer.train(tiny_cfg(tiny_dataset, tmp_path, "logger.group=bench_components", "trainer.max_epochs=1"),
                  run_dir=tmp_path / "run")
    assert seen["group"] == "bench_components"
