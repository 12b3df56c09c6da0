"""Typed schema of the training config: every key of conf/train.yaml's groups gets a type, so a typo or a wrong
type fails at start with the full key named. Values live in the YAML files; the schema holds none.

Groups whose keys depend on the chosen class (model, optimizer, scheduler) stay open dicts with a ``_target_``;
the class itself rejects unknown arguments (and the loss rejects unknown component names). The model's lift names
are checked here already, so an old name is refused at start, naming its key and the new name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from x2ct.data.realism import RadiographRealism
from x2ct.models.blocks.lift_names import check_lift, lift_settings


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = MISSING
    # by name or index; null with num_views
    views: list[Any] | None = MISSING
    render_on_the_fly: bool = MISSING
    angle_jitter_deg: float = MISSING
    noise_photons: float | None = MISSING
    radiograph: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    prepare: list[str] | None = MISSING
    # instead of views: this many views evenly spread over 180 degrees (the data set must store them)
    num_views: int | None = None
    # training only: a random subset of the views per batch, {min_views, max_views (null: all), always: [positions]}
    view_dropout: dict[str, Any] | None = None
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
    accelerator: str = MISSING
    precision: str = MISSING
    grad_clip_norm: float | None = MISSING
    accumulate_grad_batches: int = MISSING
    ema_decay: float | None = MISSING
    compile: bool = MISSING
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
    enabled: bool = MISSING
    project: str = MISSING
    entity: str | None = MISSING
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
    # off: {enabled: false}; on: x2ct/engine/adversarial.py's settings (conf/adversarial/default.yaml)
    adversarial: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
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


def validate_train_config(cfg: DictConfig) -> DictConfig:
    """Check ``cfg`` (as composed by Hydra, without the ``hydra`` node) against the schema.

    Raises an omegaconf ValidationError / ConfigKeyError naming the key for a wrong type or unknown key, and
    ValueError for an invalid choice. Returns the merged, typed config (struct mode).
    """
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
