"""Typed schema of the training config: every key of conf/train.yaml's groups gets a type, so a typo or a wrong
type fails at start with the full key named. Values live in the YAML files (what every data set config shares: in
conf/train.yaml's ``data`` node, which each conf/data/ option overrides); the schema holds none.

Groups whose keys depend on the chosen class (model, optimizer, scheduler) stay open dicts with a ``_target_``;
the class itself rejects unknown arguments (and the loss rejects unknown component names). The model's lift names
are checked here already, so an old name is refused at start, naming its key and the new name.

Each switch has one key: W&B logging is ``logger.mode`` (``logger=none`` chooses ``disabled``), adversarial
training the ``adversarial`` group's choice (``none``: a null node). A config that says ``logger.enabled`` or
``adversarial.enabled`` is refused naming the switch (``check_overrides`` for the command line,
``validate_train_config`` for the composed config); a checkpoint saved with them is read through
``with_current_keys``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from x2ct.data.realism import RadiographRealism
from x2ct.models.view_blocks.lift_names import check_lift, lift_settings


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = MISSING
    # by name or index; null with num_views
    views: list[Any] | None = MISSING
    render_on_the_fly: bool = MISSING  # training views rendered from the CT per batch, not read from the data set
    angle_jitter_deg: float = MISSING  # random gantry-angle error of those renders, degrees (0: none)
    noise_photons: float | None = MISSING  # Poisson noise at this many photons per pixel (null: none)
    radiograph: str = MISSING  # log (line integrals) | intensity (transmission)
    batch_size: int = MISSING  # per rank
    num_workers: int = MISSING  # data-loader processes per rank
    prepare: list[str] | None = MISSING  # prepare.py overrides that make data.root when it is missing
    # instead of views: this many views evenly spread over 180 degrees (the data set must store them)
    num_views: int | None = MISSING
    # training only: a random subset of the views per batch, {min_views, max_views (null: all), always: [positions]}
    view_dropout: dict[str, Any] | None = MISSING
    # training only: randomised DRR -> clinical radiograph effects, {effect: {probability, ranges}} (null: off);
    # x2ct/data/realism.py checks them, the preset is conf/realism/default.yaml
    realism: dict[str, Any] | None = None


@dataclass
class LossConfig:
    weights: dict[str, float] = MISSING
    # per-component constructor settings, e.g. {perceptual: {weights: imagenet}}; checked by each component
    components: dict[str, Any] = field(default_factory=dict)
    # every component sees only the target's scanned voxels (x2ct/data/scanned.py); false: padding counts as air
    scanned_only: bool = True


@dataclass
class TrainerConfig:
    max_epochs: int = MISSING
    accelerator: str = MISSING  # auto | cuda | cpu
    precision: str = MISSING  # auto | fp32 | bf16 | fp16
    grad_clip_norm: float | None = MISSING  # global gradient norm clipped to this (null: off)
    accumulate_grad_batches: int = MISSING
    ema_decay: float | None = MISSING  # weight EMA for validation and best.pt (null: off)
    compile: bool = MISSING  # torch.compile the model
    compile_backend: str = MISSING
    # inductor's mode: null (its default) | default | max-autotune-no-cudagraphs
    compile_mode: str | None = MISSING
    # the model and the objective compiled as one (needs compile: true)
    compile_loss: bool = MISSING
    # layout of the model's 3D weights and activations: contiguous | channels_last_3d
    memory_format: str = MISSING
    deterministic: bool = MISSING
    val_every_epochs: int = MISSING
    checkpoint_every_epochs: int = MISSING
    log_every_steps: int = MISSING
    max_nonfinite_steps: int = MISSING
    limit_train_batches: int | None = MISSING
    limit_val_batches: int | None = MISSING
    # how long the other ranks wait while rank 0 prepares a missing data set (minutes)
    data_wait_timeout_min: float = MISSING


@dataclass
class LoggerConfig:
    project: str = MISSING
    entity: str | None = MISSING
    # the one switch: online | offline | disabled (logger=none)
    mode: str = MISSING
    tags: list[str] = MISSING
    image_every_epochs: int = MISSING
    group: str | None = None


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: dict[str, Any] = MISSING
    scheduler: dict[str, Any] = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # off: null (adversarial=none); on: x2ct/engine/adversarial.py's settings (adversarial=default)
    adversarial: dict[str, Any] | None = None
    seed: int = MISSING
    run_name: str = MISSING
    resume: str | None = MISSING
    test_after_training: bool = MISSING


_CHOICES = {
    "trainer.accelerator": ("auto", "cpu", "cuda"),
    "trainer.precision": ("auto", "fp32", "bf16", "fp16"),
    "trainer.memory_format": ("contiguous", "channels_last_3d"),
    # no CUDA-graph modes: the step reads the views' angles on the host (see tests/models/test_compile_ready.py)
    "trainer.compile_mode": (None, "default", "max-autotune-no-cudagraphs"),
    "logger.mode": ("online", "offline", "disabled"),
    "data.radiograph": ("log", "intensity"),
}


# keys whose switch is said elsewhere -> (which switch says it, what to set for false, what to set for true)
_SWITCHED_ELSEWHERE = {
    "logger.enabled": ("W&B logging has one switch, logger.mode (online | offline | disabled)",
                       "logger.mode=disabled (what logger=none sets)", "logger.mode=offline or logger.mode=online"),
    "adversarial.enabled": ("adversarial training is switched by the adversarial group's choice",
                            "adversarial=none", "adversarial=default"),
}


def _refuse_switch(key: str, value: Any) -> None:
    """A ValueError naming ``key`` (one of ``_SWITCHED_ELSEWHERE``) and what says the same: for a false value,
    a true one, or else (a sweep, a deletion) both."""
    why, off, on = _SWITCHED_ELSEWHERE[key]
    truth = {"false": False, "true": True}.get(str(value).strip().lower(), value)
    use = off if truth is False else on if truth is True else f"{off} to switch it off, {on} to switch it on"
    said = key if value == "" else f"{key}={str(value).lower() if isinstance(value, bool) else value}"
    raise ValueError(f"config key {said} is not a setting: {why}; use {use}")


# group options renamed because their name meant something else too: (group, former name) -> (name, why)
_RENAMED_OPTIONS = {
    ("trainer", "milestone1"): ("epochs_60", "the milestone recipes' schedule is named by its setting; milestone1 is "
                                             "the recipe experiment=milestone1"),
}


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse command-line overrides (``key=value``, ``+key=value``, ``~key``) of a key whose switch is said
    elsewhere, or that choose a group option by its former name, before Hydra composes them (Hydra alone would
    answer only that the key or option is not there)."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in _SWITCHED_ELSEWHERE:
            _refuse_switch(key, value)
        for option in value.split(","):
            if (key, option.strip()) in _RENAMED_OPTIONS:
                name, why = _RENAMED_OPTIONS[key, option.strip()]
                raise ValueError(f"{key}={option.strip()} is now {key}={name}: {why}")


def with_current_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a saved config (a checkpoint's) whose ``logger.enabled`` / ``adversarial.enabled`` are said by the
    keys that switch them: ``logger.enabled: false`` as ``logger.mode: disabled``, ``adversarial.enabled: false`` as
    ``adversarial: null``; a true one is dropped (its mode or settings say it already)."""
    current = dict(config)
    logger = current.get("logger")
    if isinstance(logger, Mapping) and "enabled" in logger:
        current["logger"] = {key: value for key, value in logger.items() if key != "enabled"}
        if not logger["enabled"]:
            current["logger"]["mode"] = "disabled"
    adversarial = current.get("adversarial")
    if isinstance(adversarial, Mapping) and "enabled" in adversarial:
        current["adversarial"] = ({key: value for key, value in adversarial.items() if key != "enabled"}
                                  if adversarial["enabled"] else None)
    return current


