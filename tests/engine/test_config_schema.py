"""Tests for x2ct/engine/config_schema.py's lift names: one set at both levels (the ``lift`` group and
``model.lift``), old names refused at start by the training entrypoint, naming the new name."""

from __future__ import annotations

import pytest

from tests.helpers import compose_config
from x2ct.engine.config_schema import validate_train_config
from x2ct.engine.launch import register_resolvers
from x2ct.engine.trainer import train


@pytest.mark.parametrize("model", ["hybrid_vit", "multires", "baseline_unet"])
@pytest.mark.parametrize("lift", ["geometric", "parallel", "learned"])
def test_a_lift_group_option_sets_the_model_lift_of_the_same_name(model, lift):
    register_resolvers()
    cfg = compose_config("train", [f"model={model}", f"lift={lift}"])
    assert cfg.model.lift == lift
    validate_train_config(cfg)


@pytest.mark.parametrize(("overrides", "message"), [
    # the group option chose the geometric lift: never guessed as the parallel copy its model-level twin meant
    (["lift=backproject"], "config: the lift group's option lift=backproject is an old name: use lift=geometric "
                           "(the cone-beam lift it chose; lift=parallel is the parallel copy)"),
    (["model.lift=backproject"], "config: model.lift=backproject is an old name: use model.lift=parallel "
                                 "(the lifts are geometric | parallel | learned)"),
    (["model.lift=channels_to_depth"], "config: model.lift=channels_to_depth is an old name: use "
                                       "model.lift=learned (the lifts are geometric | parallel | learned)"),
    (["model=multires", "+model.coarse_kwargs.lift=channels_to_depth"],
     "config: model.coarse_kwargs.lift=channels_to_depth is an old name: use model.coarse_kwargs.lift=learned"),
    (["model.lift=cone"], "config: model.lift='cone' is not one of geometric | parallel | learned"),
])
def test_old_lift_names_are_refused_by_the_training_entrypoint_naming_the_new_one(overrides, message, tmp_path):
    register_resolvers()
    cfg = compose_config("train", overrides)
    with pytest.raises(ValueError) as refused:
        train(cfg, run_dir=tmp_path / "run")  # refused at start: nothing is prepared or built
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()
