"""The training loop: one function, readable in one sitting, that runs as a single process or as one DDP rank.

``train(cfg)`` builds data, model, loss, optimiser and schedule from the config, resumes if asked, and loops:
forward under autocast, backward (``no_sync`` on all micro-batches but the last of an accumulation), clip,
step, EMA; validation (PSNR and 3D SSIM, all-reduced so every rank agrees); checkpoints (``last`` every epoch,
``best`` by validation PSNR, periodic); logs to ``metrics.jsonl`` and W&B from rank 0 only.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from x2ct.atomic_io import write_json_atomic, write_text_atomic
from x2ct.data.collate import collate_samples
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.view_selection import ViewSubsetCollate
from x2ct.engine import checkpoint as ckpt
from x2ct.engine.config_schema import validate_train_config
from x2ct.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    unwrap_model,
)
from x2ct.engine.ema import ModelEMA
from x2ct.engine.metrics_log import MetricsLog
from x2ct.engine.run_info import RunInfo
from x2ct.engine.seeding import gather_rng_states, seed_everything, set_deterministic
from x2ct.engine.wandb_logger import NullLogger, WandbLogger
from x2ct.evaluation.metrics import psnr, ssim3d
from x2ct.losses import ReconstructionLoss
from x2ct.losses.reconstruction import split_outputs
from x2ct.models import count_parameters
from x2ct.models.inputs import forward_views
from x2ct.progress import Progress

MIN_SSIM_SIZE = 11  # the 3D SSIM window (sigma 1.5) needs this many voxels per axis


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


@dataclass
class Precision:
    """How forward passes run: autocast dtype (None = full precision) and whether fp16 needs a GradScaler."""

    name: str
    autocast_dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        return self.autocast_dtype == torch.float16


def resolve_device(accelerator: str, dist: DistInfo) -> torch.device:
    if accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.accelerator=cuda but CUDA is not available; use trainer.accelerator=cpu")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """auto: bf16 autocast on CUDA, fp32 on CPU (CPU autocast supports bf16 only, and fp16 needs CUDA)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("trainer.precision=fp16 needs CUDA; on CPU use bf16 or fp32")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Precision(precision, dtype)


