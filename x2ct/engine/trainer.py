"""The training loop: one function, readable in one sitting, that runs as a single process or as one DDP rank.

``train(cfg)`` builds the run (``build_run``: data, model, loss, optimiser, schedule, resume, DDP, EMA), then per
epoch: ``train_epoch`` (``TrainStep`` per accumulation group, the adversarial hooks around it, logging every
``log_every_steps``), ``validate`` (PSNR and 3D SSIM, all-reduced so every rank agrees) and ``save_checkpoints``
(``last`` every epoch, ``best`` by validation PSNR, periodic); at the end ``score_best_on_test``. Logs go
to ``metrics.jsonl`` and W&B from rank 0 only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from x2ct import provenance
from x2ct.atomic_io import write_json_atomic, write_text_atomic
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.ensure import ensure_dataset
from x2ct.data.input_spec import InputSpec
from x2ct.data.reference import mean_volume, mean_volume_patients
from x2ct.engine import checkpoint as ckpt
from x2ct.engine import resume
from x2ct.engine.build import (
    build_adversarial,
    build_criterion,
    build_ema,
    build_model,
    build_optimizer,
    build_scheduler,
    check_view_dropout_minimum,
    compile_forward_and_loss,
    fill_model_config,
    steps_per_epoch,
    wrap_for_training,
)
from x2ct.engine.config_schema import validate_train_config
from x2ct.engine.data import epoch_seed, make_loaders
from x2ct.engine.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    hold_folder_on_main,
    init_distributed,
    run_on_main_then_wait,
)
from x2ct.engine.ema import ModelEMA
from x2ct.engine.metrics_log import MetricsLog
from x2ct.engine.precision import Precision, make_scaler, resolve_device, resolve_precision
from x2ct.engine.run_info import RunInfo
from x2ct.engine.seeding import gather_rng_states, seed_everything, set_deterministic
from x2ct.engine.step import NonFiniteLossError, TrainStep
from x2ct.engine.training_state import TrainingState
from x2ct.engine.validation import METRIC_DEFINITIONS, log_slices, validation_metrics
from x2ct.engine.wandb_logger import NullLogger, WandbLogger
from x2ct.folder_lock import is_held
from x2ct.losses import ReconstructionLoss
from x2ct.models import count_parameters
from x2ct.progress import Progress

__all__ = ["NonFiniteLossError", "Run", "build_run", "train"]


@dataclass
class Run:
    """One training run as built from its config: what the loop reads and the state it advances."""

    cfg: DictConfig
    dist: DistInfo
    run_dir: Path
    device: torch.device
    precision: Precision
    # data
    train_set: PatientDRRDataset
    train_loader: DataLoader
    train_sampler: DistributedSampler
    val_loader: DataLoader
    test_loader: DataLoader | None
    input_spec: InputSpec
    reference_volume: torch.Tensor
    # model and optimisation
    model: nn.Module
    criterion: ReconstructionLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    ema: ModelEMA | None
    adversarial: Any
    training_state: TrainingState  # what a checkpoint holds of the parts above
    step_fn: TrainStep
    config_dict: dict
    n_params: int
    batches: int
    accumulate: int
    # progress
    start_epoch: int = 0
    step: int = 0
    best_psnr: float = -math.inf
    wandb_id: str | None = None
    resume_from: Path | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The model that is validated, tested and kept as ``best``: the EMA average when there is one."""
        return self.ema.module if self.ema else self.model


