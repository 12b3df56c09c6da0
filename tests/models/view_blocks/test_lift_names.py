"""Tests for x2ct/models/view_blocks/lift_names.py: one set of lift names, old ones refused by every model with the new
name, and a checkpoint's saved config with old names renamed so that its model rebuilds."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from x2ct.models import BaselineUNet, HybridViT
from x2ct.models.multires import MultiResCascade
from x2ct.models.view_blocks.lift import ChannelsToDepth
from x2ct.models.view_blocks.lift_names import check_lift, lift_settings, with_current_lift_names

HYBRID = dict(num_views=2, view_size=16, volume_size=8, base_channels=4, depth=1, channel_multipliers=(1, 2),
              transformer_levels=(), num_heads=2, pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)
CASCADE = dict(num_views=2, view_size=16, volume_size=16, stage_sizes=[8, 16], refiner_channels=4,
               coarse_kwargs={k: v for k, v in HYBRID.items() if k not in ("num_views", "view_size", "volume_size")})
BASELINE = dict(num_views=2, view_size=16, volume_size=8, base_channels=4, depth=2)


@pytest.mark.parametrize(("lift", "message"), [
    ("backproject", "Model: lift=backproject is an old name: use lift=parallel"),
    ("channels_to_depth", "Model: lift=channels_to_depth is an old name: use lift=learned"),
    ("lift=backproject", "Model: the lift group's option lift=backproject is an old name: use lift=geometric"),
    ("splat", "Model: lift='splat' is not one of geometric | parallel | learned"),
])
def test_check_lift_names_the_new_name(lift, message):
    with pytest.raises(ValueError, match=f"^{message}".replace("|", r"\|")):
        check_lift(lift, "Model")
    for new in ("geometric", "parallel", "learned"):
        check_lift(new, "Model")


@pytest.mark.parametrize(("build", "kwargs", "old", "new"), [
    (HybridViT, HYBRID, "channels_to_depth", "learned"), (HybridViT, HYBRID, "backproject", "parallel"),
    (BaselineUNet, BASELINE, "channels_to_depth", "learned"), (MultiResCascade, CASCADE, "backproject", "parallel"),
    (MultiResCascade, CASCADE, "lift=backproject", "geometric")])
def test_every_model_refuses_an_old_lift_name_naming_the_new_one(build, kwargs, old, new):
    with pytest.raises(ValueError, match=f"^{build.__name__}: .*old name: use lift={new}"):
        build(**kwargs, lift=old)


def test_the_settings_are_found_nested_and_a_saved_config_is_renamed_to_rebuild_its_model():
    saved = {"_target_": "x2ct.models.multires.MultiResCascade", **CASCADE, "lift": "backproject",
             "coarse_kwargs": {**CASCADE["coarse_kwargs"], "lift": "channels_to_depth"}}
    assert list(lift_settings(saved)) == [("model.coarse_kwargs.lift", "channels_to_depth"),
                                          ("model.lift", "backproject")]
    with pytest.raises(Exception, match="old name"):
        instantiate(saved)
    renamed = with_current_lift_names(saved)
    assert list(lift_settings(renamed)) == [("model.coarse_kwargs.lift", "learned"), ("model.lift", "parallel")]
    assert saved["lift"] == "backproject"  # a copy: the checkpoint's own config is left as it was
    torch.manual_seed(0)
    model = instantiate(renamed)
    assert isinstance(model.coarse.lift.to_depth, ChannelsToDepth) and model.refiners[0].lift.mode == "parallel"
    torch.manual_seed(1)
    trained = instantiate(renamed)
    model.load_state_dict(trained.state_dict())  # the same modules, so the same parameter names and shapes