class ShardSampler(Sampler[int]):
    """Every rank takes indices ``rank, rank + world, ...``: no padding, so metrics count each sample once."""

    def __init__(self, length: int, dist: DistInfo) -> None:
        self.indices = list(range(dist.rank, length, dist.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ------------------------------------------------------------------------------------------------------- data


def ensure_dataset(data_cfg: DictConfig, dist: DistInfo) -> Path:
    """The data set folder; rank 0 builds it with prepare.py's pipeline when missing and ``data.prepare`` is set."""
    root = Path(data_cfg.root)
    if not (root / "dataset.json").exists():
        if data_cfg.prepare is None:
            raise FileNotFoundError(f"data.root={root} holds no data set (dataset.json); prepare one with prepare.py "
                                    f"or set data.prepare")
        if dist.is_main:
            from hydra import compose, initialize_config_dir
            from hydra.core.global_hydra import GlobalHydra

            from x2ct.data.prepare import load_prepare_config, prepare_dataset

            overrides = [*data_cfg.prepare, f"output_dir={root}"]
            conf_dir = str(Path(__file__).resolve().parents[2] / "conf")
            if GlobalHydra.instance().is_initialized():
                prepare_cfg = compose("prepare", overrides=overrides)
            else:
                with initialize_config_dir(version_base="1.3", config_dir=conf_dir):
                    prepare_cfg = compose("prepare", overrides=overrides)
            print(f"data set {root} not found: preparing it (prepare.py {' '.join(overrides)})", flush=True)
            report = prepare_dataset(load_prepare_config(prepare_cfg))
            if not report.ok:
                raise RuntimeError(f"preparing {root} failed for {len(report.failures)} patients: {report.failures}")
        barrier()
    return root


def make_loaders(data_cfg: DictConfig, root: Path, dist: DistInfo, seed: int):
    def dataset(split: str, augment: bool) -> PatientDRRDataset:
        num_views = data_cfg.get("num_views")
        views = None if num_views is not None or data_cfg.views is None else list(data_cfg.views)
        return PatientDRRDataset(root, split, views=views, num_views=num_views,
                                 render_on_the_fly=bool(data_cfg.render_on_the_fly and augment),
                                 angle_jitter_deg=data_cfg.angle_jitter_deg if augment else 0.0,
                                 noise_photons=data_cfg.noise_photons if augment else None,
                                 radiograph=data_cfg.radiograph)

    train_set, val_set, test_set = dataset("train", True), dataset("val", False), dataset("test", False)
    for name, ds in (("train", train_set), ("val", val_set)):
        if len(ds) == 0:
            raise ValueError(f"the {name} split of {root} is empty (data={data_cfg.name}); training needs train and "
                             "val patients")
    train_sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                       seed=seed)
    common = {"batch_size": data_cfg.batch_size, "num_workers": data_cfg.num_workers,
              "pin_memory": torch.cuda.is_available()}
    # Loaders draw their workers' seeds from their own generators, never from the global RNG; the train one is
    # re-seeded every epoch (see `epoch_seed`), so a resumed run sees the same augmentation as an unbroken one.
    dropout = data_cfg.get("view_dropout")
    collate = (ViewSubsetCollate(int(dropout.min_views), dropout.get("max_views"), list(dropout.get("always") or []))
               if dropout else collate_samples)  # training only: validation and test see all the selected views
    train_loader = DataLoader(train_set, sampler=train_sampler, drop_last=False, generator=torch.Generator(),
                              collate_fn=collate, **common)

    def eval_loader(ds):
        return DataLoader(ds, sampler=ShardSampler(len(ds), dist), generator=torch.Generator().manual_seed(seed),
                          collate_fn=collate_samples, **common)

    test_loader = eval_loader(test_set) if len(test_set) else None
    return train_set, train_loader, train_sampler, eval_loader(val_set), test_loader


def fill_geometry(model_cfg: DictConfig, input_spec: dict) -> None:
    """Give a model config that asks for them (keys ``geometry`` / ``volume_fov_mm``, null in its YAML) the data set's
    imaging geometry and the volume's extent: the geometric lift projects voxels with the geometry that rendered
    the views. A cascade passes them on to its coarse model."""
    if "geometry" in model_cfg:
        model_cfg.geometry = input_spec["geometry"]
    if "volume_fov_mm" in model_cfg:
        model_cfg.volume_fov_mm = list(input_spec["ct_fov_mm"])


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the train loader's generator for one epoch on one rank."""
    return (seed * 1_000_003 + epoch) * 4_099 + rank


def mean_volume(dataset: PatientDRRDataset, limit: int = 64) -> torch.Tensor:
    """Mean training CT ``(1, D, H, W)``: the reference a model must beat ("predict the average patient")."""
    n = min(limit, len(dataset))
    return torch.stack([dataset.ct(i) for i in range(n)]).mean(dim=0)


# ---------------------------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision,
             criterion: ReconstructionLoss | None = None, limit: int | None = None,
             constant: torch.Tensor | None = None) -> dict[str, float]:
    """Mean PSNR / 3D SSIM (and loss) over a split, summed per sample and all-reduced across ranks.

    ``constant`` evaluates a fixed prediction instead of the model (the mean-volume reference). A model with
    ``stage_outputs`` (the multi-resolution cascade) is also scored at every earlier stage's size, against the
    target area-averaged to it: ``psnr_stage<k>`` (and ``ssim_stage<k>`` where the 11-voxel window fits).
    """
    model.eval()
    staged = constant is None and hasattr(unwrap_model(model), "stage_outputs")
    # sizes known up front: every rank all-reduces the same shape, even one whose shard is empty
    sizes = [int(n) for n in unwrap_model(model).stage_sizes[:-1]] if staged else []
    totals = torch.zeros(4 + 2 * len(sizes), dtype=torch.float64, device=device)  # psnr, ssim, loss, count, stages
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        views, target = batch["views"].to(device), batch["ct"].to(device)
        angles = batch.get("angles_deg")
        stages = []
        if constant is not None:
            pred = constant.to(device).expand_as(target)
        else:
            with autocast(device, precision):
                stages = (forward_views(unwrap_model(model), views, angles, "stage_outputs") if staged
                          else [forward_views(model, views, angles)])
            stages = [s.float() for s in stages]
            pred = stages[-1]
        totals[0] += psnr(pred, target).sum().double()
        totals[1] += ssim3d(pred, target).sum().double()
        if criterion is not None:
            totals[2] += criterion(pred, target, volume_only=True, views=views,
                                   angles_deg=angles)[0].double() * len(target)
        totals[3] += len(target)
        for k, stage in enumerate(stages[:-1]):
            coarse_target = F.interpolate(target, size=stage.shape[-3:], mode="area")
            totals[4 + 2 * k] += psnr(stage, coarse_target).sum().double()
            if min(stage.shape[-3:]) >= MIN_SSIM_SIZE:
                totals[5 + 2 * k] += ssim3d(stage, coarse_target).sum().double()
    totals = all_reduce_mean(totals) * _world_size()  # sums over ranks
    count = totals[3].clamp(min=1)
    out = {"psnr": (totals[0] / count).item(), "ssim": (totals[1] / count).item()}
    if criterion is not None:
        out["loss"] = (totals[2] / count).item()
    for k, size in enumerate(sizes):
        out[f"psnr_stage{k + 1}"] = (totals[4 + 2 * k] / count).item()
        if size >= MIN_SSIM_SIZE:
            out[f"ssim_stage{k + 1}"] = (totals[5 + 2 * k] / count).item()
    return out


