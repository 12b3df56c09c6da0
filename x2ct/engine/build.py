"""Building a training run from its config: the model as the data set decides it, the optimiser and schedule, and
the model as it is trained (DDP first, then ``torch.compile``), with its EMA copy taken after DDP's broadcast.

The order matters under DDP and is kept here in one place:
1. the model is built on every rank from the same seed (the trainer seeds per rank only afterwards) and, on
   resume, loaded from the checkpoint;
2. ``DistributedDataParallel`` broadcasts rank 0's weights to every rank (so they agree whatever the seeding);
3. only then is the EMA copy taken, so every rank averages the same weights;
4. ``torch.compile`` wraps the DDP module (DDP's optimizer then splits the graph at its buckets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.input_spec import InputSpec
from x2ct.engine.distributed import DistInfo
from x2ct.engine.ema import ModelEMA
from x2ct.engine.precision import Precision, autocast, make_scaler
from x2ct.engine.step import ForwardAndLoss
from x2ct.losses import ReconstructionLoss
from x2ct.models import ReconstructionModel, check_model
from x2ct.physics.geometry import ProjectionGeometry


def fill_model_config(cfg: DictConfig, train_set: PatientDRRDataset, input_spec: InputSpec) -> None:
    """Record in ``cfg.model`` what the data set decides (views, sizes, angles, geometry), so the saved config
    rebuilds the same model; and build deep-supervision heads only when the loss uses them."""
    sample = train_set[0]
    with open_dict(cfg):
        cfg.model.num_views = len(train_set.view_indices)
        cfg.model.view_size = int(sample["views"].shape[-1])
        cfg.model.volume_size = int(sample["ct"].shape[-1])
        cfg.model.view_angles_deg = [float(train_set.geometry.angles_deg[i]) for i in train_set.view_indices]
        fill_geometry(cfg.model, input_spec.geometry, input_spec.ct_fov_mm)
        match_deep_supervision(cfg.model, float(cfg.loss.weights.get("deep_supervision", 0.0)))


def fill_geometry(model_cfg: DictConfig, geometry: ProjectionGeometry, ct_fov_mm: Sequence[float]) -> None:
    """Give a model config that asks for them (keys ``geometry`` / ``volume_fov_mm``, null in its YAML) the data set's
    imaging geometry and the volume's extent: the geometric lift projects voxels with the geometry that rendered
    the views. A cascade passes them on to its coarse model."""
    if "geometry" in model_cfg:
        model_cfg.geometry = geometry.to_dict()
    if "volume_fov_mm" in model_cfg:
        model_cfg.volume_fov_mm = [float(v) for v in ct_fov_mm]


def match_deep_supervision(model_cfg: DictConfig, loss_weight: float) -> None:
    """Build the model's deep-supervision heads (``model.deep_supervision``, a cascade's
    ``model.coarse_kwargs.deep_supervision``) exactly when ``loss.weights.deep_supervision`` is positive: the loss
    weight is the one switch, and the model keys (null in conf/model) are filled in from it.

    Heads that no loss term reads get no gradient, and DDP stops on the second step ("Expected to have finished
    reduction in the prior iteration"); ``find_unused_parameters`` would hide that at the cost of a graph walk per
    step. A model key set by hand is refused here, at start, naming the loss weight that says it.
    """
    for name, holder in (("model", model_cfg), ("model.coarse_kwargs", model_cfg.get("coarse_kwargs"))):
        if holder is None or "deep_supervision" not in holder:
            continue
        if holder.deep_supervision is not None:
            raise ValueError(f"{name}.deep_supervision={holder.deep_supervision} is not a setting: the heads are "
                             f"built when loss.weights.deep_supervision > 0 (now {loss_weight}); set "
                             "loss.weights.deep_supervision=0 to leave them out")
        holder.deep_supervision = loss_weight > 0


# trainer.memory_format -> the layout of the model's 3D convolution weights (and so of its 3D activations)
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def build_model(cfg: DictConfig, device: torch.device, reference_volume: torch.Tensor) -> ReconstructionModel:
    """The model of ``cfg.model`` on ``device``, starting from the mean training CT where it has a template, its
    weights laid out in ``cfg.trainer.memory_format``. A setting the model refuses (its constructor's
    ``ValueError``, which names the keys) is raised as that ``ValueError``, not inside Hydra's wrapper."""
    try:
        model = instantiate(cfg.model).to(device)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError):
            raise ValueError(f"model={cfg.model._target_}: {err.__cause__}") from err
        raise
    check_model(model, f"model._target_={cfg.model._target_}")
    if cfg.data.get("view_dropout") and not model.any_view_count:
        raise ValueError(f"data.view_dropout draws a different number of views per batch, but {cfg.model._target_} "
                         "is built for exactly data's views (hybrid_vit and multires take any number with "
                         "model.fusion=mean|max|attention; the baseline's per-view FiLM does not)")
    model.initialise_prior(reference_volume.to(device))  # a template volume starts at the average patient
    return to_memory_format(model, cfg.trainer.memory_format)


