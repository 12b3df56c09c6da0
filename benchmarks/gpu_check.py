"""The run on a GPU: one command, at most 8 minutes, that measures what the CPU cannot show.

Run from the repository root (``scripts/gpu_check.sh`` sets up the environment and calls this)::

    bash scripts/gpu_check.sh                            # on the GPU machine: every part, real sizes
    bash scripts/gpu_check.sh --device cpu --tiny        # the CPU rehearsal (tests/test_gpu_check.py), ~1 min
    bash scripts/gpu_check.sh --parts milestone1,profile # some parts only
    bash scripts/gpu_check.sh --batch-sizes 2,8,16,32 --override trainer.ema_decay=0.999

Parts, in this order, each in a fresh process group with its own time limit (``TIMEOUT_S``; a part that fails or
times out is recorded as such and the next one runs; the run starts no part with less than half its limit left of
``--budget-s``). Seconds: what a part took on an NVIDIA H200 (benchmarks/results/gpu_check_nvidia_h200.md) where
that run had it, else an estimate from the step counts:

a. ``gpu_tests`` (~15 s): ``python -m pytest -q -m gpu``.
b. ``milestone1`` (~60 s, most of it start-up, the first steps' cuDNN autotuning and the FLOP count): the
   milestone-1 recipe (conf/experiment/milestone1.yaml: hybrid CNN-ViT, base 32, 64^3 volume, two 512^2 views,
   batch 2, bf16, the six-part loss, AdamW, clipping) through the trainer's own ``TrainStep``; 3 warm-up steps,
   then 3 timed repeats of 15 steps.
c. ``milestone1_batches`` (~40 s per batch size): milestone 1 at each of ``--batch-sizes`` (default 2, 8, 16; the
   recipe's batch is part b's row): samples/s and peak memory per batch; an out-of-memory error is a row.
d. ``profile`` (~40 s per batch size, estimate): ``benchmarks/profile_step.py`` over one milestone-1 step at
   ``--profile-batch-sizes`` (default 2, 8): time by kernel class, the fraction of the step the GPU is busy.
e. ``cascade_128`` (conf/experiment/milestone2.yaml, 128^3, ~25 s) and ``c2rv_256`` (conf/experiment/c2rv.yaml,
   256^3, 8 cone-beam views, ~25 s): 3 timed repeats of 4 steps each; an out-of-memory error is a result.
f. ``drr`` (~50 s, more when peers must be installed): ``benchmarks/bench_drr.py --device cuda --quick --peers
   diffdrr,nanodrr`` (first installs the distributions the peers need that are missing: the peers, torchio and
   roma with ``pip install --no-deps``, then the light dependencies; torch pinned by a constraints file).
g. ``milestone1_compile`` (a cold inductor compile took more than 180 s, a warm one 60 s): part b with
   ``trainer.compile=true``; the first step (the compile) timed apart. Last of the one-GPU parts, so that a cold
   compile cannot crowd the others out of the budget; ``--parts milestone1_compile`` runs it alone.
h. ``ddp``: with 2+ GPUs, ``torchrun --nproc_per_node=2 train.py experiment=milestone1`` for 20 batches on a small
   phantom set prepared on the spot; samples/s from the run's metrics.jsonl.

What is measured and what is not:

- The training parts build the recipe as ``x2ct.engine.trainer.build_run`` does, with the engine's builders
  (``build_model``, ``build_criterion``, ``build_optimizer``,
  ``build_scheduler``, ``make_scaler``, ``wrap_for_training``, ``build_ema``) and time ``TrainStep``, the step
  the trainer runs: forward under the recipe's autocast, the loss in float32, backward, clipping, the optimizer
  (AdamW, fused where the device has the kernel) with its on-device skip of non-finite steps, the schedule, the
  EMA where the recipe has one (``--override trainer.ema_decay=0.999`` adds one). What a data set would decide
  (views, sizes, angles, geometry) comes from the recipe's ``data.prepare`` protocol.
- Inputs are random views and targets in [0, 1] made on the device, every voxel scanned: the model, loss and
  optimiser are measured, not data loading (part h includes it). The perceptual term uses a randomly initialised
  VGG16 (``weights: random``): the GPU machine has no internet for the ImageNet file, and the FLOPs are the same.
- Time: 3 repeats of N steps back to back, the host synchronised only at each repeat's ends (as the trainer
  runs); samples/s of the median repeat, with the slowest and fastest.
- Peak memory: ``first step`` over the first step alone (the optimizer's state appears and cuDNN autotunes, with
  workspaces it may not keep) and ``steady`` over the timed repeats, the peak reset after the warm-up; on CUDA
  ``torch.cuda.max_memory_allocated`` with weights included, on the CPU the rise of the peak resident set size
  (benchmarks/peak_memory.py). Milestone 1's memory goal is judged on the steady peak.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one ``TrainStep`` call on the uncompiled model (outside
  the timed loops), per sample, split into the model's forward + backward and each loss term (the perceptual
  term's VGG16 labelled so), and by the precision each counted operation ran in (bf16 under autocast; the loss's
  float32 convolutions as TF32 on CUDA, cuDNN's default). MFU = sum over the parts of FLOPs / the dense peak of
  their precision, times samples/s (``DATASHEET_PEAKS``, vendor datasheets).

Writes ``gpu_check_<gpu>.json`` and ``.md`` under ``--out`` (``<gpu>``: a slug of ``torch.cuda.get_device_name``,
``cpu`` on the CPU, ``_tiny`` appended for a tiny run on a GPU), and part d its ``profile_step_<gpu>.{json,md}``.
Exit status 1 if any part failed or timed out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import math
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from peak_memory import PeakMemory  # noqa: E402  (benchmarks/peak_memory.py)
from process_group import run_in_own_group  # noqa: E402  (benchmarks/process_group.py)

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402
from x2ct.config_files import compose_config  # noqa: E402

PARTS = ("gpu_tests", "milestone1", "milestone1_batches", "profile", "cascade_128", "c2rv_256", "drr",
         "milestone1_compile", "ddp")
# the most seconds each part may take (real sizes on a GPU; --tiny: TINY_TIMEOUT_S); the budget caps them all
# (milestone1_compile: a cold inductor compile of milestone 1 took more than 180 s on a 16-CPU H200 machine)
TIMEOUT_S = {"gpu_tests": 60, "milestone1": 75, "milestone1_batches": 150, "profile": 150, "cascade_128": 45,
             "c2rv_256": 60, "drr": 360, "milestone1_compile": 300, "ddp": 120}
TINY_TIMEOUT_S = 60
# 8 minutes on one GPU; a part starts only with at least START_FRACTION of its limit left in the budget, and gets
# what is left of the budget when that is less than its limit
BUDGET_S = 480.0
START_FRACTION = 0.5

# milestone 1's goals on one H100-class GPU, judged on the full-size bf16 run on CUDA only
GOAL_SAMPLES_PER_S = 10.0
GOAL_PEAK_MB = 10 * 1024  # 10 GB (GiB, as peak MB are 2^20 bytes)
GOAL_MFU = 0.40

# Dense peak TFLOPS (no sparsity) per precision from the vendors' datasheets (which print bf16, fp16 and tf32 with
# sparsity: halved here), matched on torch.cuda.get_device_name: (substrings that must all appear, substrings that
# must not, label, {precision: TFLOPS}, source). fp32: the CUDA cores (no tensor cores). "NVIDIA H100 80GB HBM3"
# is the SXM part; NVL variants have other peaks and are left unknown.
DATASHEET_PEAKS = (
    (("H100", "PCIe"), (), "H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
     "NVIDIA H100 Tensor Core GPU datasheet"),
    (("H100",), ("NVL",), "H100 SXM", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
     "NVIDIA H100 Tensor Core GPU datasheet"),
    (("H200",), ("NVL",), "H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
     "NVIDIA H200 Tensor Core GPU datasheet"),
    (("A100",), (), "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
     "NVIDIA A100 Tensor Core GPU datasheet"),
    (("L40S",), (), "L40S", {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6}, "NVIDIA L40S datasheet"),
    (("RTX 4090",), (), "RTX 4090", {"bf16": 165.0, "fp16": 165.0, "tf32": 82.6, "fp32": 82.6},
     "NVIDIA Ada Lovelace architecture whitepaper (tensor cores with FP32 accumulate)"),
)

# Training parts: the recipe (conf/experiment/<name>.yaml), its warm-up and timed steps per repeat, and, for --tiny,
# what shrinks it. Prepare overrides change the data the model is sized from (volume, views); train overrides change
# the model.
TRAINING_PARTS = {
    "milestone1": {"experiment": "milestone1", "compile": False, "warmup_steps": 3, "steps_per_repeat": 15},
    "milestone1_compile": {"experiment": "milestone1", "compile": True, "warmup_steps": 3, "steps_per_repeat": 15},
    "cascade_128": {"experiment": "milestone2", "compile": False, "warmup_steps": 3, "steps_per_repeat": 4},
    "c2rv_256": {"experiment": "c2rv", "compile": False, "warmup_steps": 3, "steps_per_repeat": 4},
}
REPEATS = 3  # timed repeats per case: samples/s of the median one, with the slowest and fastest
TINY_STEPS = {"warmup_steps": 1, "steps_per_repeat": 1}
SCHEDULE_STEPS = 10**6  # the schedule's length: past its warm-up, far from its end
BATCH_SIZES, TINY_BATCH_SIZES = (2, 8, 16), (2, 4)  # part c
SWEEP_SAMPLES = 32  # part c times at least this many samples per repeat (and 4 steps)
PROFILE_BATCH_SIZES, TINY_PROFILE_BATCH_SIZES = (2, 8), (2,)  # part d
TINY_HYBRID = ["model.base_channels=4", "model.depth=2", "model.channel_multipliers=[1,2,4]", "model.num_heads=2",
               "model.transformer_levels=[1]", "model.pyramid_channels=4", "model.pyramid_scales=2",
               "model.cross_view_grid=4", "model.cross_view_heads=2"]
TINY_COARSE = ["model.coarse_kwargs.base_channels=4", "model.coarse_kwargs.depth=1",
               "model.coarse_kwargs.channel_multipliers=[1,2]", "model.coarse_kwargs.num_heads=[2,2]",
               "model.coarse_kwargs.transformer_levels=[]", "+model.coarse_kwargs.pyramid_channels=4",
               "+model.coarse_kwargs.pyramid_scales=2", "+model.coarse_kwargs.cross_view_grid=4",
               "+model.coarse_kwargs.cross_view_heads=2", "model.refiner_channels=4"]
TINY_LOSS = ["loss.components.perceptual.slices_per_axis=2"]
TINY = {  # volume side, detector side, (train overrides)
    "milestone1": (16, 32, TINY_HYBRID),
    "milestone2": (16, 32, [*TINY_COARSE, "model.stage_sizes=[8,16]", "model.train_patch_size=12"]),
    "c2rv": (24, 32, [*TINY_COARSE, "model.stage_sizes=[6,12,24]", "model.train_patch_size=12",
                      "model.infer_patch_size=12"]),
}
# a small phantom set for the DDP part: 116 patients = 81 training ones, 20 batches of 2 on each of 2 ranks
DDP_PATIENTS, DDP_TINY_PATIENTS = 116, 5
DDP_PHANTOM = ["source.name=gpu_check", "source.shape=[64,64,64]", "source.spacing_mm=[5.5,5.5,5.5]"]
DDP_TINY_PHANTOM = ["source.name=gpu_check", "source.shape=[48,48,48]", "source.spacing_mm=[7.4,7.4,7.4]"]
# DRR peers for part e, as benchmarks/README.md installs them: these without their dependencies (which name torch),
# then the light dependencies, with torch pinned to the installed build either way
PEER_PACKAGES = ("diffdrr==0.6.1", "nanodrr==0.1.7")
PEER_NO_DEPS = ("torchio", "roma")
PEER_DEPENDENCIES = ("jaxtyping", "deprecated", "einops", "humanize", "rich", "simpleitk", "typer", "fastcore",
                     "seaborn", "imageio", "pandas", "platformdirs")
OUTPUT_TAIL_LINES = 30


# --- running a part ---------------------------------------------------------------------------------------------
def run_command(cmd: list[str], timeout_s: float, cwd: Path = REPO_ROOT, env: dict | None = None
                ) -> tuple[int | None, str, float]:
    """Run ``cmd`` in a process group of its own, killed whole at ``timeout_s`` (``process_group.py``). Returns
    (exit status or None on timeout, stdout + stderr, seconds)."""
    return run_in_own_group(cmd, timeout_s, cwd, env)


def tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def command_failure(returncode: int | None, output: str, timeout_s: float, what: str) -> dict:
    if returncode is None:
        return {"status": "timeout", "note": f"{what}: timed out after {timeout_s:.0f} s",
                "output_tail": tail(output)}
    last = output.strip().splitlines()[-1:] or ["(no output)"]
    return {"status": "failed", "note": f"{what}: exit status {returncode}: {last[0][:300]}",
            "output_tail": tail(output)}


def run_case_in_subprocess(spec: dict, timeout_s: float) -> dict:
    """``run_training_case(spec)`` in a fresh process (so that peaks never mix), as bench_models runs its cases."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--case", str(spec_path), "--case-out", str(out_path)]
        returncode, output, _ = run_command(cmd, timeout_s)
        if returncode == 0 and out_path.exists():
            return json.loads(out_path.read_text())
        if returncode is not None and "out of memory" in output.lower():  # an OOM the case could not catch
            return {"status": "oom", "note": "out of memory (process ended)", "output_tail": tail(output)}
        return command_failure(returncode, output, timeout_s, "training case")