class _RunLogger:
    """Holds what rank 0 writes to for the whole run (W&B, run_info.json, metrics.jsonl) so ``train`` can close each
    whatever happens (NullLogger and None until rank 0 opens them)."""

    def __init__(self) -> None:
        self.wandb: WandbLogger | NullLogger = NullLogger()
        self.run_info: RunInfo | None = None
        self.metrics: MetricsLog | None = None


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> float:
    """Run one training job; returns the best validation PSNR (for sweepers).

    ``run_dir`` defaults to Hydra's output folder (identical on every rank, see ``x2ct.engine.launch``). W&B is
    always finished, with a non-zero exit code if training failed, so the next job of a sweep starts clean.
    """
    validate_train_config(cfg)
    dist = init_distributed()
    run_dir = Path(run_dir) if run_dir is not None else _hydra_output_dir()
    # one process (group) per run folder: train.py's launch took it already; a sweep's job or a direct call here
    held_before = is_held(run_dir)
    lock = hold_folder_on_main(run_dir, "run folder")  # FolderInUseError on every rank if another process owns it
    log = _RunLogger()
    exit_code = 1
    try:
        best = _train(cfg, dist, run_dir, log)
        exit_code = 0
        return best
    finally:
        if log.metrics is not None:
            log.metrics.close()
        if log.run_info is not None:
            log.run_info.close("finished" if exit_code == 0 else "failed")
        log.wandb.finish(exit_code=exit_code)
        if exit_code == 0:
            # ranks leave the group together: a rank that tears gloo down while rank 0 is still finishing W&B
            # was seen to abort at exit ("terminate called without an active exception"); after a failure the
            # other ranks may never get here, so no barrier then
            barrier()
        cleanup_distributed()
        if lock is not None and not held_before:  # last: W&B and run_info write into the folder until here
            lock.release()


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _train(cfg: DictConfig, dist: DistInfo, run_dir: Path, log: _RunLogger) -> float:
    run = build_run(cfg, dist, run_dir)
    metrics = _start_logging(run, log)
    logger = log.wandb
    reference = validation_metrics(run.model, run.val_loader, run.device, run.precision,
                                   constant=run.reference_volume, limit=cfg.trainer.limit_val_batches)
    if dist.is_main:
        if run.resume_from is None:  # a resumed run has this record already
            metrics.log(step=run.step, epoch=run.start_epoch, split="val_mean_volume", **reference)
        logger.summary({"val/psnr_mean_volume": reference["psnr"], "val/ssim_mean_volume": reference["ssim"]})

    val: dict[str, float] = {}
    for epoch in range(run.start_epoch, cfg.trainer.max_epochs):
        train_epoch(run, epoch, metrics, logger, val)
        val, improved = validate(run, epoch, metrics, logger, reference) or (val, False)
        save_checkpoints(run, epoch, improved, logger)

    if cfg.test_after_training and run.test_loader is not None:
        score_best_on_test(run, metrics, logger)
    if dist.is_main:
        logger.summary({"best_val_psnr": run.best_psnr})
        print(f"done: best val PSNR {run.best_psnr:.2f} dB. Results in {run_dir} (metrics.jsonl, checkpoints/, "
              f"config_resolved.yaml{', test_metrics.json' if run.test_loader is not None else ''})", flush=True)
    return run.best_psnr


# ------------------------------------------------------------------------------------------------------- build