def to_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """``model`` with its 5D parameters and buffers (3D convolution weights) laid out as ``memory_format``, in place.

    ``"channels_last_3d"``: a 3D convolution with channels-last weights returns channels-last activations, so the
    layout spreads from the first 3D convolution on without converting inputs (the views ``(B, V, 1, h, w)`` are
    no channel-first volumes, and a one-channel volume ``(B, 1, D, H, W)`` has the same strides in both layouts).
    ``InstanceNorm3d`` would return contiguous (``norm: instance_group`` computes the same and keeps it, see
    ``x2ct.models.blocks.norm``); where a contiguous tensor meets channels-last ones (the lifted view features, a
    1x1x1 convolution's output on the CPU's single-thread path), the blocks put it back in their convolutions'
    layout (``x2ct.models.blocks.layout``), so every 3x3x3 convolution sees channels-last input (tested). The
    values and the state dict do not change, so checkpoints load either way. ``"contiguous"`` leaves the model as
    it is.
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"trainer.memory_format={memory_format!r}; expected one of {list(MEMORY_FORMATS)}")
    if memory_format == "contiguous":
        return model
    layout = MEMORY_FORMATS[memory_format]
    return model._apply(lambda t: t.contiguous(memory_format=layout) if t.ndim == 5 else t)


def check_view_dropout_minimum(data_cfg: DictConfig, model: ReconstructionModel) -> None:
    """Refuse ``data.view_dropout.min_views`` below the fewest views ``model`` (unwrapped) takes, at start: else the
    run stops at the first batch that draws that few views (cross-view attention needs 2)."""
    dropout = data_cfg.get("view_dropout")
    needed = model.min_views
    if dropout and int(dropout.min_views) < needed:
        raise ValueError(f"data.view_dropout.min_views={dropout.min_views} but {type(model).__name__} needs at least "
                         f"{needed} views per batch; set data.view_dropout.min_views={needed} or more")


def build_criterion(loss_cfg: DictConfig, input_spec: InputSpec | None, device: torch.device) -> ReconstructionLoss:
    """The objective of ``cfg.loss`` on ``device``: its weights, each component's settings, and the data set's input
    spec for the components that compare with the views (None where no such component is weighted)."""
    components = loss_cfg.get("components")
    return ReconstructionLoss(dict(loss_cfg.weights),
                              OmegaConf.to_container(components, resolve=True) if components else None,
                              input_spec=input_spec, scanned_only=loss_cfg.scanned_only).to(device)


def build_optimizer(optimizer_cfg: DictConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """``optimizer_cfg`` (a partial) over the model's parameters; ``fused: null`` picks the fused kernel where the
    device has one (it also skips a non-finite step on the device, see ``x2ct.engine.step``)."""
    kwargs: dict[str, Any] = {}
    if "fused" in optimizer_cfg and optimizer_cfg.fused is None:
        kwargs["fused"] = device.type in ("cuda", "cpu")
    factory = instantiate(optimizer_cfg)
    try:
        return factory(params=model.parameters(), **kwargs)
    except RuntimeError as err:  # an older torch without the fused kernel on this device
        if not kwargs.get("fused"):
            raise
        print(f"optimizer: no fused kernel here ({err}); using the default implementation", flush=True)
        return factory(params=model.parameters(), fused=False)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int, dist: DistInfo):
    """The learning-rate schedule over ``total_steps`` optimizer steps (warm-up capped at the run's length)."""
    schedule_args = {"optimizer": optimizer, "total_steps": total_steps}
    if cfg.scheduler.get("warmup_steps", 0) > total_steps:  # short (debug) runs: warm up over the whole run
        schedule_args["warmup_steps"] = total_steps
        if dist.is_main:
            print(f"scheduler.warmup_steps={cfg.scheduler.warmup_steps} exceeds this run's {total_steps} optimizer "
                  f"steps: warming up over all {total_steps}", flush=True)
    return instantiate(cfg.scheduler)(**schedule_args)


def wrap_for_training(model: nn.Module, dist: DistInfo, device: torch.device, compile_model: bool,
                      compile_backend: str = "inductor", compile_mode: str | None = None) -> nn.Module:
    """The module the training step calls: DDP first (it broadcasts rank 0's weights), then ``torch.compile``
    (``compile_mode``: inductor's mode, None its default).

    Compiling first and wrapping the compiled module in DDP hides the model behind two wrappers in the wrong order
    (DDP cannot split the graph at its buckets, and code that unwraps must know both orders).
    """
    wrapped = model
    if dist.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_model:
        wrapped = torch.compile(wrapped, backend=compile_backend, mode=compile_mode)
    return wrapped


def compile_forward_and_loss(train_model: nn.Module, criterion: nn.Module, device: torch.device,
                             precision: Precision, compile_backend: str = "inductor",
                             compile_mode: str | None = None) -> nn.Module:
    """The model's forward and the objective compiled together (``trainer.compile_loss``): one ``ForwardAndLoss``
    for ``TrainStep(forward_and_loss=...)``, so the loss's elementwise work fuses with the model's last layers and
    one backward graph covers both. ``train_model`` is the model as ``wrap_for_training`` returns it with
    ``compile_model=False`` (DDP or bare); under DDP the model's own graph is split at DDP's buckets as usual."""
    return torch.compile(ForwardAndLoss(train_model, criterion, device, precision), backend=compile_backend,
                         mode=compile_mode)


def build_ema(model: nn.Module, decay: float | None) -> ModelEMA | None:
    """The EMA copy, taken after ``wrap_for_training`` (so every rank copies rank 0's broadcast weights)."""
    return ModelEMA(model, decay) if decay else None


def build_adversarial(cfg: DictConfig, input_spec: InputSpec, device: torch.device, precision: Precision,
                      dist: DistInfo, total_steps: int):
    """The adversarial extension when ``cfg.adversarial`` holds settings (``adversarial=default``), None when it is
    null (``adversarial=none``: the plain supervised step); rank 0 prints each discriminator's layers, receptive
    field and logit grid for this data."""
    adv_cfg = cfg.get("adversarial")
    if adv_cfg is None:
        return None
    patch = cfg.model.get("train_patch_size")
    if patch is not None and any(p is not None for p in (patch if OmegaConf.is_list(patch) else [patch])):
        # the discriminators judge whole volumes and their projections; a patch has neither
        raise ValueError(f"adversarial training judges whole volumes, but model.train_patch_size={patch} trains the "
                         "cascade's fine stage on patches: set model.train_patch_size=null or adversarial=none")
    from x2ct.engine.adversarial import AdversarialTraining

    adversarial = AdversarialTraining(OmegaConf.to_container(adv_cfg, resolve=True), input_spec, device,
                                      lambda: autocast(device, precision), make_scaler(precision, device),
                                      dist.world_size, total_steps)
    if dist.is_main:  # how local the discriminators' judgement is, e.g. "volume discriminator: 1 layer, ..."
        print("\n".join(adversarial.summary()), flush=True)
    return adversarial


def steps_per_epoch(loader_batches: int, limit: int | None, accumulate: int) -> tuple[int, int]:
    """(micro-batches per epoch, optimizer steps per epoch): the last accumulation group may be short."""
    batches = loader_batches if limit is None else min(loader_batches, limit)
    return batches, math.ceil(batches / accumulate)
