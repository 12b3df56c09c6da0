"""Tests for x2ct/engine/config_schema.py: lift names (one set at both levels, the ``lift`` group and
``model.lift``; old names refused at start by the training entrypoint, naming the new name), radiograph realism,
and one key per switch (``logger.mode``, the ``adversarial`` group): an ``enabled`` key is refused naming the
switch, and a checkpoint saved with one loads and resumes."""

from __future__ import annotations

import copy
import re
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import compose_config
from x2ct.config_files import register_resolvers
from x2ct.engine.checkpoint import state_checksum
from x2ct.engine.config_schema import check_overrides, validate_train_config, with_current_keys
from x2ct.engine.trained_model import load_trained_model
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


def test_realism_is_off_unless_chosen_and_the_preset_validates():
    from x2ct.data.realism import EFFECT_ORDER

    register_resolvers()
    assert validate_train_config(compose_config("train", [])).data.realism is None
    assert validate_train_config(compose_config("train", ["+realism=none"])).data.realism is None
    on = validate_train_config(compose_config("train", ["experiment=benchmark/milestone1", "+realism=default"]))
    assert list(on.data.realism) == list(EFFECT_ORDER)
    assert list(on.data.realism.scatter.spr) == [0.05, 1.0]


@pytest.mark.parametrize(("overrides", "message"), [
    (["+data.realism.scater.spr=0.1"], "config key data.realism.scater: unknown effect; the effects are ['pose', "),
    (["+realism=default", "data.realism.scatter.spr=[0.6,0.1]"],
     "config key data.realism.scatter.spr must be finite with low <= high, got [0.6, 0.1]"),
    (["+realism=default", "+data.realism.blur.width=3"], "config key data.realism.blur.width: unknown setting"),
])
def test_bad_realism_settings_are_refused_at_start_naming_the_key(overrides, message, tmp_path):
    register_resolvers()
    cfg = compose_config("train", overrides)
    with pytest.raises(ValueError) as refused:
        train(cfg, run_dir=tmp_path / "run")
    assert str(refused.value).startswith(message), str(refused.value)
    assert not (tmp_path / "run").exists()


def test_realism_reaches_the_training_views_only_and_off_leaves_them_bit_identical(tiny_dataset, tmp_path):
    import torch

    from tests.engine.test_train import tiny_cfg
    from x2ct.data.dataset import PatientDRRDataset
    from x2ct.data.realism import RadiographRealism
    from x2ct.engine.data import make_loaders
    from x2ct.engine.distributed import DistInfo

    on = validate_train_config(tiny_cfg(tiny_dataset, tmp_path, "+realism=default"))
    train_set, _, _, val_loader, test_loader = make_loaders(on.data, tiny_dataset, DistInfo(), seed=1)
    assert isinstance(train_set.view_effects, RadiographRealism)
    assert val_loader.dataset.view_effects is None and test_loader.dataset.view_effects is None
    off = validate_train_config(tiny_cfg(tiny_dataset, tmp_path))
    train_set, _, _, _, _ = make_loaders(off.data, tiny_dataset, DistInfo(), seed=1)
    assert train_set.view_effects is None
    plain = PatientDRRDataset(tiny_dataset, "train")
    assert all(torch.equal(train_set[i]["views"], plain[i]["views"]) for i in range(len(plain)))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_with_realism_resumed_after_its_first_epoch_equals_the_unbroken_one(tiny_dataset, tmp_path, workers):
    """Realism draws from the data set's seeded streams (the global RNG in the main process, saved in checkpoints;
    the loader's per-epoch seed in workers), so a resumed run sees the same views and ends with the same weights."""
    import shutil

    import torch

    from tests.engine.test_train import tiny_cfg

    extra = ("+realism=default", "trainer.max_epochs=2", "trainer.checkpoint_every_epochs=1",
             "trainer.limit_train_batches=null", f"data.num_workers={workers}")
    unbroken = tmp_path / "unbroken"
    train(tiny_cfg(tiny_dataset, tmp_path, *extra), run_dir=unbroken)
    stopped = tmp_path / "stopped"
    (stopped / "checkpoints").mkdir(parents=True)
    for name in ("last.pt", "best.pt"):
        shutil.copy(unbroken / "checkpoints" / "epoch_0001.pt", stopped / "checkpoints" / name)
    train(tiny_cfg(tiny_dataset, tmp_path, *extra, "resume=auto"), run_dir=stopped)
    a = torch.load(unbroken / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


LOGGER_SWITCH = "W&B logging has one switch, logger.mode (online | offline | disabled)"
ADVERSARIAL_SWITCH = "adversarial training is switched by the adversarial group's choice"


@pytest.mark.parametrize(("overrides", "message"), [
    (["+logger.enabled=false"], f"config key logger.enabled=false is not a setting: {LOGGER_SWITCH}; use "
                                "logger.mode=disabled (what logger=none sets)"),
    (["logger=none", "+logger.enabled=true"], f"config key logger.enabled=true is not a setting: {LOGGER_SWITCH}; "
                                              "use logger.mode=offline or logger.mode=online"),
    (["+adversarial.enabled=true"], f"config key adversarial.enabled=true is not a setting: {ADVERSARIAL_SWITCH}; "
                                    "use adversarial=default"),
    (["adversarial=default", "+adversarial.enabled=false"],
     f"config key adversarial.enabled=false is not a setting: {ADVERSARIAL_SWITCH}; use adversarial=none"),
])
def test_an_enabled_key_is_refused_at_start_naming_its_switch(overrides, message, tmp_path):
    register_resolvers()
    cfg = compose_config("train", overrides)
    with pytest.raises(ValueError) as refused:
        train(cfg, run_dir=tmp_path / "run")  # refused at start: nothing is prepared or built
    assert str(refused.value) == message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "use"), [
    ("logger.enabled=false", "use logger.mode=disabled (what logger=none sets)"),
    ("++logger.enabled=True", "use logger.mode=offline or logger.mode=online"),
    ("adversarial.enabled=true,false", "use adversarial=none to switch it off, adversarial=default to switch it on"),
    ("~adversarial.enabled", "use adversarial=none to switch it off, adversarial=default to switch it on"),
])
def test_an_enabled_key_on_the_command_line_is_refused_before_hydra_composes_it(override, use):
    key = override.lstrip("+~").partition("=")[0]
    with pytest.raises(ValueError, match=rf"^config key {re.escape(key)}\b.* is not a setting: .*; {re.escape(use)}$"):
        check_overrides(["logger=none", override])
    check_overrides(["logger=none", "logger.mode=offline", "adversarial=default", "adversarial.weight=0.1"])


