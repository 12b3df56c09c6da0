"""Tests for x2ct/engine/trained_model.py: a checkpoint whose config names its lift by a former name
(`channels_to_depth` for `learned`) still rebuilds and loads."""

from __future__ import annotations

import torch

from x2ct.engine.trained_model import load_trained_model
from x2ct.engine.training_state import TrainingState
from x2ct.models import HybridViT

TINY = dict(num_views=2, view_size=16, volume_size=8, base_channels=4, depth=1, channel_multipliers=[1, 2],
            transformer_levels=[], num_heads=2, pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)


def test_a_checkpoint_with_an_old_lift_name_rebuilds_its_model(tmp_path):
    torch.manual_seed(0)
    trained = HybridViT(**TINY, lift="learned")
    config = {"model": {"_target_": "x2ct.models.hybrid_vit.HybridViT", **TINY, "lift": "channels_to_depth"}}
    path = TrainingState(trained, torch.optim.SGD(trained.parameters(), lr=0.1), None, None, None).save(
        tmp_path / "best.pt", epoch=3, step=30, best_metric=20.0, config=config)
    loaded = load_trained_model(path)
    assert loaded.config["model"]["lift"] == "channels_to_depth"  # the checkpoint's own record, as written
    views = torch.rand(1, 2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.model(views).volume, trained.eval()(views).volume)