def _in_float32(pred):
    """A model's output (a volume, or a dict with the volume and its deep-supervision list) cast to float32, so
    losses are computed in full precision after an autocast forward."""
    def cast(value):
        if isinstance(value, list):
            return [cast(v) for v in value]
        return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    return {key: cast(value) for key, value in pred.items()} if isinstance(pred, dict) else pred.float()


def _build_adversarial(cfg: DictConfig, input_spec: dict, device: torch.device, precision: Precision,
                       dist: DistInfo, total_steps: int):
    """The adversarial extension when ``cfg.adversarial.enabled``, else None (the plain supervised step)."""
    adv_cfg = cfg.get("adversarial")
    if adv_cfg is None or not adv_cfg.get("enabled", False):
        return None
    from x2ct.engine.adversarial import AdversarialTraining

    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    return AdversarialTraining(OmegaConf.to_container(adv_cfg, resolve=True), input_spec, device,
                               lambda: autocast(device, precision), scaler, dist.world_size, total_steps)


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def autocast(device: torch.device, precision: Precision):
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


# ------------------------------------------------------------------------------------------------------- train


class _RunLogger:
    """Holds the W&B logger so ``train`` can finish it whatever happens (NullLogger until rank 0 creates one)."""

    def __init__(self) -> None:
        self.wandb: WandbLogger | NullLogger = NullLogger()
        self.run_info: RunInfo | None = None


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> float:
    """Run one training job; returns the best validation PSNR (for sweepers).

    ``run_dir`` defaults to Hydra's output folder (identical on every rank, see ``x2ct.engine.launch``). W&B is
    always finished, with a non-zero exit code if training failed, so the next job of a sweep starts clean.
    """
    validate_train_config(cfg)
    dist = init_distributed()
    run_dir = Path(run_dir) if run_dir is not None else _hydra_output_dir()
    log = _RunLogger()
    exit_code = 1
    try:
        best = _train(cfg, dist, run_dir, log)
        exit_code = 0
        return best
    finally:
        if log.run_info is not None:
            log.run_info.close("finished" if exit_code == 0 else "failed")
        log.wandb.finish(exit_code=exit_code)
        if exit_code == 0:
            # ranks leave the group together: a rank that tears gloo down while rank 0 is still finishing W&B
            # was seen to abort at exit ("terminate called without an active exception"); after a failure the
            # other ranks may never get here, so no barrier then
            barrier()
        cleanup_distributed()


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _train(cfg: DictConfig, dist: DistInfo, run_dir: Path, log: _RunLogger) -> float:
    device = resolve_device(cfg.trainer.accelerator, dist)
    precision = resolve_precision(cfg.trainer.precision, device)
    set_deterministic(cfg.trainer.deterministic)
    seed_everything(cfg.seed, rank=dist.rank)

    root = ensure_dataset(cfg.data, dist)
    train_set, train_loader, train_sampler, val_loader, test_loader = make_loaders(cfg.data, root, dist, cfg.seed)
    sample = train_set[0]
    input_spec = train_set.input_spec()  # what predict.py needs to feed the model without the data set
    with open_dict(cfg):  # what the data decides, recorded so the saved config rebuilds the same model
        cfg.model.num_views = len(train_set.view_indices)
        cfg.model.view_size = int(sample["views"].shape[-1])
        cfg.model.volume_size = int(sample["ct"].shape[-1])
        cfg.model.view_angles_deg = [float(train_set.geometry.angles_deg[i]) for i in train_set.view_indices]
        fill_geometry(cfg.model, input_spec)
    config_dict = OmegaConf.to_container(cfg, resolve=True)

    model = instantiate(cfg.model).to(device)
    if cfg.data.get("view_dropout") and not getattr(model, "any_view_count", False):
        raise ValueError(f"data.view_dropout draws a different number of views per batch, but {cfg.model._target_} "
                         "is built for exactly data's views (hybrid_vit and multires take any number with "
                         "model.fusion=mean|max|attention; the baseline's per-view FiLM does not)")
    reference_volume = mean_volume(train_set)
    if hasattr(model, "initialise_prior"):  # models with a template volume start from the average patient
        model.initialise_prior(reference_volume.to(device))
    n_params = count_parameters(model)
    components = cfg.loss.get("components")
    criterion = ReconstructionLoss(dict(cfg.loss.weights),
                                   OmegaConf.to_container(components, resolve=True) if components else None,
                                   input_spec=input_spec).to(device)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    accumulate = cfg.trainer.accumulate_grad_batches
    batches = len(train_loader) if cfg.trainer.limit_train_batches is None else min(
        len(train_loader), cfg.trainer.limit_train_batches)
    steps_per_epoch = math.ceil(batches / accumulate)
    total_steps = steps_per_epoch * cfg.trainer.max_epochs
    schedule_args = {"optimizer": optimizer, "total_steps": total_steps}
    if cfg.scheduler.get("warmup_steps", 0) > total_steps:  # short (debug) runs: warm up over the whole run
        schedule_args["warmup_steps"] = total_steps
        if dist.is_main:
            print(f"scheduler.warmup_steps={cfg.scheduler.warmup_steps} exceeds this run's {total_steps} optimizer "
                  f"steps: warming up over all {total_steps}", flush=True)
    scheduler = instantiate(cfg.scheduler)(**schedule_args)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    ema = ModelEMA(model, cfg.trainer.ema_decay) if cfg.trainer.ema_decay else None
    # milestone 3: discriminators and their own optimiser, as hooks around the supervised step (off by default)
    adversarial = _build_adversarial(cfg, input_spec, device, precision, dist, total_steps)

    start_epoch, step, best_psnr, wandb_id = 0, 0, -math.inf, None
    resume_from = _resume_checkpoint(cfg.resume, run_dir)
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, map_location=device)
        ckpt.restore_training_state(state, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                    ema=ema, rank=dist.rank)
        start_epoch, step, best_psnr = state["epoch"] + 1, state["step"], state["best_metric"]
        if adversarial is not None:
            saved = (state.get("extra") or {}).get("adversarial")
            if saved is None:
                raise ckpt.CheckpointError(f"checkpoint {resume_from} has no discriminator state, but "
                                           "adversarial.enabled=true; resume it without adversarial training")
            adversarial.load_state_dict(saved)
        wandb_id = state.get("wandb_run_id")

    train_model = torch.compile(model) if cfg.trainer.compile else model
    if dist.world_size > 1:
        train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    # on resume, records logged after the checkpoint's step (work that was lost) are dropped
    metrics = MetricsLog(run_dir / "metrics.jsonl", truncate_after_step=step if resume_from else None) \
        if dist.is_main else None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(config_dict))
        log.run_info = RunInfo(run_dir, model=cfg.model._target_, parameters=n_params, device=str(device),
                               precision=precision.name, world_size=dist.world_size)
        log.wandb = WandbLogger.create(
            config_dict, enabled=cfg.logger.enabled, project=cfg.logger.project, entity=cfg.logger.entity,
            mode=cfg.logger.mode, group=_sweep_group(), name=_run_name(run_dir), run_dir=run_dir, run_id=wandb_id,
            tags=list(cfg.logger.tags))
        print(f"run folder: {run_dir}\nmodel {cfg.model._target_}: {n_params:,} parameters\n"
              f"data {root}: {len(train_set)} train / {len(val_loader.dataset)} val patients; device {device}, "
              f"precision {precision.name}, world size {dist.world_size}"
              + (f"\nresuming from {resume_from} at epoch {start_epoch}" if resume_from else ""), flush=True)
    logger = log.wandb
    logger.summary({"parameters": n_params})

    reference = evaluate(model, val_loader, device, precision, constant=reference_volume,
                         limit=cfg.trainer.limit_val_batches)
    if dist.is_main:
        metrics.log(step=step, epoch=start_epoch, split="val_mean_volume", **reference)
        logger.summary({"val/psnr_mean_volume": reference["psnr"], "val/ssim_mean_volume": reference["ssim"]})

    nonfinite_in_a_row = 0
    val, rate = {}, None
    for epoch in range(start_epoch, cfg.trainer.max_epochs):
        train_sampler.set_epoch(epoch)
        train_loader.generator.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))
        train_model.train()
        progress = Progress(total=batches, desc=f"epoch {epoch + 1}/{cfg.trainer.max_epochs}",
                            enabled=dist.is_main, log_every=cfg.trainer.log_every_steps)
        window_start, window_samples = time.perf_counter(), 0
        optimizer.zero_grad(set_to_none=True)
        step_is_finite = True
        for i, batch in enumerate(train_loader):
            if i >= batches:
                break
            views = batch["views"].to(device, non_blocking=True)
            target = batch["ct"].to(device, non_blocking=True)
            angles = batch["angles_deg"]
            boundary = (i + 1) % accumulate == 0 or i + 1 == batches
            sync = contextlib.nullcontext() if boundary or dist.world_size == 1 else train_model.no_sync()
            with sync:
                with autocast(device, precision):
                    pred = forward_views(train_model, views, angles)
                loss, parts = criterion(_in_float32(pred), target, views=views, angles_deg=angles)
                if adversarial is not None:
                    volume = split_outputs(pred)[0]
                    adv_loss, adv_parts = adversarial.generator_term(volume, epoch, views, angles)
                    loss, parts = loss + adv_loss, parts | adv_parts
                step_is_finite &= bool(torch.isfinite(loss))
                (scaler.scale(loss / accumulate) if scaler else loss / accumulate).backward()
            window_samples += len(target) * dist.world_size
            if not boundary:
                continue

            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip_norm or math.inf)
            finite = torch.tensor([float(step_is_finite and torch.isfinite(grad_norm))], device=device)
            if all_reduce_mean(finite).item() < 1.0:  # any rank non-finite: every rank skips this step
                optimizer.zero_grad(set_to_none=True)
                if scaler:
                    scaler.update()
                nonfinite_in_a_row += 1
                if dist.is_main:
                    metrics.log(step=step, epoch=epoch, split="train", skipped_nonfinite=1, loss=loss.item())
                if nonfinite_in_a_row >= cfg.trainer.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{nonfinite_in_a_row} optimizer steps in a row had a non-finite loss or gradient (epoch "
                        f"{epoch + 1}, step {step}); stopping (trainer.max_nonfinite_steps="
                        f"{cfg.trainer.max_nonfinite_steps}). Checkpoints never hold non-finite weights: "
                        f"{ckpt.checkpoint_path(run_dir, 'last')} is the last good state.")
                step_is_finite = True
                continue
            nonfinite_in_a_row = 0
            step_is_finite = True
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema:
                ema.update(model)
            if adversarial is not None:
                parts = parts | adversarial.discriminator_step(volume.detach(), target, epoch, views, angles)
            step += 1

            if dist.is_main and (step % cfg.trainer.log_every_steps == 0 or i + 1 == batches):
                elapsed = time.perf_counter() - window_start
                values = {"loss": loss.item(), **{f"loss_{k}": float(v) for k, v in parts.items()},
                          "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                          "samples_per_s": window_samples / max(elapsed, 1e-9)}
                if device.type == "cuda":
                    values["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                metrics.log(step=step, epoch=epoch, split="train", **values)
                logger.log({f"train/{k}": v for k, v in values.items()} | {"epoch": epoch}, step=step)
                rate = values["samples_per_s"]
                window_start, window_samples = time.perf_counter(), 0
            progress.update(1, loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            samples_per_s=f"{rate:.1f}" if rate else "-", val_psnr=f"{val['psnr']:.2f}" if val else "-")
        progress.close()

        last_epoch = epoch + 1 == cfg.trainer.max_epochs
        if (epoch + 1) % cfg.trainer.val_every_epochs == 0 or last_epoch:
            eval_model = ema.module if ema else model
            val = evaluate(eval_model, val_loader, device, precision, criterion, cfg.trainer.limit_val_batches)
            improved = val["psnr"] > best_psnr
            best_psnr = max(best_psnr, val["psnr"])
            if dist.is_main:
                metrics.log(step=step, epoch=epoch, split="val", **val, best_psnr=best_psnr)
                logger.log({f"val/{k}": v for k, v in val.items()} | {"val/best_psnr": best_psnr, "epoch": epoch},
                           step=step)
                print(f"epoch {epoch + 1}: val PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.4f} (best "
                      f"{best_psnr:.2f}; mean-volume reference {reference['psnr']:.2f} dB)", flush=True)
                every = cfg.logger.image_every_epochs
                if every and ((epoch + 1) % every == 0 or last_epoch):
                    _log_slices(logger, eval_model, val_loader, device, precision, step)
        else:
            improved = False

        rng_states = gather_rng_states()  # a collective: every rank's random streams, restored per rank on resume
        if dist.is_main:
            state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "ema": ema,
                     "epoch": epoch, "step": step, "best_metric": best_psnr, "config": config_dict,
                     "wandb_run_id": logger.run_id, "rng_states": rng_states,
                     "extra": {"input_spec": input_spec}
                     | ({"adversarial": adversarial.state_dict()} if adversarial is not None else {})}
            ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, "last"), **state)
            if improved:
                ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, "best"), **state)
            if (epoch + 1) % cfg.trainer.checkpoint_every_epochs == 0:
                ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, "epoch", epoch=epoch + 1), **state)
        barrier()

    if cfg.test_after_training and test_loader is not None:
        _test_best(cfg, model, ema, run_dir, test_loader, device, precision, criterion, dist, metrics, logger, step)
    if dist.is_main:
        logger.summary({"best_val_psnr": best_psnr})
        print(f"done: best val PSNR {best_psnr:.2f} dB. Results in {run_dir} (metrics.jsonl, checkpoints/, "
              f"config_resolved.yaml{', test_metrics.json' if test_loader is not None else ''})", flush=True)
    return best_psnr