def validate_train_config(cfg: DictConfig) -> DictConfig:
    """Check ``cfg`` (as composed by Hydra, without the ``hydra`` node) against the schema.

    Raises an omegaconf ValidationError / ConfigKeyError naming the key for a wrong type or unknown key, and
    ValueError for an invalid choice or a key whose switch is said elsewhere (``logger.enabled``: ``logger.mode``;
    ``adversarial.enabled``: the ``adversarial`` group). Returns the merged, typed config (struct mode).
    """
    for key in _SWITCHED_ELSEWHERE:
        group, name = key.split(".")
        node = cfg.get(group)
        if isinstance(node, Mapping) and name in node:
            _refuse_switch(key, node[name])
    schema = OmegaConf.structured(TrainConfig)
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    merged = OmegaConf.merge(schema, plain)
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(merged, key)
        if value not in allowed:
            raise ValueError(f"config key {key}={value!r} is not one of {list(allowed)}")
    for key in ("trainer.max_epochs", "trainer.accumulate_grad_batches", "trainer.val_every_epochs",
                "trainer.checkpoint_every_epochs", "trainer.log_every_steps", "trainer.max_nonfinite_steps",
                "data.batch_size"):
        if OmegaConf.select(merged, key) < 1:
            raise ValueError(f"config key {key} must be >= 1, got {OmegaConf.select(merged, key)}")
    if merged.trainer.compile_loss and not merged.trainer.compile:
        raise ValueError("config key trainer.compile_loss=true compiles the objective with the model: it needs "
                         "trainer.compile=true")
    for group in ("model", "optimizer", "scheduler"):
        if "_target_" not in merged[group]:
            raise ValueError(f"config group {group} needs a _target_ (the class or function to build)")
    for key, lift in lift_settings(merged.model):
        check_lift(lift, "config", key)
    if merged.data.realism is not None:
        RadiographRealism.from_config(OmegaConf.to_container(merged.data.realism, resolve=True), key="data.realism")
    return merged