@pytest.mark.parametrize("override", ["trainer=milestone1", "trainer=debug,milestone1", "trainer= milestone1"])
def test_a_renamed_option_is_refused_naming_its_name(override):
    with pytest.raises(ValueError, match=r"^trainer=milestone1 is now trainer=epochs_60: .* experiment=milestone1$"):
        check_overrides(["logger=none", override])
    check_overrides(["trainer=epochs_60", "experiment=milestone1", "model=hybrid_vit"])


@pytest.mark.parametrize(("overrides", "logger_enabled"), [
    ([], True), (["logger=none"], False), (["experiment=benchmark/milestone3"], True),
    (["experiment=milestone3", "logger=none"], False), (["experiment=milestone3", "adversarial=none"], True)])
def test_a_config_saved_with_enabled_keys_reads_as_the_one_composed_with_their_switches(overrides, logger_enabled):
    """The logger and adversarial nodes as conf/logger/ and conf/adversarial/ wrote them with an ``enabled`` key
    (``adversarial=none`` as ``{enabled: false}``): read through ``with_current_keys``, the config is the one the same
    overrides compose to."""
    register_resolvers()
    composed = OmegaConf.to_container(compose_config("train", overrides), resolve=False)
    saved = copy.deepcopy(composed)
    saved["logger"] = {"enabled": logger_enabled, **saved["logger"]}
    adversarial = saved["adversarial"]
    saved["adversarial"] = {"enabled": False} if adversarial is None else {"enabled": True, **adversarial}
    assert with_current_keys(saved) == composed
    assert "enabled" in saved["logger"] and "enabled" in saved["adversarial"]  # the saved record is left as it is
    validate_train_config(OmegaConf.create(with_current_keys(saved)))


def test_a_saved_logger_enabled_false_beside_a_logging_mode_reads_as_the_disabled_mode():
    saved = {"logger": {"enabled": False, "project": "x2ct", "mode": "offline"}, "seed": 1}
    assert with_current_keys(saved) == {"logger": {"project": "x2ct", "mode": "disabled"}, "seed": 1}
    assert with_current_keys({"seed": 1}) == {"seed": 1}  # a config without those nodes is taken as it is


def test_a_run_saved_with_enabled_keys_loads_and_resumes(tiny_run, tiny_dataset, tmp_path):
    """Every checkpoint of a finished run rewritten with ``logger: {enabled: false, mode: offline}`` and
    ``adversarial: {enabled: false}`` in its config: the trained model loads with the config read through the
    switches, and the run resumes for one more epoch, saving its current config."""
    from tests.engine.test_train import tiny_cfg

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        state = torch.load(path, weights_only=True)
        state["config"]["logger"] = {"enabled": False, **state["config"]["logger"], "mode": "offline"}
        state["config"]["adversarial"] = {"enabled": False}
        torch.save(state | {"checksum": state_checksum(state)}, path)

    loaded = load_trained_model(run_dir / "checkpoints" / "last.pt")
    assert loaded.config["logger"]["mode"] == "disabled" and "enabled" not in loaded.config["logger"]
    assert loaded.config["adversarial"] is None

    train(tiny_cfg(tiny_dataset, tmp_path, "resume=auto", "trainer.max_epochs=3"), run_dir=run_dir)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["config"]["adversarial"] is None
    assert last["config"]["logger"] == {"project": "x2ct", "entity": None, "mode": "disabled", "tags": [],
                                        "group": None, "image_every_epochs": 0}
