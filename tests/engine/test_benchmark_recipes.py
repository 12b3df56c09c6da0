"""The phantom benchmark's recipes (experiments/benchmark/) all measure on the one benchmark data set with the same
schedule and optimiser, so their numbers compare; each differs from the others only in what it is about."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import compose_config
from x2ct.config_files import register_resolvers

RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "experiments" / "benchmark").glob("*.yaml")
                 if p.stem != "common")


@pytest.fixture(scope="module")
def configs():
    register_resolvers()
    return {name: compose_config("train", [f"experiment=benchmark/{name}"]) for name in RECIPES}


def test_every_recipe_uses_the_benchmark_data_schedule_and_optimiser(configs):
    assert {"baseline", "milestone1", "milestone2", "milestone3", "milestone3_volume_only",
            "milestone4"} <= set(configs)
    for name, cfg in configs.items():
        assert cfg.data.name == "benchmark" and cfg.data.root.endswith("phantom_benchmark"), name
        assert cfg.trainer.max_epochs == 10 and cfg.optimizer.lr == 1e-3 and cfg.scheduler.warmup_steps == 30, name
        assert cfg.data.batch_size == 4 and "benchmark" in cfg.logger.tags, name
    benchmark = configs["baseline"].data
    assert "source.seed=2026" in benchmark.prepare and "split.seed=2026" in benchmark.prepare
    assert benchmark.views == ["pa", "lateral"]


def test_recipes_differ_in_what_they_are_about(configs):
    assert configs["milestone1"].model._target_.endswith("HybridViT")
    assert configs["milestone2"].model._target_.endswith("MultiResCascade")
    assert configs["milestone1"].loss.weights.perceptual == 0.0  # offline: no ImageNet VGG16 download
    m3, m3v = configs["milestone3"], configs["milestone3_volume_only"]
    assert m3.adversarial is not None and m3.adversarial.discriminators.projection is not None
    assert configs["milestone1"].adversarial is None
    assert m3v.adversarial.discriminators.projection is None and m3v.adversarial.discriminators.volume is not None
    assert m3.model == configs["milestone1"].model  # milestone 3 = milestone 1 + discriminators
    m4 = configs["milestone4"]
    assert m4.model.lift == "geometric" and m4.data.views is None and m4.data.num_views == 2
    assert m4.loss.weights.projection == 0.1