def _test_best(cfg, model, ema, run_dir, test_loader, device, precision, criterion, dist, metrics, logger, step):
    best_path = ckpt.checkpoint_path(run_dir, "best")
    barrier()
    if best_path.exists():
        state = ckpt.load_checkpoint(best_path, map_location=device)
        target = ema if ema else model
        target.load_state_dict(state["ema"] if ema else state["model"])
    result = evaluate(ema.module if ema else model, test_loader, device, precision, criterion)
    if dist.is_main:
        metrics.log(step=step, epoch=cfg.trainer.max_epochs - 1, split="test", **result)
        logger.summary({f"test/{k}": v for k, v in result.items()})
        write_json_atomic(run_dir / "test_metrics.json",
                          {"checkpoint": str(best_path), **result,
                           "definitions": "PSNR = 10 log10(1 / MSE) on [0, 1] volumes; SSIM = 3D Gaussian-window "
                                          "SSIM (sigma 1.5, K1 0.01, K2 0.03, data_range 1), both per patient, "
                                          "averaged over the split"})
        print(f"test (best checkpoint): PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}", flush=True)


def _resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    existing = ckpt.find_resume_checkpoint(run_dir)
    if resume in (None, ""):
        if existing is not None:
            raise FileExistsError(f"run folder {run_dir} already has checkpoints ({existing}); pass resume=auto to "
                                  "continue it, or choose another run_name")
        return None
    if resume == "auto":
        return existing
    path = Path(resume)
    if path.is_dir():
        found = ckpt.find_resume_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"resume={resume}: no checkpoints/last.pt in that folder")
        return found
    if not path.exists():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file or run folder")
    return path