def build_run(cfg: DictConfig, dist: DistInfo, run_dir: Path) -> Run:
    """Data, model, loss, optimiser, schedule and hooks from ``cfg``; resumed if asked; then DDP, compile, EMA."""
    device = resolve_device(cfg.trainer.accelerator, dist)
    precision = resolve_precision(cfg.trainer.precision, device)
    set_deterministic(cfg.trainer.deterministic)
    if device.type == "cuda":  # autotuned convolutions, unless results must repeat bit for bit
        torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
    # what is built from random numbers (weights, a loss's random network) is built alike on every rank; each rank
    # then draws its own stream (patches, dropout, augmentation)
    seed_everything(cfg.seed)

    # the other ranks wait for rank 0's preparation longer than NCCL's watchdog (10 min) would let them
    root = ensure_dataset(cfg.data, partial(run_on_main_then_wait,
                                            timeout_s=60.0 * cfg.trainer.data_wait_timeout_min))
    train_set, train_loader, train_sampler, val_loader, test_loader = make_loaders(cfg.data, root, dist, cfg.seed)
    input_spec = train_set.input_spec()  # what predict.py needs to feed the model without the data set
    fill_model_config(cfg, train_set, input_spec)
    config_dict = OmegaConf.to_container(cfg, resolve=True)

    reference_volume = mean_volume(train_set)
    model = build_model(cfg, device, reference_volume)
    check_view_dropout_minimum(cfg.data, model)
    criterion = build_criterion(cfg.loss, input_spec, device)
    optimizer = build_optimizer(cfg.optimizer, model, device)
    accumulate = cfg.trainer.accumulate_grad_batches
    batches, steps = steps_per_epoch(len(train_loader), cfg.trainer.limit_train_batches, accumulate)
    total_steps = steps * cfg.trainer.max_epochs
    scheduler = build_scheduler(cfg, optimizer, total_steps, dist)
    scaler = make_scaler(precision, device)
    # milestone 3: discriminators and their own optimiser, as hooks around the supervised step (off by default)
    adversarial = build_adversarial(cfg, input_spec, device, precision, dist, total_steps)
    seed_everything(cfg.seed, rank=dist.rank)

    if dist.is_main:
        removed = resume.remove_temporary_files(run_dir)
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an interrupted checkpoint write: "
                  f"{', '.join(p.name for p in removed)}", flush=True)
    resumed = resume.resume_state(cfg.resume, run_dir, device, dist.is_main)
    resume_from, state = (resumed.path, resumed.state) if resumed is not None else (None, None)

    compile_loss = cfg.trainer.compile_loss  # the model compiled with the objective, not alone
    train_model = wrap_for_training(model, dist, device, cfg.trainer.compile and not compile_loss,
                                    cfg.trainer.compile_backend, cfg.trainer.compile_mode)
    forward_and_loss = (compile_forward_and_loss(train_model, criterion, device, precision,
                                                 cfg.trainer.compile_backend, cfg.trainer.compile_mode)
                        if compile_loss else None)
    ema = build_ema(model, cfg.trainer.ema_decay)  # after DDP's broadcast: every rank averages rank 0's weights
    training_state = TrainingState(model, optimizer, scheduler, scaler, ema, adversarial)
    if state is not None:  # the whole run built: every part restored at once, each rank from the same file
        training_state.load(state, rank=dist.rank, path=resume_from, config=config_dict)
    step_fn = TrainStep(model, train_model, criterion, optimizer, scheduler, scaler, ema, device, precision,
                        cfg.trainer.grad_clip_norm, dist.world_size, forward_and_loss=forward_and_loss)
    run = Run(cfg=cfg, dist=dist, run_dir=run_dir, device=device, precision=precision, train_set=train_set,
              train_loader=train_loader, train_sampler=train_sampler, val_loader=val_loader, test_loader=test_loader,
              input_spec=input_spec, reference_volume=reference_volume, model=model, criterion=criterion,
              optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema, adversarial=adversarial,
              training_state=training_state, step_fn=step_fn, config_dict=config_dict,
              n_params=count_parameters(model), batches=batches, accumulate=accumulate, resume_from=resume_from)
    if state is not None:
        run.start_epoch, run.step, run.best_psnr = state["epoch"] + 1, state["step"], state["best_metric"]
        run.wandb_id = state.get("wandb_run_id")
        if resume_from.parent.resolve() == (run_dir / ckpt.CHECKPOINT_DIR).resolve():
            run.best_psnr = resume.best_of_folder(run_dir, resumed, run.best_psnr, device, dist.is_main)
    return run