# --- parts b-d and the batch sweep: the trainer's training step -------------------------------------------------
def tiny_prepare_overrides(volume: int, detector: int, detector_mm: float) -> list[str]:
    return [f"protocol.preprocess.size=[{volume},{volume},{volume}]",
            f"protocol.geometry.detector_shape=[{detector},{detector}]",
            f"protocol.geometry.pixel_spacing_mm=[{detector_mm / detector},{detector_mm / detector}]"]


def training_spec(part: str, device: str, tiny: bool, steps: int | None = None, batch: int | None = None,
                  overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """What ``run_training_case`` needs: the recipe's train config composed as ``train.py`` composes it (on
    ``device``, at ``batch`` if given, then ``overrides``), resolved, with what ``fill_model_config`` records from a
    data set taken from the recipe's ``data.prepare`` protocol instead (views, sizes, angles, geometry, field of
    view), and the step counts of the part."""
    from omegaconf import OmegaConf, open_dict

    from x2ct.data.prepare import load_prepare_config, protocol_geometry
    from x2ct.engine.build import fill_geometry, match_deep_supervision
    from x2ct.physics.geometry import angles_for_views

    recipe = TRAINING_PARTS[part]
    experiment = recipe["experiment"]
    train_overrides = [f"experiment={experiment}", "loss.components.perceptual.weights=random",
                       f"trainer.accelerator={device}"]
    if recipe["compile"]:
        # the CPU rehearsal captures graphs with Dynamo but skips inductor's code generation (minutes on 2 cores)
        backend = "eager" if tiny and device == "cpu" else "inductor"
        train_overrides += ["trainer.compile=true", f"trainer.compile_backend={backend}"]
    if batch is not None:
        train_overrides.append(f"data.batch_size={batch}")
    if tiny:
        train_overrides += [*TINY[experiment][2], *TINY_LOSS]
    cfg = compose_config("train", [*train_overrides, *overrides])
    prepare_overrides = list(cfg.data.prepare)
    if tiny:
        volume, detector, _ = TINY[experiment]
        full = load_prepare_config(compose_config("prepare", prepare_overrides)).protocol.geometry
        detector_mm = full.detector_shape[0] * full.pixel_spacing_mm[0]
        prepare_overrides += tiny_prepare_overrides(volume, detector, detector_mm)
    protocol = load_prepare_config(compose_config("prepare", prepare_overrides)).protocol
    geometry, _ = protocol_geometry(protocol)
    data = cfg.data
    angles = (list(angles_for_views(list(data.views))) if data.views is not None
              else [180.0 * k / data.num_views for k in range(data.num_views)])  # evenly_spread_views' angles
    view_size = int((protocol.view_size or geometry.detector_shape)[-1])
    volume_size = int(protocol.preprocess.size[-1])
    # the part of a data set's input_spec() that the protocol gives (components that compare with the views, such
    # as the projection term, read more: none of the recipes measured here weighs them)
    input_spec = {"angles_deg": angles, "view_shape": [view_size, view_size], "ct_size": [volume_size] * 3,
                  "ct_fov_mm": [float(v) for v in protocol.preprocess.fov_mm],
                  "geometry": geometry.with_angles(angles).to_dict()}
    with open_dict(cfg):  # as fill_model_config records them from a data set
        cfg.model.num_views, cfg.model.view_size, cfg.model.volume_size = len(angles), view_size, volume_size
        cfg.model.view_angles_deg = angles
        fill_geometry(cfg.model, geometry.with_angles(angles), protocol.preprocess.fov_mm)
        match_deep_supervision(cfg.model, float(cfg.loss.weights.get("deep_supervision", 0.0)))
    counts = TINY_STEPS if tiny else recipe
    return {
        "kind": "training", "part": part, "experiment": experiment, "device": device,
        "config": OmegaConf.to_container(cfg, resolve=True), "input_spec": input_spec,
        "batch": int(cfg.data.batch_size), "views": len(angles), "view_size": view_size, "volume_size": volume_size,
        "warmup_steps": counts["warmup_steps"], "steps_per_repeat": steps or counts["steps_per_repeat"],
        # the rehearsal times every repeat whatever the machine's load; real sizes stop at the budget after one
        "repeats": REPEATS, "min_repeats": REPEATS if tiny else 1, "count_flops": True,
    }


def random_micro_batches(spec: dict, batch: int, device) -> list[dict]:
    """One accumulation group of batches as the data loader hands them to ``TrainStep``: views ``(B, V, 1, H, W)``
    and target ``(B, 1, D, H, W)`` in [0, 1] (made on ``device``: data loading is not measured), every voxel scanned
    (a phantom set's mask), the views' angles ``(B, V)`` on the host."""
    import torch

    v, s, d = spec["views"], spec["view_size"], spec["volume_size"]
    angles = torch.tensor(spec["input_spec"]["angles_deg"], dtype=torch.float32).expand(batch, v)
    return [{"views": torch.rand(batch, v, 1, s, s, device=device), "ct": torch.rand(batch, 1, d, d, d, device=device),
             "scanned": torch.ones(batch, 1, d, d, d, dtype=torch.bool, device=device), "angles_deg": angles}
            for _ in range(int(spec["config"]["trainer"]["accumulate_grad_batches"]))]


@dataclass
class TrainingSetup:
    """The trainer's model, loss and step as ``build_run`` builds them, and a random accumulation group to feed.
    ``flop_step`` is the same step on the uncompiled model (FLOPs do not depend on the compiler)."""

    device: Any
    precision: Any
    model: Any
    criterion: Any
    step: Any
    flop_step: Any
    micro_batches: list[dict]

    @property
    def samples(self) -> int:
        return sum(len(batch["ct"]) for batch in self.micro_batches)

    def run_step(self) -> None:
        self.step(self.micro_batches)

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def build_training(spec: dict) -> TrainingSetup:
    """Model, loss, optimizer, schedule, scaler, wrapper (``torch.compile``), EMA and ``TrainStep`` in the order and
    with the builders of ``x2ct.engine.trainer.build_run`` (one process, no DDP), from the spec's config."""
    import torch
    from omegaconf import OmegaConf

    from x2ct.engine import build
    from x2ct.engine.distributed import DistInfo
    from x2ct.engine.precision import make_scaler, resolve_device, resolve_precision
    from x2ct.engine.seeding import seed_everything, set_deterministic
    from x2ct.engine.step import TrainStep

    cfg = OmegaConf.create(spec["config"])
    dist = DistInfo()
    device = resolve_device(cfg.trainer.accelerator, dist)
    precision = resolve_precision(cfg.trainer.precision, device)
    set_deterministic(cfg.trainer.deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
    seed_everything(cfg.seed)
    n = spec["volume_size"]
    model = build.build_model(cfg, device, torch.full((1, n, n, n), 0.5))  # a template model starts from this "mean CT"
    build.check_view_dropout_minimum(cfg.data, model)
    # no recipe measured here weighs a term that compares with the views (projection, which needs the full input
    # spec); one that did would say so at its first step
    criterion = build.build_criterion(cfg.loss, None, device)
    optimizer = build.build_optimizer(cfg.optimizer, model, device)
    scheduler = build.build_scheduler(cfg, optimizer, SCHEDULE_STEPS, dist)
    scaler = make_scaler(precision, device)
    seed_everything(cfg.seed, rank=dist.rank)
    trainer = cfg.trainer
    compile_loss, compile_mode = bool(trainer.get("compile_loss", False)), trainer.get("compile_mode")
    # with compile_loss the model is compiled inside the one graph of model and loss, not on its own
    train_model = build.wrap_for_training(model, dist, device, trainer.compile and not compile_loss,
                                    trainer.compile_backend, compile_mode)
    forward_and_loss = None
    if compile_loss:
        from x2ct.engine.build import compile_forward_and_loss

        forward_and_loss = compile_forward_and_loss(train_model, criterion, device, precision,
                                                    trainer.compile_backend, compile_mode)
    ema = build.build_ema(model, trainer.ema_decay)
    step = TrainStep(model, train_model, criterion, optimizer, scheduler, scaler, ema, device, precision,
                     trainer.grad_clip_norm, dist.world_size, forward_and_loss=forward_and_loss)
    flop_step = step if train_model is model and forward_and_loss is None else TrainStep(
        model, model, criterion, optimizer, scheduler, scaler, ema, device, precision, trainer.grad_clip_norm,
        dist.world_size)
    train_model.train()
    return TrainingSetup(device, precision, model, criterion, step, flop_step,
                         random_micro_batches(spec, spec["batch"], device))


def run_training_case(spec: dict, budget_s: float) -> dict:
    """In this (fresh) process: the first step (its peak memory apart), the rest of the warm-up, then ``repeats``
    timed loops of ``steps_per_repeat`` steps each (the host synchronised only at a loop's ends, as the trainer
    runs), their steady peak memory, then one step's FLOPs. The timed loops stop after the one that passes
    ``budget_s`` from the start (once ``min_repeats`` are timed), whatever the compiler took; an out-of-memory error
    is a result."""
    case_start = time.perf_counter()
    import torch

    from x2ct.models import count_parameters

    torch.manual_seed(0)
    setup = build_training(spec)
    trainer = spec["config"]["trainer"]
    optimizer = setup.step.optimizer
    result = {"parameters": count_parameters(setup.model), "batch": spec["batch"], "views": spec["views"],
              "view_size": spec["view_size"], "volume_size": spec["volume_size"], "samples_per_step": setup.samples,
              "precision": setup.precision.name, "compile": trainer["compile"] and trainer["compile_backend"],
              "compile_mode": trainer.get("compile_mode"), "compile_loss": trainer.get("compile_loss"),
              "memory_format": trainer.get("memory_format"),
              "step": "x2ct.engine.step.TrainStep", "ema_decay": trainer["ema_decay"],
              "grad_clip_norm": trainer["grad_clip_norm"],
              "optimizer": type(optimizer).__name__ + (" (fused)" if optimizer.defaults.get("fused") else "")}
    phase, rates = "first step", []
    peak = PeakMemory(setup.device, include_existing=True)  # CUDA: weights, optimizer state, activations, gradients
    try:
        peak.start()
        start = time.perf_counter()
        setup.run_step()
        setup.sync()
        result["first_step_s"] = time.perf_counter() - start
        result["first_step_peak_mb"] = peak.peak_mb()
        if trainer["compile"]:  # compiling forward and backward happens in the first step
            result["compile_s"] = result["first_step_s"]
        phase = "warm-up"
        for _ in range(spec["warmup_steps"] - 1):
            setup.run_step()
        setup.sync()
        result["warmup_s"] = time.perf_counter() - start
        phase = "timed steps"
        peak = PeakMemory(setup.device, include_existing=True)  # the steady state, after the warm-up
        peak.start()
        deadline = case_start + budget_s
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            for _ in range(spec["steps_per_repeat"]):
                setup.run_step()
            setup.sync()
            rates.append(setup.samples * spec["steps_per_repeat"] / (time.perf_counter() - start))
            if len(rates) >= spec["min_repeats"] and time.perf_counter() > deadline:
                break
        result["steady_peak_mb"] = peak.peak_mb()
        window = setup.step.read_window()
        phase = "FLOP count"
        if spec["count_flops"]:
            result.update(count_step_flops(setup))
    except torch.OutOfMemoryError as err:  # a result, not a crash: how far it got and what it had taken
        result.update(status="oom", phase=phase, peak_mb=peak.peak_mb(), repeats_timed=len(rates),
                      note=f"out of memory in the {phase}: " + str(err).strip().splitlines()[0][:200])
        return result
    if trainer["compile"]:
        from torch._dynamo.utils import counters

        result["graph_breaks"] = sum(counters["graph_break"].values())
    median = statistics.median(rates)
    result.update(samples_per_s=median, samples_per_s_min=min(rates), samples_per_s_max=max(rates),
                  samples_per_s_repeats=rates, seconds_per_step=setup.samples / median,
                  steps_per_repeat=spec["steps_per_repeat"], repeats_timed=len(rates), memory_method=peak.method,
                  loss=window["loss"], skipped_nonfinite=window["skipped_nonfinite"], status="ok")
    if len(rates) < spec["repeats"]:
        result["note"] = f"{len(rates)} of {spec['repeats']} timed repeats within the case's {budget_s:.0f} s"
    return result


# --- FLOPs by part and precision ---------------------------------------------------------------------------------
def count_step_flops(setup: TrainingSetup) -> dict:
    """FLOPs of one ``TrainStep`` call (``FlopCounterMode``), split by part (the model's forward and backward, each
    loss term's, the criterion's own, anything else) and by the precision each counted operation computed in. The
    parts add up to the total by construction: every counted operation is recorded once, under one part.

    A forward operation belongs to the innermost of the model, the criterion and its terms that is running (module
    hooks keep that stack); a backward one to the part whose forward made the autograd node running it (the hooks
    tag the nodes). ``FlopCounterMode``'s own module tracking cannot say that in backward: a term stays among its
    ``parents`` until the gradient of the input every term shares is complete, after every term's backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    running: list[str] = []
    split: dict[tuple[str, str], int] = {}

    def recording(op, formula):
        def count(*args, out_val=None, **kwargs):
            flops = formula(*args, out_val=out_val, **kwargs)
            node = torch._C._current_autograd_node()  # in backward: the node being run
            part = (node.metadata.get(FLOP_PART_KEY, "outside") if node is not None
                    else running[-1] if running else "outside")
            key = (part, compute_precision(str(op), args, setup.device))
            split[key] = split.get(key, 0) + flops
            return flops

        count._get_raw = True  # FlopCounterMode hands the tensors themselves, not their shapes
        return count

    def enter(part: str):
        return lambda module, args: running.append(part)

    def leave(part: str):
        def hook(module, args, output) -> None:
            running.pop()
            tag_backward_nodes(output, part)

        return hook

    parts = [(setup.model, "model"), (setup.criterion, "loss"),
             *((component, name) for name, component in setup.criterion.components.items())]
    hooks = [hook for module, part in parts
             for hook in (module.register_forward_pre_hook(enter(part)), module.register_forward_hook(leave(part)))]
    counter = FlopCounterMode(display=False, custom_mapping={op: recording(op, formula)
                                                             for op, formula in flop_registry.items()})
    try:
        with counter:
            setup.flop_step(setup.micro_batches)
        setup.sync()
    finally:
        for hook in hooks:
            hook.remove()
    per_sample = 1e9 * setup.samples
    order = {"model": 0, "outside": 2}
    rows = [{"part": part, "label": flop_part_label(part), "precision": precision,
             "gflops_per_sample": flops / per_sample}
            for (part, precision), flops in sorted(split.items(), key=lambda kv: (order.get(kv[0][0], 1), kv[0]))]
    counted = {part for part, _ in split}
    return {"gflops_per_sample": counter.get_total_flops() / per_sample,
            "loss_gflops_per_sample": sum(r["gflops_per_sample"] for r in rows if is_loss_part(r["part"])),
            "flops_split": rows,
            # FlopCounterMode counts matrix products, convolutions and attention: FFTs, pooling, norms and
            # elementwise work count 0
            "terms_without_counted_flops": [name for name in setup.criterion.components if name not in counted]}


FLOP_PART_KEY = "x2ct_flop_part"


def tag_backward_nodes(output, part: str) -> None:
    """Tag the autograd nodes behind ``output`` (a module's output: tensors, lists, dicts) with ``part``, down to
    nodes tagged before: the nodes a module's forward made, when modules are tagged as their forward ends."""
    import torch
    from torch.utils._pytree import tree_leaves

    stack = [t.grad_fn for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or FLOP_PART_KEY in node.metadata:
            continue
        node.metadata[FLOP_PART_KEY] = part
        stack.extend(next_node for next_node, _ in node.next_functions)


def is_loss_part(part: str) -> bool:
    return part not in ("model", "outside")


def flop_part_label(part: str) -> str:
    if part == "model":
        return "model forward + backward"
    if part == "outside":
        return "outside the model and the loss"
    if part == "loss":
        return "loss: combining the terms"
    return f"loss: {part}" + (" (VGG16 features)" if part == "perceptual" else "") + " forward + backward"


def compute_precision(op_name: str, args, device) -> str:
    """The precision a counted operation ran in: its first floating-point input's dtype (after autocast's casts),
    float32 named ``tf32`` on CUDA where PyTorch lets that operation use TF32 tensor cores (cuDNN convolutions by
    default, ``torch.backends.cudnn.allow_tf32``; matrix products only with ``set_float32_matmul_precision``)."""
    import torch
    from torch.utils._pytree import tree_leaves

    dtype = next((a.dtype for a in tree_leaves(args) if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    if dtype == torch.float32 and device.type == "cuda":
        conv = "conv" in op_name
        tf32 = torch.backends.cudnn.allow_tf32 if conv else torch.get_float32_matmul_precision() != "highest"
        return "tf32" if tf32 else "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64"}.get(
        dtype, str(dtype))


def datasheet_peaks(device_name: str) -> tuple[str, dict[str, float], str] | None:
    """(label, dense peak FLOP/s per precision, source) of a GPU by its name, or None if it is not on file."""
    for required, excluded, label, tflops, source in DATASHEET_PEAKS:
        if all(k in device_name for k in required) and not any(k in device_name for k in excluded):
            return label, {precision: value * 1e12 for precision, value in tflops.items()}, source
    return None


def bf16_peak(device_name: str) -> tuple[str, float] | None:
    """(label, dense bf16 peak FLOP/s) of a GPU by its name, or None if it is not on file."""
    peaks = datasheet_peaks(device_name)
    return None if peaks is None else (peaks[0], peaks[1]["bf16"])


def mfu_of(flops_split: list[dict], samples_per_s: float, device_name: str | None) -> tuple[float | None, str]:
    """Model FLOPs utilisation of a step: the time its counted FLOPs would take at the dense peak of the
    precision each ran in, over the time it took, ``sum(FLOPs_k / peak_k) * samples/s``; each row of
    ``flops_split`` gets its own share (``mfu_share``, summing to the total) and the peak it was divided by. Rows
    in a precision with no peak on file (float64 geometry in some models) are left out, and the note says how
    many FLOPs that leaves out."""
    if device_name is None:
        return None, "not on a GPU: no datasheet peak to compare with"
    peaks = datasheet_peaks(device_name)
    if peaks is None:
        return None, f"no datasheet peaks on file for {device_name!r} (DATASHEET_PEAKS)"
    label, per_precision, source = peaks
    counted = [row for row in flops_split if row["precision"] in per_precision]
    if not counted:
        return None, f"no {label} peak on file for {', '.join(sorted({r['precision'] for r in flops_split}))}"
    for row in counted:
        row["peak_tflops"] = per_precision[row["precision"]] / 1e12
        row["mfu_share"] = row["gflops_per_sample"] * 1e9 * samples_per_s / per_precision[row["precision"]]
    used = sorted({row["precision"] for row in counted})
    note = (f"over the {label} dense peak of each part's precision ("
            + ", ".join(f"{p} {per_precision[p] / 1e12:g} TFLOPS" for p in used) + f"; {source})")
    left_out = [row for row in flops_split if row["precision"] not in per_precision]
    if left_out:
        gflops = sum(row["gflops_per_sample"] for row in left_out)
        total = sum(row["gflops_per_sample"] for row in flops_split)
        note += (f"; left out: {gflops:.3g} GFLOP/sample ({100 * gflops / total:.2g}% of the count) in "
                 f"{', '.join(sorted({row['precision'] for row in left_out}))}, no peak on file")
    return sum(row["mfu_share"] for row in counted), note


def part_training(name: str, ctx: dict, timeout_s: float) -> dict:
    spec = training_spec(name, ctx["device"], ctx["tiny"], ctx["steps"] if name.startswith("milestone1") else None,
                         overrides=ctx["overrides"])
    spec["budget_s"] = 0.7 * timeout_s  # timed repeats stop here (once min_repeats are timed), before the kill
    result = run_case_in_subprocess(spec, timeout_s)
    result.setdefault("experiment", spec["experiment"])
    if result.get("status") == "ok":
        result["mfu"], result["mfu_note"] = mfu_of(result["flops_split"], result["samples_per_s"],
                                                   ctx["device_name"] if ctx["device"] == "cuda" else None)
    return result


def sweep_steps(batch: int, tiny: bool) -> int:
    """Timed steps per repeat at ``batch`` in the sweep: at least SWEEP_SAMPLES samples per repeat."""
    return TINY_STEPS["steps_per_repeat"] if tiny else max(4, math.ceil(SWEEP_SAMPLES / batch))


def part_batch_sweep(ctx: dict, timeout_s: float) -> dict:
    """Milestone 1 at each of ``--batch-sizes`` on one device, each in a fresh process: samples/s, steady and
    first-step peak, MFU with part b's FLOPs per sample (they do not depend on the batch); an out-of-memory error
    is a row. The recipe's own batch is part b's row when part b ran."""
    deadline = time.perf_counter() + timeout_s
    reference = ctx["parts"].get("milestone1", {})
    reused = reference.get("status") == "ok" and reference.get("batch") in ctx["batch_sizes"]
    to_run = [b for b in ctx["batch_sizes"] if not (reused and b == reference["batch"])]
    flops_split = reference.get("flops_split") if reference.get("status") == "ok" else None
    rows = []
    for batch in ctx["batch_sizes"]:
        if reused and batch == reference["batch"]:
            result, source = reference, "part milestone1"
        else:
            case_timeout = (deadline - time.perf_counter()) / len(to_run)
            to_run.remove(batch)
            if case_timeout < 5:
                rows.append({"batch": batch, "status": "skipped", "note": "skipped: the part's time is spent"})
                continue
            steps = ctx["steps"] or sweep_steps(batch, ctx["tiny"])
            spec = training_spec("milestone1", ctx["device"], ctx["tiny"], steps, batch=batch,
                                 overrides=ctx["overrides"])
            spec.update(count_flops=False, budget_s=0.7 * case_timeout)
            result, source = run_case_in_subprocess(spec, case_timeout), "this part"
        row = {"batch": batch, "source": source, "status": result.get("status"), "note": result.get("note", "")}
        for key in ("samples_per_s", "samples_per_s_min", "samples_per_s_max", "steady_peak_mb", "first_step_peak_mb",
                    "peak_mb", "phase"):
            if result.get(key) is not None:
                row[key] = result[key]
        if row["status"] == "ok" and flops_split is not None:
            row["mfu"], _ = mfu_of([dict(r) for r in flops_split], row["samples_per_s"],
                                   ctx["device_name"] if ctx["device"] == "cuda" else None)
        rows.append(row)
    bad = [f"batch {r['batch']}: {r['status']}" for r in rows if r["status"] not in ("ok", "oom")]
    fastest = max((r for r in rows if r["status"] == "ok"), key=lambda r: r["samples_per_s"], default=None)
    result = {"status": "failed" if bad else "ok", "rows": rows, "batch_sizes": list(ctx["batch_sizes"]),
              "note": "; ".join(bad) if bad else (f"fastest: batch {fastest['batch']}" if fastest else "")}
    if fastest is not None:
        result.update(samples_per_s=fastest["samples_per_s"], best_batch=fastest["batch"])
    return result


# --- the profile of one step -------------------------------------------------------------------------------------
def part_profile(ctx: dict, timeout_s: float) -> dict:
    """``benchmarks/profile_step.py`` on milestone 1 at ``--profile-batch-sizes``: time by kernel class and the
    fraction of the step the device is busy (tiny: its report in a temporary folder)."""
    from profile_step import report_stem

    script = str(REPO_ROOT / "benchmarks" / "profile_step.py")
    with tempfile.TemporaryDirectory(prefix="gpu_check_profile_") as tmp:
        out = Path(tmp) if ctx["tiny"] else ctx["out"]
        args = ["--device", ctx["device"], "--batch-sizes", ",".join(str(b) for b in ctx["profile_batch_sizes"]),
                "--out", str(out), *(["--tiny"] if ctx["tiny"] else []),
                *[arg for override in ctx["overrides"] for arg in ("--override", override)]]
        returncode, output, seconds = run_command([sys.executable, script, *args], timeout_s)
        result = {"command": shlex.join(["benchmarks/profile_step.py", *args]), "seconds": seconds}
        if returncode != 0:
            return {**result, **command_failure(returncode, output, timeout_s, "profile_step.py")}
        path = out / f"{report_stem(ctx['device_name'], ctx['tiny'])}.json"
        report = json.loads(path.read_text())
    runs = [{key: run.get(key) for key in ("batch", "status", "note", "busy_fraction", "step_wall_ms",
                                           "device_time_ms", "classes_ms")} for run in report["runs"]]
    bad = [f"batch {r['batch']}: {r['status']}" for r in runs if r["status"] not in ("ok", "oom")]
    result.update(status="failed" if bad else "ok", runs=runs, note="; ".join(bad))
    if not ctx["tiny"]:
        result["report"] = str(path)
    return result


# --- part a: the gpu tests --------------------------------------------------------------------------------------
def part_gpu_tests(ctx: dict, timeout_s: float) -> dict:
    if ctx["device"] != "cuda":
        return {"status": "skipped", "note": "skipped: no CUDA"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    returncode, output, seconds = run_command(cmd, timeout_s)
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}
    result = {"command": shlex.join(cmd[1:]), "seconds": seconds, **counts}
    if returncode != 0:
        return {**result, **command_failure(returncode, output, timeout_s, "pytest -m gpu")}
    return {**result, "status": "ok", "note": tail(output, 1)}


# --- part e: the DRR benchmark against its peers ----------------------------------------------------------------
def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (by its distribution name, which need not be its module's: simpleitk
    installs SimpleITK), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_distributions(requirements) -> list[str]:
    """The requirements (``name`` or ``name==version``) whose distribution is not installed at that version."""
    missing = []
    for requirement in requirements:
        name, _, pinned = requirement.partition("==")
        version = installed_version(name)
        if version is None or (pinned and version != pinned):
            missing.append(requirement)
    return missing


def install_peers(ctx: dict, timeout_s: float) -> str:
    """Install what the DRR peers need and is missing beside the torch that is here (a constraints file pins it):
    every distribution of PEER_PACKAGES, PEER_NO_DEPS and PEER_DEPENDENCIES is checked, not only the peers."""
    import torch

    no_deps = missing_distributions((*PEER_PACKAGES, *PEER_NO_DEPS))
    with_deps = missing_distributions(PEER_DEPENDENCIES)
    missing = [*no_deps, *with_deps]
    if not missing:
        return "peers already installed"
    source = ["--no-index", "--find-links", str(ctx["wheelhouse"])] if ctx["wheelhouse"] else []
    deadline = time.perf_counter() + timeout_s
    failed, last_error = [], ""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"torch=={torch.__version__}\n")
        constraints = f.name
    try:
        pip = [sys.executable, "-m", "pip", "install", "-q", *source, "-c", constraints]

        def install(args: list[str], names: list[str], seconds: float) -> bool:
            nonlocal last_error
            returncode, output, _ = run_command([*pip, *args, *names], max(seconds, 1.0))
            if returncode != 0:
                last_error = ("timed out" if returncode is None
                              else tail(output, 1)[:200] or f"exit status {returncode}")
            return returncode == 0

        if no_deps and not install(["--no-deps"], no_deps, timeout_s / 2):
            failed += no_deps
        if with_deps and not install([], with_deps, min(timeout_s / 2, deadline - time.perf_counter())):
            # pip installs all or nothing: one at a time, so that one missing wheel does not keep out the others
            failed += [name for name in with_deps if not install([], [name], deadline - time.perf_counter())]
    finally:
        os.unlink(constraints)
    importlib.invalidate_caches()
    installed = [name for name in missing if name not in failed]
    if failed:
        done = f"; installed {' '.join(installed)}" if installed else ""
        return f"installing {' '.join(failed)} failed ({last_error}){done}; the benchmark runs without what is missing"
    return f"installed {' '.join(installed)} (torch pinned)"


def part_drr(ctx: dict, timeout_s: float) -> dict:
    deadline = time.perf_counter() + timeout_s
    script = str(REPO_ROOT / "benchmarks" / "bench_drr.py")
    with tempfile.TemporaryDirectory(prefix="gpu_check_drr_") as tmp:
        if ctx["tiny"]:  # the rehearsal: the projector alone on a small case, results in a temporary folder
            out = Path(tmp)
            args = ["--device", ctx["device"], "--quick", "--no-peer", "--sizes", "16", "--detectors", "32",
                    "--views", "2", "--repeats", "1", "--min-repeats", "1", "--out", str(out)]
            notes = ["tiny: x2ct alone at 16^3 x 32^2, no peers"]
        else:
            out = ctx["out"]
            notes = [install_peers(ctx, 0.4 * timeout_s)] if ctx["device"] == "cuda" else []
            peers = ["--peers", "diffdrr,nanodrr"]
            _, help_text, _ = run_command([sys.executable, script, "--help"], 60)
            if "--peers" not in help_text:
                peers = []
                notes.append("bench_drr.py has no --peers option yet: its default peer only")
            args = ["--device", ctx["device"], "--quick", *peers, "--out", str(out)]
        cmd = [sys.executable, script, *args]
        remaining = deadline - time.perf_counter()
        returncode, output, seconds = run_command(cmd, remaining)
        result = {"command": shlex.join(["benchmarks/bench_drr.py", *args]), "seconds": seconds}
        if returncode != 0:
            return {**result, **command_failure(returncode, output, remaining, "bench_drr.py"),
                    "note_install": "; ".join(notes)}
        report_path = out / f"drr_{ctx['device']}_quick.json"
        report = json.loads(report_path.read_text())
    result.update(status="ok", note="; ".join(notes), summary=drr_summary(report))
    if not ctx["tiny"]:
        result["report"] = str(report_path)
    return result


def drr_summary(report: dict) -> dict:
    """Per case, x2ct's headline figure and every engine's median time relative to x2ct (plan cached) and to
    nanodrr, forward and forward + backward, from a bench_drr.py report (``cases[i]["runs"]``, one entry per engine,
    plan and mode)."""
    cases = []
    for c in report.get("cases", []):
        if c.get("status") != "ok":
            continue
        runs = [{key: run.get(key) for key in ("engine", "plan", "mode", "status", "seconds_median",
                                               "time_ratio_vs_x2ct", "time_ratio_vs_nanodrr", "time_ratio_vs_forward")}
                | ({} if run.get("status") == "ok" else {"note": run.get("note")})
                for run in c.get("runs", [])]
        cases.append({"volume": c["volume_shape"][0], "detector": c["detector_shape"][0], "views": c["views"],
                      "batch": c.get("batch", 1), "seconds_per_call": c["seconds_per_call"],
                      "renders_per_s": c["renders_per_s"], "peak_mb": c["peak_memory_mb"], "runs": runs})
    return {"cases": cases}


# --- part f: 2-rank DDP ----------------------------------------------------------------------------------------
def part_ddp(ctx: dict, timeout_s: float) -> dict:
    cpu_ranks = ctx["device"] == "cpu" and ctx["ddp_on_cpu"]
    if ctx["device"] != "cuda" and not cpu_ranks:
        return {"status": "skipped", "note": "skipped: no CUDA"}
    if ctx["device"] == "cuda" and ctx["gpu_count"] < 2:
        return {"status": "skipped", "note": f"skipped: {ctx['gpu_count']} GPU"}
    from x2ct.engine.metrics_log import read_metrics

    deadline = time.perf_counter() + timeout_s
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("X2CT_RUN_STAMP", None)  # one run folder for this run's ranks, not an inherited one
    cfg = compose_config("train", ["experiment=milestone1"])
    with tempfile.TemporaryDirectory(prefix="gpu_check_ddp_") as tmp:
        data = Path(tmp) / "data"
        prepare = [*cfg.data.prepare, f"output_dir={data}", "workers=0"]
        model = []
        if ctx["tiny"]:
            volume, detector, model = TINY["milestone1"]
            prepare += [*DDP_TINY_PHANTOM, f"source.num_patients={DDP_TINY_PATIENTS}",
                        *tiny_prepare_overrides(volume, detector, 512.0)]
            model = [*model, *TINY_LOSS]
        else:
            prepare += [*DDP_PHANTOM, f"source.num_patients={DDP_PATIENTS}"]
        cmd = [sys.executable, str(REPO_ROOT / "prepare.py"), *prepare]
        returncode, output, prepare_s = run_command(cmd, deadline - time.perf_counter(), cwd=Path(tmp), env=env)
        if returncode != 0:
            return command_failure(returncode, output, timeout_s, "prepare.py")
        out = Path(tmp) / "out"
        train = ["experiment=milestone1", f"data.root={data}", "data.prepare=null", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=20", "trainer.limit_val_batches=1", "trainer.log_every_steps=5",
                 "test_after_training=false", "logger=none", "run_name=ddp", f"paths.output_dir={out}",
                 "loss.components.perceptual.weights=random", "data.num_workers=2", *model]
        if cpu_ranks:
            train.append("trainer.accelerator=cpu")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO_ROOT / "train.py"), *train]
        remaining = deadline - time.perf_counter()
        returncode, output, seconds = run_command(cmd, remaining, cwd=Path(tmp), env=env)
        result = {"command": "torchrun --standalone --nproc_per_node=2 train.py " + shlex.join(train[:8]) + " ...",
                  "backend": "gloo (CPU ranks)" if cpu_ranks else "nccl", "prepare_s": prepare_s, "seconds": seconds}
        if returncode != 0:
            return {**result, **command_failure(returncode, output, remaining, "torchrun")}
        rows = [r for r in read_metrics(out / "runs" / "ddp" / "metrics.jsonl")
                if r.get("split") == "train" and r.get("samples_per_s")]
    if not rows:
        return {**result, "status": "failed", "note": "metrics.jsonl has no train rows with samples_per_s"}
    rates = [r["samples_per_s"] for r in rows]
    timed = rates[1:] or rates  # the first window holds the warm-up
    result.update(status="ok", samples_per_s=statistics.median(timed), samples_per_s_logged=rates,
                  note="samples/s of both ranks together (trainer's log windows after the first), data loading "
                       "included")
    return result


# --- the run ----------------------------------------------------------------------------------------------------
def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_part(name: str, ctx: dict, deadline: float) -> dict:
    remaining = deadline - time.perf_counter()
    limit = TINY_TIMEOUT_S if ctx["tiny"] else TIMEOUT_S[name]
    if remaining < max(5.0, START_FRACTION * limit):
        return {"status": "skipped", "note": f"skipped: {max(remaining, 0):.0f} s left of the {ctx['budget_s']:.0f} s "
                                             f"budget, the part takes up to {limit} s"}
    timeout_s = min(limit, remaining)
    print(f"[gpu_check] {name} (up to {timeout_s:.0f} s) ...", flush=True)
    start = time.perf_counter()
    try:
        if name in TRAINING_PARTS:
            result = part_training(name, ctx, timeout_s)
        else:
            result = {"gpu_tests": part_gpu_tests, "milestone1_batches": part_batch_sweep, "profile": part_profile,
                      "drr": part_drr, "ddp": part_ddp}[name](ctx, timeout_s)
    except Exception as err:  # a part's own bug is its result; the next part still runs
        result = {"status": "failed", "note": f"{type(err).__name__}: {err}"[:400]}
    result["wall_s"] = time.perf_counter() - start
    print(f"[gpu_check] {name}: {result['status']} {result.get('note', '')}".rstrip(), flush=True)
    if result["status"] in ("failed", "timeout") and result.get("output_tail"):
        print(result["output_tail"], flush=True)
    return result


def goals(parts: dict, judged: bool) -> dict:
    """Milestone 1's goals against part b (bf16, one GPU, real size; memory: the steady peak); only judged there."""
    m1 = parts.get("milestone1", {})
    measured = {"samples_per_s": m1.get("samples_per_s"), "peak_mb": m1.get("steady_peak_mb"), "mfu": m1.get("mfu")}
    rows = {"samples_per_s": (">= 10 training samples/s", measured["samples_per_s"],
                              lambda x: x >= GOAL_SAMPLES_PER_S),
            "peak_mb": ("< 10 GB peak memory (steady)", measured["peak_mb"], lambda x: x < GOAL_PEAK_MB),
            "mfu": (">= 40% MFU", measured["mfu"], lambda x: x >= GOAL_MFU)}
    out = {}
    for key, (goal, value, test) in rows.items():
        passed = test(value) if judged and value is not None and m1.get("status") == "ok" else None
        out[key] = {"goal": goal, "measured": value, "pass": passed}
    return out


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _peaks(part: dict) -> str:
    """Steady / first-step peak MB (a report without the split: its one peak)."""
    if part.get("steady_peak_mb") is not None or part.get("first_step_peak_mb") is not None:
        return f"{_num(part.get('steady_peak_mb'), '.0f')} / {_num(part.get('first_step_peak_mb'), '.0f')}"
    return _num(part.get("peak_mb"), ".0f")


def _rate_range(part: dict) -> str:
    if part.get("samples_per_s_min") is None:
        return "-"
    return f"{part['samples_per_s_min']:.2f}-{part['samples_per_s_max']:.2f}"


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device_name']} ({report['created']})", "",
             f"- command: `{report['command']}`",
             f"- {provenance.describe(report)}",
             f"- CUDA {report['cuda']}, {report['gpu_count']} GPU(s); "
             f"{'tiny (rehearsal) sizes' if report['tiny'] else 'real sizes'}"
             f"; wall time {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget",
             "- training parts: the trainer's `TrainStep` built with the engine's builders (the recipe's precision, "
             "loss on scanned voxels, clipping, optimizer, schedule and EMA); random views and targets in [0, 1] on "
             "the device (data loading is not measured); perceptual term with a random VGG16 (`weights: random`); "
             "samples/s of the median of 3 timed repeats (range: slowest-fastest repeat); peak MB steady (reset "
             "after the warm-up) / first step",
             "- FLOPs: `FlopCounterMode` over one `TrainStep` call, per sample; MFU = sum over parts of FLOPs / the "
             "dense datasheet peak of the precision the part ran in, times samples/s", "",
             "| part | status | samples/s | range | peak MB steady / first | GFLOP/sample | MFU | seconds | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, part in report["parts"].items():
        note = part.get("note", "")
        if part.get("compile_s") is not None:
            note = (f"torch.compile ({part['compile']}) first step {part['compile_s']:.1f} s, "
                    f"{part.get('graph_breaks', '?')} graph breaks; " + note)
        if "volume_size" in part:
            loss_share = (f", {part['loss_gflops_per_sample']:.2f} GFLOP of them the loss's"
                          if part.get("loss_gflops_per_sample") is not None else "")
            ema = f", EMA {part['ema_decay']}" if part.get("ema_decay") else ""
            note = (f"{part['volume_size']}^3, {part['views']} x {part['view_size']}^2, batch {part['batch']}, "
                    f"{part['precision']}{ema}{loss_share}; " + note)
        if name == "drr" and part.get("summary"):
            peers = part["summary"].get("peers", {})  # reports written before bench_drr timed every engine per case
            note += "".join(f"; {k} {v['time_ratio_vs_x2ct']:.2f}x x2ct's time" for k, v in peers.items()
                            if v.get("time_ratio_vs_x2ct") is not None)
        lines.append(f"| {name} | {part['status']} | {_num(part.get('samples_per_s'), '.2f')} | "
                     f"{_rate_range(part)} | {_peaks(part)} | {_num(part.get('gflops_per_sample'), '.2f')} | "
                     f"{_percent(part.get('mfu'))} | {_num(part.get('wall_s'), '.0f')} | "
                     f"{note.strip('; ').replace('|', '/')} |")
    lines += flops_lines(report["parts"]) + sweep_lines(report["parts"].get("milestone1_batches", {}))
    lines += profile_lines(report["parts"].get("profile", {}))
    lines += ["", "Milestone 1's goals (bf16 on one H100-class GPU, real size; judged on CUDA full-size runs only):",
              "", "| goal | measured | pass |", "|---|---:|---|"]
    for key, goal in report["goals"].items():
        value = goal["measured"]
        shown = "-" if value is None else {"samples_per_s": f"{value:.2f} samples/s", "peak_mb": f"{value:.0f} MB",
                                           "mfu": f"{100 * value:.1f}%"}[key]
        verdict = {True: "pass", False: "FAIL", None: "not judged"}[goal["pass"]]
        lines.append(f"| {goal['goal']} | {shown} | {verdict} |")
    drr = report["parts"].get("drr", {}).get("summary")
    if drr:
        lines += ["", "DRR (bench_drr.py --quick): " + ", ".join(
            f"{c['volume']}^3 x {c['detector']}^2 x {c['views']}: {c['seconds_per_call']:.4f} s"
            for c in drr["cases"])]
        for engine, run in drr.get("peers", {}).items():  # a report of the single-call protocol
            if run.get("time_ratio_vs_x2ct") is not None:
                shown = f"{run['seconds_per_call']:.4f} s/call, {run['time_ratio_vs_x2ct']:.2f}x x2ct's time"
            elif run.get("seconds_per_call") is not None:  # x2ct's own run in the peer comparison
                shown = f"{run['seconds_per_call']:.4f} s/call (the reference)"
            else:
                shown = str(run.get("note") or run)
            lines.append(f"- {'x2ct' if engine == 'x2ct' else f'peer {engine}'}: {shown}")
        timed = [c for c in drr["cases"] if "runs" in c]
        if timed:
            lines += ["", "| case | engine | plan | mode | median s/call | vs x2ct (cached) | vs nanodrr | "
                          "vs forward |", "|---|---|---|---|---:|---:|---:|---:|"]
        for c in timed:
            case = f"{c['volume']}^3 x {c['detector']}^2 x {c['views']}, batch {c['batch']}"
            for run in c["runs"]:
                if run.get("status") != "ok":
                    lines.append(f"| {case} | {run['engine']} | {run['plan']} | {run['mode']} | "
                                 f"{str(run.get('note') or run.get('status')).replace('|', '/')} | | | |")
                    continue
                lines.append(f"| {case} | {run['engine']} | {run['plan']} | {run['mode']} | "
                             f"{_num(run.get('seconds_median'), '.5f')} | "
                             f"{_num(run.get('time_ratio_vs_x2ct'), '.2f')} | "
                             f"{_num(run.get('time_ratio_vs_nanodrr'), '.2f')} | "
                             f"{_num(run.get('time_ratio_vs_forward'), '.2f')} |")
    return "\n".join(lines) + "\n"


def flops_lines(parts: dict) -> list[str]:
    """One table per training part that counted FLOPs: each part of the step, its precision, its share."""
    lines = []
    for name, part in parts.items():
        rows = part.get("flops_split")
        if not rows:
            continue
        total = part["gflops_per_sample"]
        lines += ["", f"FLOPs per sample of `{name}` by part (MFU share: the part's FLOPs at its precision's peak, "
                      f"over the step's time; {part.get('mfu_note', '')}):", "",
                  "| part | precision | GFLOP/sample | share of FLOPs | MFU share |", "|---|---|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {row['label']} | {row['precision']} | {row['gflops_per_sample']:.3f} | "
                         f"{_percent(row['gflops_per_sample'] / total if total else None)} | "
                         f"{_percent(row.get('mfu_share'))} |")
        if part.get("terms_without_counted_flops"):
            lines += ["", "Loss terms with no counted FLOPs (`FlopCounterMode` counts matrix products, convolutions "
                          "and attention, not FFTs, pooling or elementwise work): "
                      + ", ".join(part["terms_without_counted_flops"])]
    return lines


def sweep_lines(sweep: dict) -> list[str]:
    if not sweep.get("rows"):
        return []
    lines = ["", "Milestone 1 by batch size on one device (part `milestone1_batches`; MFU with part `milestone1`'s "
                 "FLOPs per sample):", "",
             "| batch | status | samples/s | range | peak MB steady / first | MFU | note |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for row in sweep["rows"]:
        note = "; ".join(n for n in (f"from {row['source']}" if row.get("source") == "part milestone1" else "",
                                     row.get("note", "")) if n)
        lines.append(f"| {row['batch']} | {row['status']} | {_num(row.get('samples_per_s'), '.2f')} | "
                     f"{_rate_range(row)} | {_peaks(row)} | {_percent(row.get('mfu'))} | {note.replace('|', '/')} |")
    return lines


def profile_lines(profile: dict) -> list[str]:
    runs = [run for run in profile.get("runs") or [] if run.get("status") == "ok"]
    if not runs:
        return []
    classes = list(dict.fromkeys(name for run in runs for name in run["classes_ms"]))
    lines = ["", "Profile of one milestone-1 step (`benchmarks/profile_step.py`): device time by kernel class, ms "
                 "(share)", "", "| class | " + " | ".join(f"batch {run['batch']}" for run in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    for name in classes:
        cells = []
        for run in runs:
            ms = run["classes_ms"].get(name, 0.0)
            cells.append(f"{ms:.1f} ({100 * ms / run['device_time_ms']:.0f}%)" if run["device_time_ms"] else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| device busy (device time / step wall time) | "
                 + " | ".join(f"{100 * run['busy_fraction']:.0f}% of {run['step_wall_ms']:.0f} ms" for run in runs)
                 + " |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--tiny", action="store_true",
                        help="shrink every part (base 4, 16-24^3 volumes, 32^2 views, 1 step per repeat): the CPU "
                             "rehearsal")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--parts", type=lambda s: s.split(","), default=list(PARTS), help=f"of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="start no part after this many seconds")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per repeat of milestone 1 and the batch sweep (default 15; sweep: enough "
                             f"for {SWEEP_SAMPLES} samples; tiny 1)")
    parser.add_argument("--batch-sizes", type=batch_list, default=None,
                        help=f"part c's batch sizes (default {','.join(map(str, BATCH_SIZES))}; tiny "
                             f"{','.join(map(str, TINY_BATCH_SIZES))})")
    parser.add_argument("--profile-batch-sizes", type=batch_list, default=None,
                        help=f"part d's batch sizes (default {','.join(map(str, PROFILE_BATCH_SIZES))}; tiny "
                             f"{','.join(map(str, TINY_PROFILE_BATCH_SIZES))})")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a train.py override for every training part and the profile (repeatable), e.g. "
                             "trainer.ema_decay=0.999")
    parser.add_argument("--wheelhouse", type=Path, default=None,
                        help="install the DRR peers from this folder of wheels (offline GPU machines)")
    parser.add_argument("--ddp-on-cpu", action="store_true", help="run part h on 2 CPU ranks (gloo): its test")
    parser.add_argument("--case", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known: {list(PARTS)}")
    return args


def batch_list(text: str) -> tuple[int, ...]:
    """``"2,8,16"`` -> (2, 8, 16); positive integers only."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes such as 2,8,16, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case is not None:  # inside a training case's subprocess
        spec = json.loads(args.case.read_text())
        write_json_atomic(args.case_out, run_training_case(spec, spec["budget_s"]))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    name = slug(device_name) + ("_tiny" if args.tiny and device == "cuda" else "")
    parts: dict[str, dict] = {}
    ctx = {"device": device, "device_name": device_name, "tiny": args.tiny, "steps": args.steps,
           "gpu_count": torch.cuda.device_count() if device == "cuda" else 0, "out": args.out.resolve(),
           "wheelhouse": args.wheelhouse, "ddp_on_cpu": args.ddp_on_cpu, "budget_s": args.budget_s,
           "overrides": list(args.override), "parts": parts,
           "batch_sizes": args.batch_sizes or (TINY_BATCH_SIZES if args.tiny else BATCH_SIZES),
           "profile_batch_sizes": args.profile_batch_sizes or (TINY_PROFILE_BATCH_SIZES if args.tiny
                                                               else PROFILE_BATCH_SIZES)}
    started = time.perf_counter()
    deadline = started + args.budget_s
    for part in PARTS:
        parts[part] = (run_part(part, ctx, deadline) if part in args.parts
                       else {"status": "skipped", "note": "skipped: not in --parts"})
    report = {"device": device, "device_name": device_name, "gpu": name, "tiny": args.tiny,
              "command": shlex.join(["scripts/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
              "created": dt.datetime.now().isoformat(timespec="seconds"), **provenance.record(),
              "cuda": torch.version.cuda, "gpu_count": ctx["gpu_count"],
              "budget_s": args.budget_s, "overrides": ctx["overrides"], "wall_s": time.perf_counter() - started,
              "parts": parts, "goals": goals(parts, judged=device == "cuda" and not args.tiny)}
    report["ok"] = not any(p["status"] in ("failed", "timeout") for p in parts.values())
    text = markdown(report)
    write_json_atomic(args.out / f"gpu_check_{name}.json", report)
    write_text_atomic(args.out / f"gpu_check_{name}.md", text)
    print(text)
    print(f"wrote {args.out / f'gpu_check_{name}'}.json and .md")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
