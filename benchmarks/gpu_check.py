"""The first run on a GPU: one command, at most 9 minutes, that measures what the CPU cannot show.

Run from the repository root (``scripts/gpu_check.sh`` sets up the environment and calls this)::

    bash scripts/gpu_check.sh                            # on the GPU machine: every part, real sizes
    bash scripts/gpu_check.sh --device cpu --tiny        # the CPU rehearsal (tests/test_gpu_check.py), < 1 min
    bash scripts/gpu_check.sh --parts milestone1,drr     # some parts only

Parts, in this order, each in a fresh process group with its own time limit (a part that fails or times out is
recorded as such and the next one runs; the whole run stops starting parts once ``--budget-s`` is spent):

a. ``gpu_tests``: ``python -m pytest -q -m gpu``.
b. ``milestone1``: the milestone-1 recipe (conf/experiment/milestone1.yaml: hybrid CNN-ViT, base 32, 64^3 volume,
   two 512^2 views, batch 2, bf16 autocast, the six-part loss, AdamW, gradient clipping) for 50 timed training
   steps after a warm-up: samples/s (median step, CUDA synchronised), peak memory, FLOPs per sample and MFU.
c. ``milestone1_compile``: the same with ``torch.compile`` (inductor) of the model; compile time apart.
d. ``cascade_128`` (conf/experiment/milestone2.yaml, 128^3) and ``c2rv_256`` (conf/experiment/c2rv.yaml, 256^3,
   8 cone-beam views): 10 steps each; an out-of-memory error is a recorded result.
e. ``drr``: ``benchmarks/bench_drr.py --device cuda --quick --peers diffdrr,nanodrr`` (first installs the
   distributions the peers need that are missing: the peers, torchio and roma with ``pip install --no-deps``, then
   the light dependencies; torch pinned by a constraints file).
f. ``ddp``: with 2+ GPUs, ``torchrun --nproc_per_node=2 train.py experiment=milestone1`` for 20 batches on a small
   phantom set prepared on the spot; samples/s from the run's metrics.jsonl.

What is measured and what is not:

- The training parts feed random views and targets in [0, 1]: they measure the model, the loss and the optimiser,
  not data loading (part f includes it). The perceptual term uses a randomly initialised VGG16
  (``weights: random``): the GPU machine has no internet for the ImageNet file, and the FLOPs are the same.
- A training step: forward under autocast, the recipe's loss in float32, backward, ``clip_grad_norm_``, AdamW
  (``fused=True`` on CUDA); timed with ``torch.cuda.synchronize`` before and after each step.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one sample's forward, loss and backward (outside the
  timed loop). MFU = FLOPs per sample x samples/s / the GPU's dense bf16 peak (vendor datasheet, ``BF16_PEAK``).
- Peak memory: ``torch.cuda.max_memory_allocated`` over warm-up and timed steps, weights included
  (benchmarks/peak_memory.py; on the CPU the rise of the peak resident set size).

Writes ``gpu_check_<gpu>.json`` and ``.md`` under ``--out`` (``<gpu>``: a slug of ``torch.cuda.get_device_name``,
``cpu`` on the CPU, ``_tiny`` appended for a tiny run on a GPU). Exit status 1 if any part failed or timed out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from bench_models import machine_info  # noqa: E402  (benchmarks/bench_models.py)
from peak_memory import PeakMemory  # noqa: E402  (benchmarks/peak_memory.py)
from process_group import run_in_own_group  # noqa: E402  (benchmarks/process_group.py)

from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402

PARTS = ("gpu_tests", "milestone1", "milestone1_compile", "cascade_128", "c2rv_256", "drr", "ddp")
# the most seconds each part may take (real sizes on a GPU; --tiny: TINY_TIMEOUT_S); the budget caps them all
# (milestone1_compile: a cold inductor compile of milestone 1 took more than 180 s on a 16-CPU H200 machine)
TIMEOUT_S = {"gpu_tests": 60, "milestone1": 75, "milestone1_compile": 300, "cascade_128": 45, "c2rv_256": 60,
             "drr": 90, "ddp": 120}
TINY_TIMEOUT_S = 60
# 9 minutes on one GPU: on the H200 the parts other than the compile and ddp took 170 s, so with the compile at its
# limit ddp (2+ GPUs only) still has 70 s; a part that would overrun the budget gets what is left of it
BUDGET_S = 540.0

# milestone 1's goals on one H100-class GPU (issue 14), judged on the full-size bf16 run on CUDA only
GOAL_SAMPLES_PER_S = 10.0
GOAL_PEAK_MB = 10 * 1024  # 10 GB (GiB, as peak MB are 2^20 bytes)
GOAL_MFU = 0.40

# Dense bf16 tensor-core peak (no sparsity), vendor datasheet, TFLOPS; matched on torch.cuda.get_device_name:
# (substrings that must all appear, substrings that must not, label, TFLOPS). "NVIDIA H100 80GB HBM3" is the SXM
# part; NVL variants have other peaks and are left unknown.
BF16_PEAK = (
    (("H100", "PCIe"), (), "H100 PCIe", 756.0),
    (("H100",), ("NVL",), "H100 SXM", 989.0),
    (("H200",), ("NVL",), "H200", 989.0),
    (("A100",), (), "A100", 312.0),
    (("L40S",), (), "L40S", 362.0),
    (("RTX 4090",), (), "RTX 4090", 165.0),
)

# Training parts: the recipe (conf/experiment/<name>.yaml) and, for --tiny, what shrinks it. Prepare overrides
# change the data the model is sized from (volume, views); train overrides change the model.
TRAINING_PARTS = {
    "milestone1": {"experiment": "milestone1", "steps": 50, "compile": False},
    "milestone1_compile": {"experiment": "milestone1", "steps": 50, "compile": True},
    "cascade_128": {"experiment": "milestone2", "steps": 10, "compile": False},
    "c2rv_256": {"experiment": "c2rv", "steps": 10, "compile": False},
}
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


# --- parts b-d: training steps ----------------------------------------------------------------------------------
def compose(config_name: str, overrides: list[str]):
    """A config from conf/ composed as the entrypoints compose it (``x2ct.engine.launch.compose_config``)."""
    from x2ct.engine.launch import compose_config

    return compose_config(config_name, overrides)


def tiny_prepare_overrides(volume: int, detector: int, detector_mm: float) -> list[str]:
    return [f"protocol.preprocess.size=[{volume},{volume},{volume}]",
            f"protocol.geometry.detector_shape=[{detector},{detector}]",
            f"protocol.geometry.pixel_spacing_mm=[{detector_mm / detector},{detector_mm / detector}]"]


def training_spec(part: str, device: str, tiny: bool, steps: int | None) -> dict:
    """What ``run_training_case`` needs, from the recipe's configs: the model sized as the recipe's data set would
    size it (volume, views, angles and geometry from ``data.prepare``), its loss, optimiser and clipping."""
    from omegaconf import OmegaConf

    from x2ct.data.prepare import load_prepare_config, protocol_geometry
    from x2ct.physics.geometry import angles_for_views

    recipe = TRAINING_PARTS[part]
    experiment = recipe["experiment"]
    train_overrides = [f"experiment={experiment}", "loss.components.perceptual.weights=random"]
    cfg = compose("train", train_overrides)
    prepare_overrides = list(cfg.data.prepare)
    if tiny:
        volume, detector, model_overrides = TINY[experiment]
        full = load_prepare_config(compose("prepare", prepare_overrides)).protocol.geometry
        detector_mm = full.detector_shape[0] * full.pixel_spacing_mm[0]
        prepare_overrides += tiny_prepare_overrides(volume, detector, detector_mm)
        cfg = compose("train", [*train_overrides, *model_overrides, *TINY_LOSS])
    protocol = load_prepare_config(compose("prepare", prepare_overrides)).protocol
    geometry, _ = protocol_geometry(protocol)
    data = cfg.data
    angles = (list(angles_for_views(list(data.views))) if data.views is not None
              else [180.0 * k / data.num_views for k in range(data.num_views)])
    geometry = geometry.with_angles(angles)
    view_size = int((protocol.view_size or geometry.detector_shape)[-1])
    volume_size = int(protocol.preprocess.size[-1])

    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.update(num_views=len(angles), view_size=view_size, volume_size=volume_size, view_angles_deg=angles)
    if "geometry" in model:  # as the trainer fills it in from the data set (fill_geometry)
        model["geometry"] = geometry.to_dict()
    if "volume_fov_mm" in model:
        model["volume_fov_mm"] = [float(v) for v in protocol.preprocess.fov_mm]
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    precision = "bf16" if device == "cuda" else "fp32"
    return {
        "kind": "training", "part": part, "experiment": experiment, "device": device, "precision": precision,
        "batch": int(cfg.data.batch_size), "views": len(angles), "view_size": view_size, "volume_size": volume_size,
        "angles_deg": angles, "model": model,
        "loss": {"weights": OmegaConf.to_container(cfg.loss.weights, resolve=True),
                 "components": OmegaConf.to_container(cfg.loss.get("components") or {}, resolve=True)},
        "optimizer": {k: optimizer[k] for k in ("lr", "weight_decay", "betas")},
        "grad_clip_norm": cfg.trainer.grad_clip_norm, "compile": recipe["compile"],
        # the CPU rehearsal captures graphs with Dynamo but skips inductor's code generation (minutes on 2 cores)
        "compile_backend": "eager" if tiny and device == "cpu" else "inductor",
        "warmup_steps": 1 if tiny else 5, "steps": steps or (2 if tiny else recipe["steps"]),
        "min_steps": 2 if tiny else 3,
    }


def _map_floats(pred, fn):
    """``fn`` applied to every floating-point tensor of a model's output (a volume, or a dict with its
    deep-supervision list and patch origins)."""
    import torch

    if isinstance(pred, dict):
        return {key: _map_floats(value, fn) for key, value in pred.items()}
    if isinstance(pred, list):
        return [_map_floats(value, fn) for value in pred]
    return fn(pred) if isinstance(pred, torch.Tensor) and pred.is_floating_point() else pred


def run_training_case(spec: dict, budget_s: float) -> dict:
    """Warm-up, then timed training steps on random inputs, then one sample's FLOPs; in this (fresh) process.
    Timing stops ``budget_s`` after the start (once ``min_steps`` are timed), whatever the compiler took."""
    case_start = time.perf_counter()
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    from x2ct.losses import ReconstructionLoss
    from x2ct.models import count_parameters
    from x2ct.models.inputs import takes_angles

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = instantiate(spec["model"]).to(device).train()
    criterion = ReconstructionLoss(spec["loss"]["weights"], spec["loss"]["components"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), **spec["optimizer"], fused=device.type == "cuda")
    b, v, s, d = spec["batch"], spec["views"], spec["view_size"], spec["volume_size"]
    views = torch.rand(b, v, 1, s, s, device=device)  # (B, V, 1, H, W) in [0, 1]
    target = torch.rand(b, 1, d, d, d, device=device)  # (B, 1, D, H, W) in [0, 1]
    # (B, V) on the host, as the data loader gives them; None for models without an angle input
    angles = torch.tensor(spec["angles_deg"]).expand(b, v) if takes_angles(model) else None
    net = torch.compile(model, backend=spec["compile_backend"]) if spec["compile"] else model
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else None
    clip = spec["grad_clip_norm"] or float("inf")

    def loss_of(views, target, angles):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            pred = net(views, angles_deg=angles) if angles is not None else net(views)
        # the loss in float32 after an autocast forward, as in training
        return criterion(_map_floats(pred, lambda t: t.float()), target)[0], pred

    def step() -> None:
        loss_of(views, target, angles)[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = {"parameters": count_parameters(model), "batch": b, "views": v, "view_size": s, "volume_size": d,
              "precision": spec["precision"], "compile": spec["compile"] and spec["compile_backend"]}
    peak = PeakMemory(device, include_existing=True)  # CUDA: weights, optimiser state, activations, gradients
    peak.start()
    started = time.perf_counter()
    times: list[float] = []
    try:
        for i in range(spec["warmup_steps"]):
            start = time.perf_counter()
            step()
            sync()
            if i == 0 and spec["compile"]:  # compiling forward and backward happens in the first step
                result["compile_s"] = time.perf_counter() - start
        result["warmup_s"] = time.perf_counter() - started
        deadline = case_start + budget_s
        while len(times) < spec["min_steps"] or (len(times) < spec["steps"] and time.perf_counter() < deadline):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError as err:  # a result, not a crash: how far it got and what it had taken
        result.update(status="oom", peak_mb=peak.peak_mb(), steps_timed=len(times),
                      note="out of memory: " + str(err).strip().splitlines()[0][:200])
        return result
    if spec["compile"]:
        from torch._dynamo.utils import counters

        result["graph_breaks"] = sum(counters["graph_break"].values())
    seconds = statistics.median(times)
    result.update(seconds_per_step=seconds, samples_per_s=b / seconds, steps_timed=len(times),
                  peak_mb=peak.peak_mb(), memory_method=peak.method)

    net = model  # FLOPs of the same arithmetic without the compiler's wrapper
    with FlopCounterMode(display=False) as counter:  # one sample's forward, loss and backward
        loss, pred = loss_of(views[:1], target[:1], None if angles is None else angles[:1])
        loss.backward()
    with FlopCounterMode(display=False) as loss_counter:  # the loss's share: on the same prediction, detached
        pred = _map_floats(pred, lambda t: t.detach().float().requires_grad_())
        criterion(pred, target[:1])[0].backward()
    optimizer.zero_grad(set_to_none=True)
    result["gflops_per_sample"] = counter.get_total_flops() / 1e9
    result["loss_gflops_per_sample"] = loss_counter.get_total_flops() / 1e9
    result["status"] = "ok"
    return result


def bf16_peak(device_name: str) -> tuple[str, float] | None:
    """(label, dense bf16 peak FLOP/s) of a GPU by its name, or None if it is not on file."""
    for required, excluded, label, tflops in BF16_PEAK:
        if all(k in device_name for k in required) and not any(k in device_name for k in excluded):
            return label, tflops * 1e12
    return None


def part_training(name: str, ctx: dict, timeout_s: float) -> dict:
    spec = training_spec(name, ctx["device"], ctx["tiny"], ctx["steps"] if name.startswith("milestone1") else None)
    spec["budget_s"] = 0.7 * timeout_s  # timed steps stop here (after min_steps), before the kill
    result = run_case_in_subprocess(spec, timeout_s)
    result.setdefault("experiment", spec["experiment"])
    if result.get("status") == "ok" and ctx["device"] == "cuda":
        peak = bf16_peak(ctx["device_name"])
        if peak is None:
            result["mfu"] = None
            result["mfu_note"] = f"no dense bf16 peak on file for {ctx['device_name']!r} (BF16_PEAK)"
        else:
            label, flops = peak
            result["mfu"] = result["gflops_per_sample"] * 1e9 * result["samples_per_s"] / flops
            result["mfu_note"] = f"over {label} dense bf16 peak {flops / 1e12:.0f} TFLOPS, vendor datasheet"
    elif result.get("status") == "ok":
        result["mfu"] = None
        result["mfu_note"] = "not on a GPU: no bf16 peak to compare with"
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
    """x2ct's cases and each peer's time relative to x2ct, from a bench_drr.py report."""
    cases = [{"volume": c["volume_shape"][0], "detector": c["detector_shape"][0], "views": c["views"],
              "seconds_per_call": c["seconds_per_call"], "renders_per_s": c["renders_per_s"],
              "peak_mb": c["peak_memory_mb"]} for c in report.get("cases", []) if c.get("status") == "ok"]
    peers = {}
    for engine, run in _peer_runs([report.get("peer"), report.get("peers")]):
        peers[engine] = ({"seconds_per_call": run.get("seconds_per_call"),
                          "time_ratio_vs_x2ct": run.get("time_ratio_vs_x2ct")} if run.get("status") == "ok"
                         else {"note": run.get("note")})
    return {"cases": cases, "peers": peers}


def _peer_runs(node):
    """(renderer, run) pairs of every ``runs`` table in a report's peer section, whatever its nesting."""
    if isinstance(node, dict) and isinstance(node.get("runs"), dict):
        yield from node["runs"].items()
    elif isinstance(node, (dict, list)):
        for child in node.values() if isinstance(node, dict) else node:
            yield from _peer_runs(child)


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
    cfg = compose("train", ["experiment=milestone1"])
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
    timeout_s = min(TINY_TIMEOUT_S if ctx["tiny"] else TIMEOUT_S[name], remaining)
    if timeout_s < 5:
        return {"status": "skipped", "note": f"skipped: the {ctx['budget_s']:.0f} s budget is spent"}
    print(f"[gpu_check] {name} (up to {timeout_s:.0f} s) ...", flush=True)
    start = time.perf_counter()
    try:
        if name in TRAINING_PARTS:
            result = part_training(name, ctx, timeout_s)
        else:
            result = {"gpu_tests": part_gpu_tests, "drr": part_drr, "ddp": part_ddp}[name](ctx, timeout_s)
    except Exception as err:  # a part's own bug is its result; the next part still runs
        result = {"status": "failed", "note": f"{type(err).__name__}: {err}"[:400]}
    result["wall_s"] = time.perf_counter() - start
    print(f"[gpu_check] {name}: {result['status']} {result.get('note', '')}".rstrip(), flush=True)
    if result["status"] in ("failed", "timeout") and result.get("output_tail"):
        print(result["output_tail"], flush=True)
    return result