def _start_logging(run: Run, log: _RunLogger) -> MetricsLog | None:
    """Rank 0: ``metrics.jsonl`` (emptied on a fresh start; on resume, records after the checkpoint's step and
    earlier test scores dropped), the resolved config,
    ``run_info.json`` and W&B. Other ranks: None."""
    if not run.dist.is_main:
        return None
    cfg, run_dir = run.cfg, run.run_dir
    # a fresh start drops the records of an attempt killed before its first checkpoint; a resumed one those logged
    # after its checkpoint, and the test scores, which come after the last checkpoint and are scored again
    metrics = log.metrics = (MetricsLog(run_dir / "metrics.jsonl", truncate_after_step=run.step, drop_splits=("test",))
                             if run.resume_from else MetricsLog(run_dir / "metrics.jsonl", fresh=True))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(run.config_dict))
    log.run_info = RunInfo(run_dir, model=cfg.model._target_, parameters=run.n_params, device=str(run.device),
                           precision=run.precision.name, world_size=run.dist.world_size,
                           mean_volume_patients=mean_volume_patients(run.train_set), **provenance.record())
    log.wandb = WandbLogger.create(
        run.config_dict, project=cfg.logger.project, entity=cfg.logger.entity,
        mode=cfg.logger.mode, group=cfg.logger.group or _sweep_group(), name=_run_name(run_dir), run_dir=run_dir,
        run_id=run.wandb_id, tags=list(cfg.logger.tags))
    log.wandb.summary({"parameters": run.n_params})
    print(f"run folder: {run_dir}\nmodel {cfg.model._target_}: {run.n_params:,} parameters\n"
          f"data {run.train_set.layout.root}: {len(run.train_set)} train / {len(run.val_loader.dataset)} val patients; "
          f"device {run.device}, precision {run.precision.name}, world size {run.dist.world_size}"
          + (f"\nresuming from {run.resume_from} after epoch {run.start_epoch}" if run.resume_from else ""), flush=True)
    return metrics


# ------------------------------------------------------------------------------------------------------- train