def _run_name(run_dir: Path) -> str:
    """W&B run name: the run folder's name, or for a sweep job its number and overrides."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{hc.job.num}_{hc.job.override_dirname}" if hc.job.override_dirname else str(hc.job.num)
    except ValueError:  # not under Hydra
        pass
    return run_dir.name


def _sweep_group() -> str | None:
    """One W&B group per multirun sweep (its folder name); None for a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    except ValueError:  # not under Hydra (tests, notebooks)
        return None


@torch.no_grad()
def _log_slices(logger, model, loader, device, precision, step) -> None:
    """Mid axial / coronal / sagittal slices of the first validation patient: prediction above, target below."""
    batch = next(iter(loader))
    with autocast(device, precision):
        pred = forward_views(model, batch["views"][:1].to(device), batch["angles_deg"][:1]).float()[0, 0].cpu()
    target = batch["ct"][0, 0]
    d, h, w = target.shape
    images, captions = [], []
    # radiological display: axial anterior up and patient right on the left; coronal and sagittal head up,
    # patient right / anterior on the left (volume axes D, H, W run superior, anterior, patient right)
    for name, take in (("axial", lambda v: v[d // 2].flip(0).flip(1)),
                       ("coronal", lambda v: v[:, h // 2].flip(0).flip(1)),
                       ("sagittal", lambda v: v[:, :, w // 2].flip(0).flip(1))):
        images.append(torch.cat([take(pred), take(target)], dim=0).clamp(0, 1).numpy())
        captions.append(f"{name}: prediction (top) / target (bottom), {batch['patient_id'][0]}")
    logger.log_images("val/slices", images, step=step, captions=captions)