def goals(parts: dict, judged: bool) -> dict:
    """Milestone 1's goals against part b (bf16, one GPU, real size); only judged there."""
    m1 = parts.get("milestone1", {})
    measured = {"samples_per_s": m1.get("samples_per_s"), "peak_mb": m1.get("peak_mb"), "mfu": m1.get("mfu")}
    rows = {"samples_per_s": (">= 10 training samples/s", measured["samples_per_s"],
                              lambda x: x >= GOAL_SAMPLES_PER_S),
            "peak_mb": ("< 10 GB peak memory", measured["peak_mb"], lambda x: x < GOAL_PEAK_MB),
            "mfu": (">= 40% MFU", measured["mfu"], lambda x: x >= GOAL_MFU)}
    out = {}
    for key, (goal, value, test) in rows.items():
        passed = test(value) if judged and value is not None and m1.get("status") == "ok" else None
        out[key] = {"goal": goal, "measured": value, "pass": passed}
    return out


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device_name']} ({report['created']})", "",
             f"- command: `{report['command']}`",
             f"- torch {report['machine']['torch']}, CUDA {report['cuda']}, {report['gpu_count']} GPU(s), "
             f"{report['machine']['cpu_count']} CPUs; {'tiny (rehearsal) sizes' if report['tiny'] else 'real sizes'}"
             f"; wall time {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget",
             "- training parts: random views and targets in [0, 1] (the model, loss and optimiser are measured, not "
             "data loading); perceptual term with a random VGG16 (`weights: random`: no internet on the GPU "
             "machine); forward under autocast, loss in float32, backward, grad clipping, AdamW (fused on CUDA); "
             "median step after a warm-up",
             "- FLOPs: one sample's forward + loss + backward (`FlopCounterMode`); MFU over the dense bf16 peak, "
             "vendor datasheet", "",
             "| part | status | samples/s | peak MB | GFLOP/sample | MFU | seconds | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]

    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    for name, part in report["parts"].items():
        note = part.get("note", "")
        if part.get("compile_s") is not None:
            note = (f"torch.compile ({part['compile']}) first step {part['compile_s']:.1f} s, "
                    f"{part.get('graph_breaks', '?')} graph breaks; " + note)
        if "volume_size" in part:
            loss_share = (f", {part['loss_gflops_per_sample']:.2f} GFLOP of them the loss's"
                          if part.get("loss_gflops_per_sample") is not None else "")
            note = (f"{part['volume_size']}^3, {part['views']} x {part['view_size']}^2, batch {part['batch']}, "
                    f"{part['precision']}{loss_share}; " + note)
        if name == "drr" and part.get("summary"):
            peers = part["summary"]["peers"]
            note += "".join(f"; {k} {v['time_ratio_vs_x2ct']:.2f}x x2ct's time" for k, v in peers.items()
                            if v.get("time_ratio_vs_x2ct") is not None)
        mfu = part.get("mfu")
        lines.append(f"| {name} | {part['status']} | {num(part.get('samples_per_s'), '.2f')} | "
                     f"{num(part.get('peak_mb'), '.0f')} | {num(part.get('gflops_per_sample'), '.2f')} | "
                     f"{'-' if mfu is None else f'{100 * mfu:.1f}%'} | {num(part.get('wall_s'), '.0f')} | "
                     f"{note.strip('; ').replace('|', '/')} |")
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
        for engine, run in drr["peers"].items():
            if run.get("time_ratio_vs_x2ct") is not None:
                shown = f"{run['seconds_per_call']:.4f} s/call, {run['time_ratio_vs_x2ct']:.2f}x x2ct's time"
            elif run.get("seconds_per_call") is not None:  # x2ct's own run in the peer comparison
                shown = f"{run['seconds_per_call']:.4f} s/call (the reference)"
            else:
                shown = str(run.get("note") or run)
            lines.append(f"- {'x2ct' if engine == 'x2ct' else f'peer {engine}'}: {shown}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--tiny", action="store_true",
                        help="shrink every part (base 4, 16-24^3 volumes, 32^2 views, 2 steps): the CPU rehearsal")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--parts", type=lambda s: s.split(","), default=list(PARTS), help=f"of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="start no part after this many seconds")
    parser.add_argument("--steps", type=int, default=None, help="timed steps of milestone 1 (default 50; tiny 2)")
    parser.add_argument("--wheelhouse", type=Path, default=None,
                        help="install the DRR peers from this folder of wheels (offline GPU machines)")
    parser.add_argument("--ddp-on-cpu", action="store_true", help="run part f on 2 CPU ranks (gloo): its test")
    parser.add_argument("--case", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known: {list(PARTS)}")
    return args


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
    ctx = {"device": device, "device_name": device_name, "tiny": args.tiny, "steps": args.steps,
           "gpu_count": torch.cuda.device_count() if device == "cuda" else 0, "out": args.out.resolve(),
           "wheelhouse": args.wheelhouse, "ddp_on_cpu": args.ddp_on_cpu, "budget_s": args.budget_s}
    started = time.perf_counter()
    deadline = started + args.budget_s
    parts = {}
    for part in PARTS:
        parts[part] = (run_part(part, ctx, deadline) if part in args.parts
                       else {"status": "skipped", "note": "skipped: not in --parts"})
    report = {"device": device, "device_name": device_name, "gpu": name, "tiny": args.tiny,
              "command": shlex.join(["scripts/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
              "created": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(device),
              "cuda": torch.version.cuda, "gpu_count": ctx["gpu_count"], "budget_s": args.budget_s,
              "wall_s": time.perf_counter() - started, "parts": parts,
              "goals": goals(parts, judged=device == "cuda" and not args.tiny)}
    report["ok"] = not any(p["status"] in ("failed", "timeout") for p in parts.values())
    text = markdown(report)
    write_json_atomic(args.out / f"gpu_check_{name}.json", report)
    write_text_atomic(args.out / f"gpu_check_{name}.md", text)
    print(text)
    print(f"wrote {args.out / f'gpu_check_{name}'}.json and .md")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