def train_epoch(run: Run, epoch: int, metrics: MetricsLog | None, logger, val: dict[str, float]) -> None:
    """One pass over the train split: ``TrainStep`` per accumulation group; losses read once per logging window."""
    cfg, dist = run.cfg, run.dist
    run.train_sampler.set_epoch(epoch)
    run.train_loader.generator.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))
    run.step_fn.train_model.train()
    adversarial = run.adversarial
    extra_loss = None if adversarial is None else (
        lambda volume, views, angles: adversarial.generator_term(volume, epoch, views, angles))
    log_every = cfg.trainer.log_every_steps
    progress_bar = Progress(total=run.batches, desc=f"epoch {epoch + 1}/{cfg.trainer.max_epochs}",
                            enabled=dist.is_main, log_every=log_every)
    window_start, window_samples, done = time.perf_counter(), 0, 0
    for group in _accumulation_groups(run.train_loader, run.batches, run.accumulate):
        result = run.step_fn(group, extra_loss)
        if adversarial is not None:
            parts = adversarial.discriminator_step(result.volume, result.target, epoch, result.views, result.angles)
            run.step_fn.window.add({f"loss_{name}": value for name, value in parts.items()})
        run.step += 1
        done += len(group)
        window_samples += result.samples
        progress_bar.update(len(group))
        if run.step % log_every and done < run.batches:
            continue
        values = run.step_fn.read_window()  # the host waits for the device here, once per window
        in_a_row = values.pop("nonfinite_in_a_row")
        if in_a_row >= cfg.trainer.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{in_a_row} optimizer steps in a row had a non-finite loss or gradient (epoch {epoch + 1}, step "
                f"{run.step}); stopping (trainer.max_nonfinite_steps={cfg.trainer.max_nonfinite_steps}). Those steps "
                f"were skipped, so checkpoints never hold non-finite weights: "
                f"{ckpt.checkpoint_path(run.run_dir, 'last')} is the last good state.")
        elapsed = time.perf_counter() - window_start
        values |= {"lr": run.optimizer.param_groups[0]["lr"], "samples_per_s": window_samples / max(elapsed, 1e-9)}
        if run.device.type == "cuda":
            values["gpu_mem_gb"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        if dist.is_main:
            metrics.log(step=run.step, epoch=epoch, split="train", **values)
            logger.log({f"train/{k}": v for k, v in values.items()} | {"epoch": epoch}, step=run.step)
        progress_bar.update(0, loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                            samples_per_s=f"{values['samples_per_s']:.1f}",
                            val_psnr=f"{val['psnr']:.2f}" if val else "-")
        window_start, window_samples = time.perf_counter(), 0
    progress_bar.close()


def _accumulation_groups(loader: DataLoader, batches: int, accumulate: int):
    """The first ``batches`` micro-batches of ``loader`` in groups of ``accumulate`` (the last may be shorter)."""
    group: list[dict[str, Any]] = []
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        group.append(batch)
        if len(group) == accumulate or i + 1 == batches:
            yield group
            group = []


# ---------------------------------------------------------------------------------------------------- validate


def validate(run: Run, epoch: int, metrics: MetricsLog | None, logger,
             reference: dict[str, float]) -> tuple[dict[str, float], bool] | None:
    """Score the validation split when due (every ``val_every_epochs`` and at the last epoch); returns the scores
    and whether they beat the best so far, or None when not due."""
    cfg, dist = run.cfg, run.dist
    last_epoch = epoch + 1 == cfg.trainer.max_epochs
    if (epoch + 1) % cfg.trainer.val_every_epochs and not last_epoch:
        return None
    val = validation_metrics(run.eval_model, run.val_loader, run.device, run.precision, run.criterion,
                             cfg.trainer.limit_val_batches)
    improved = val["psnr"] > run.best_psnr
    run.best_psnr = max(run.best_psnr, val["psnr"])
    if dist.is_main:
        metrics.log(step=run.step, epoch=epoch, split="val", **val, best_psnr=run.best_psnr)
        logger.log({f"val/{k}": v for k, v in val.items()} | {"val/best_psnr": run.best_psnr, "epoch": epoch},
                   step=run.step)
        print(f"epoch {epoch + 1}: val PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.4f} (best "
              f"{run.best_psnr:.2f}; mean-volume reference {reference['psnr']:.2f} dB)", flush=True)
        every = cfg.logger.image_every_epochs
        if every and ((epoch + 1) % every == 0 or last_epoch):
            log_slices(logger, run.eval_model, run.val_loader, run.device, run.precision, run.step)
    return val, improved


def score_best_on_test(run: Run, metrics: MetricsLog | None, logger) -> None:
    """Score the best checkpoint (its EMA average when there is one) on the test split; rank 0 writes the result."""
    best_path = ckpt.checkpoint_path(run.run_dir, "best")
    barrier()
    scored = best_path if best_path.exists() else None  # none when no validation score was finite
    if scored is not None:
        state = ckpt.load_checkpoint(best_path, map_location=run.device)
        if not run.ema:
            run.model.load_state_dict(state["model"])
        elif state.get("ema") is not None:
            run.ema.load_state_dict(state["ema"])
        else:  # a best.pt saved before a resume switched the EMA on: its own weights are the best there are
            run.ema.module.load_state_dict(state["model"])
    result = validation_metrics(run.eval_model, run.test_loader, run.device, run.precision, run.criterion)
    if run.dist.is_main:
        metrics.log(step=run.step, epoch=run.cfg.trainer.max_epochs - 1, split="test", **result)
        logger.summary({f"test/{k}": v for k, v in result.items()})
        write_json_atomic(run.run_dir / "test_metrics.json", {"checkpoint": None if scored is None else str(scored),
                                                              **result, "definitions": METRIC_DEFINITIONS})
        print(f"test ({'best checkpoint' if scored else 'last weights: no best.pt'}): PSNR {result['psnr']:.2f} dB, "
              f"SSIM {result['ssim']:.4f}", flush=True)


# ------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoints(run: Run, epoch: int, improved: bool, logger) -> None:
    """``last`` every epoch, ``best`` on a new best validation PSNR, ``epoch_NNNN`` every ``checkpoint_every_epochs``:
    written by rank 0, with every rank's random streams (gathered, a collective) for exact resume. ``best`` and
    ``epoch_NNNN`` are byte copies of ``last``, which names them, so a kill between the writes loses neither."""
    rng_states = gather_rng_states()
    if run.dist.is_main:
        copies = ["best.pt"] if improved else []
        if (epoch + 1) % run.cfg.trainer.checkpoint_every_epochs == 0:
            copies.append(ckpt.checkpoint_path(run.run_dir, "epoch", epoch=epoch + 1).name)
        run.training_state.save(ckpt.checkpoint_path(run.run_dir, "last"), epoch=epoch, step=run.step,
                                best_metric=run.best_psnr, config=run.config_dict, wandb_run_id=logger.run_id,
                                extra={"input_spec": run.input_spec.to_dict()}, rng_states=rng_states,
                                copies=copies)
    barrier()


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
