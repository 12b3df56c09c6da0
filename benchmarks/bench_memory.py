"""Peak memory of ONE training step of each recipe at its real size, on the CPU, without and with checkpointing.

Run from the repository root::

    python benchmarks/bench_memory.py --list                        # the cases
    python benchmarks/bench_memory.py --cases milestone1_64,baseline_128
    python benchmarks/bench_memory.py --cases 'c2rv_*' --max-gb 20 --timeout 900
    python benchmarks/bench_memory.py                               # every case (c2rv at 256^3: slow)

A case is a recipe (``experiment=<name>``, composed with Hydra as ``train.py`` composes it) at a volume size, with
its views, loss (perceptual term off unless ``--perceptual random``: the VGG16 ImageNet file is absent offline)
and optimizer (AdamW, fused on the CPU as the trainer builds it), fp32. The trainer's own ``TrainStep`` runs on
a synthetic batch of 1 (views ``(1, V, 1, S, S)`` and target ``(1, 1, N, N, N)`` in [0, 1], the views' angles):
forward, loss, backward, clipping, AdamW, schedule (and EMA where the recipe has one). No data set is read or
prepared: what the trainer takes from it (views, view size, volume size, angles, geometry, field of view) comes
from the recipe's ``data.prepare`` protocol, as ``fill_model_config`` would record it.

Each case runs in a fresh process (peaks never mix), with one thread (``--threads``), under an address-space cap
(``RLIMIT_AS``, ``--max-gb``) and a time limit (``--timeout``): a case that needs more is a result ("> cap"), not
a crash of the benchmark. In that process, all in bytes of resident memory (Linux ``VmRSS`` / ``VmHWM``, the peak
reset through ``/proc/self/clear_refs`` before each phase; ``ru_maxrss`` where the reset is refused):

- ``ready``: the resident size once torch, x2ct and the configs are loaded (the zero of the other figures);
- ``build peak``: the peak while building model, loss, optimizer and batch, over ``ready``;
- per step (``--steps``, default 2; the last is reported, the first pays one-off costs such as AdamW's state and
  the allocator's first growth): the peak rise over the resident size just before it (after ``malloc_trim``),
  and ``total``, the step's peak over ``ready``: weights, optimizer state, batch, activations, gradients.

``total`` is what a GPU would have to hold, roughly: whether it fits 24 / 40 / 80 GB GPUs is judged on it. CPU
resident memory is only a proxy for GPU memory: the CUDA caching allocator rounds and keeps blocks, cuDNN takes
workspaces, the CUDA context takes ~0.5 GB more, and training on a GPU runs under bf16 autocast, which keeps most
activations in half the bytes. Writes ``<out>.json`` and ``<out>.md`` (default ``benchmarks/results/memory_cpu``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import re
import resource
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from peak_memory import peak_bytes, proc_status_kb, reset_peak, rss_bytes, trim_heap  # noqa: E402  (benchmarks/peak_memory.py)
from process_group import run_in_own_group  # noqa: E402  (benchmarks/process_group.py)

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402
from x2ct.config_files import compose_config  # noqa: E402

GB = 2**30  # "GB" in this benchmark: 2^30 bytes, as GPU memory sizes are counted
GPU_SIZES_GB = (24, 40, 80)
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "memory_cpu"
# what a child's output says when an allocation failed under the address-space cap
MEMORY_ERRORS = re.compile(r"MemoryError|can't allocate memory|Cannot allocate memory|std::bad_alloc|out of memory|"
                           r"failed to map segment|Resource temporarily unavailable", re.IGNORECASE)
OUTPUT_TAIL_LINES = 20

# The rehearsal case (milestone 1 shrunk to 16^3 from 32^2 views, width 4): the harness end to end in seconds
TINY_MODEL = ("model.base_channels=4", "model.depth=2", "model.channel_multipliers=[1,2,4]", "model.num_heads=2",
              "model.transformer_levels=[1]", "model.pyramid_channels=4", "model.pyramid_scales=2",
              "model.cross_view_grid=4", "model.cross_view_heads=2")
TINY_PROTOCOL = ("protocol.preprocess.size=[16,16,16]", "protocol.preprocess.spacing_mm=22",
                 "protocol.geometry.detector_shape=[32,32]", "protocol.geometry.pixel_spacing_mm=[16,16]")


@dataclass(frozen=True)
class Case:
    """A recipe at a volume size (``num_views``: None keeps the recipe's views), with or without checkpointing."""

    name: str
    experiment: str
    volume: int
    num_views: int | None = None
    checkpointing: bool = False
    overrides: tuple[str, ...] = ()  # more train.py overrides
    prepare: tuple[str, ...] = ()  # more prepare.py overrides (the protocol the model is sized from)
    default: bool = True  # in the full table (the rehearsal case is not)


def _with_and_without(name: str, experiment: str, volume: int, **kwargs: Any) -> list[Case]:
    return [Case(name, experiment, volume, **kwargs), Case(f"{name}_ckpt", experiment, volume, checkpointing=True,
                                                          **kwargs)]


CASES = {case.name: case for case in [
    Case("baseline_128", "baseline", 128),  # the baseline U-Net has no checkpointing
    *_with_and_without("milestone1_64", "milestone1", 64),
    *_with_and_without("milestone1_128", "milestone1", 128),
    *_with_and_without("milestone2_128", "milestone2", 128),
    *_with_and_without("c2rv_256_v6", "c2rv", 256, num_views=6),
    *_with_and_without("c2rv_256_v8", "c2rv", 256, num_views=8),
    *_with_and_without("c2rv_256_v10", "c2rv", 256, num_views=10),
    *_with_and_without("tiny", "milestone1", 16, overrides=TINY_MODEL, prepare=TINY_PROTOCOL, default=False),
]}


# --- the measurement, inside a case's fresh process ------------------------------------------------------------
def recipe_config(case: dict, perceptual: str):
    """The case's train config: its recipe on the CPU in fp32, its views, its loss with the perceptual term off
    (``perceptual="off"``: no VGG16 file offline) or on a randomly initialised VGG16 (same memory)."""
    from omegaconf import open_dict

    overrides = [f"experiment={case['experiment']}", "trainer.accelerator=cpu", "trainer.precision=fp32",
                 "logger=none", *case["overrides"]]
    if case["num_views"] is not None:
        overrides.append(f"data.num_views={case['num_views']}")
    cfg = compose_config("train", overrides)
    with open_dict(cfg):
        if "perceptual" in cfg.loss.weights:
            if perceptual == "off":
                cfg.loss.weights.perceptual = 0.0
            else:
                cfg.loss.components.perceptual.weights = "random"
    return cfg


def case_protocol(cfg, case: dict) -> tuple[Any, list[str]]:
    """The protocol the recipe's data set is prepared with, at the case's volume size (same field of view)."""
    from x2ct.data.prepare import load_prepare_config

    prepare = [*cfg.data.prepare, *case["prepare"]]
    protocol = load_prepare_config(compose_config("prepare", prepare)).protocol
    notes = []
    recipe_size = int(protocol.preprocess.size[-1])
    if recipe_size != case["volume"]:
        n, fov = case["volume"], float(protocol.preprocess.fov_mm[-1])
        prepare += [f"protocol.preprocess.size=[{n},{n},{n}]", f"protocol.preprocess.spacing_mm={fov / n}"]
        protocol = load_prepare_config(compose_config("prepare", prepare)).protocol
        notes.append(f"volume {n}^3 instead of the recipe's {recipe_size}^3 (same field of view)")
    return protocol, notes


def fill_from_protocol(cfg, protocol) -> dict:
    """What ``fill_model_config`` records from a data set (views, sizes, angles, geometry, field of view), taken
    from the protocol and ``data.views`` / ``data.num_views`` instead; returns the sizes for the batch."""
    from omegaconf import open_dict

    from x2ct.data.prepare import protocol_geometry
    from x2ct.engine.build import fill_geometry, match_deep_supervision
    from x2ct.physics.geometry import angles_for_views

    geometry, _ = protocol_geometry(protocol)
    data = cfg.data
    angles = (list(angles_for_views(list(data.views))) if data.views is not None
              else [180.0 * k / data.num_views for k in range(data.num_views)])  # evenly_spread_views' angles
    view_size = int((protocol.view_size or geometry.detector_shape)[-1])
    volume_size = int(protocol.preprocess.size[-1])
    with open_dict(cfg):
        cfg.model.num_views, cfg.model.view_size, cfg.model.volume_size = len(angles), view_size, volume_size
        cfg.model.view_angles_deg = angles
        fill_geometry(cfg.model, geometry.with_angles(angles), protocol.preprocess.fov_mm)
        match_deep_supervision(cfg.model, float(cfg.loss.weights.get("deep_supervision", 0.0)))
    return {"views": len(angles), "view_size": view_size, "volume_size": volume_size, "angles_deg": angles}


def refiner_checkpointing_available() -> bool:
    """Whether the cascade takes ``checkpointing`` (activation checkpointing of its fine stages)."""
    import inspect

    from x2ct.models.multires import MultiResCascade

    return "checkpointing" in inspect.signature(MultiResCascade.__init__).parameters


def apply_checkpointing(model_cfg, on: bool) -> str:
    """Switch activation checkpointing on where the model has it; returns what is checkpointed, in words."""
    from omegaconf import open_dict

    target = str(model_cfg.get("_target_", ""))
    if target.endswith("MultiResCascade"):  # the coarse hybrid's own switch, and the fine stages' (new)
        with open_dict(model_cfg):
            model_cfg.coarse_kwargs.checkpointing = on
            if not refiner_checkpointing_available():
                return "coarse model only (refiner checkpointing not available)" if on else "off"
            model_cfg.checkpointing = on
        return "coarse model + refiners" if on else "off"
    if "checkpointing" in model_cfg:
        with open_dict(model_cfg):
            model_cfg.checkpointing = on
        return "on" if on else "off"
    return "n/a (the model has none)" if on else "n/a"


def preload(cfg) -> None:
    """Load the code that building and stepping first touch (the model's module, the fused optimizer's code, on a
    throwaway layer), so that the build peak counts what the model needs, not a library's one-off cost (~70 MB)."""
    import importlib

    import torch

    import x2ct.engine.step  # noqa: F401
    from x2ct.engine.build import build_optimizer

    importlib.import_module(str(cfg.model._target_).rsplit(".", 1)[0])
    layer = torch.nn.Linear(2, 1)
    optimizer = build_optimizer(cfg.optimizer, layer, torch.device("cpu"))
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()


def build_training(cfg, sizes: dict):
    """The trainer's model, loss, optimizer, schedule, EMA and step, and a synthetic batch of one."""
    import torch
    from omegaconf import OmegaConf

    from x2ct.engine.build import build_ema, build_model, build_optimizer, build_scheduler
    from x2ct.engine.distributed import DistInfo
    from x2ct.engine.precision import resolve_precision
    from x2ct.engine.step import TrainStep
    from x2ct.losses import ReconstructionLoss

    device = torch.device("cpu")
    n, v, s = sizes["volume_size"], sizes["views"], sizes["view_size"]
    reference = torch.full((1, n, n, n), 0.5)  # the data set's mean CT, for models with a template volume
    model = build_model(cfg, device, reference).train()
    del reference
    components = cfg.loss.get("components")
    # input_spec only serves components that compare with the views (projection: weight 0 in these recipes)
    criterion = ReconstructionLoss(dict(cfg.loss.weights),
                                   OmegaConf.to_container(components, resolve=True) if components else None)
    optimizer = build_optimizer(cfg.optimizer, model, device)
    scheduler = build_scheduler(cfg, optimizer, 10**6, DistInfo())
    ema = build_ema(model, cfg.trainer.ema_decay)
    step = TrainStep(model, model, criterion, optimizer, scheduler, None, ema, device,
                     resolve_precision("fp32", device), cfg.trainer.grad_clip_norm, 1)
    batch = {"views": torch.rand(1, v, 1, s, s), "ct": torch.rand(1, 1, n, n, n),
             "angles_deg": torch.tensor(sizes["angles_deg"], dtype=torch.float32).expand(1, v)}
    return model, step, batch


def is_allocation_failure(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and bool(MEMORY_ERRORS.search(str(err))))


def measure_case(case: dict, steps: int, threads: int, perceptual: str, out: Path) -> None:
    """One case in this (fresh) process; the result is rewritten after each phase, so a process that dies still
    leaves what it measured (and the phase it died in)."""
    result: dict[str, Any] = {"phase": "import"}
    write_json_atomic(out, result)
    try:
        _measure(case, steps, threads, perceptual, out, result)
    except Exception as err:
        if not is_allocation_failure(err):
            raise
        result.update(status="over_cap", error=str(err)[:300])
    result["vm_peak_gb"] = proc_status_kb("VmPeak") * 1024 / GB
    result["ru_maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    if result.get("status") == "over_cap":
        result["note"] = over_cap_note(result)
    write_json_atomic(out, result)


def over_cap_note(result: dict) -> str:
    """Where the allocation failed, and how much resident memory the case had reached by then."""
    note = f"allocation failed in {result['phase']} under the address-space cap"
    if "ready_gb" in result:
        note += f", {result['ru_maxrss_gb'] - result['ready_gb']:.2f} GB resident reached"
    return note


def _measure(case: dict, steps: int, threads: int, perceptual: str, out: Path, result: dict) -> None:
    import torch

    torch.set_num_threads(threads)
    result["phase"] = "compose"
    cfg, sizes = configure(case, perceptual, result)
    preload(cfg)
    torch.manual_seed(int(cfg.seed))
    trim_heap()
    ready = rss_bytes()  # the zero of every figure: interpreter, torch, x2ct, configs
    result.update(phase="build", ready_gb=ready / GB, ready_vm_gb=proc_status_kb("VmSize") * 1024 / GB)
    write_json_atomic(out, result)
    step, batch = measure_build(cfg, sizes, ready, result)
    result["steps"] = []
    for k in range(steps):
        result["phase"] = f"step {k + 1}"
        write_json_atomic(out, result)
        result["steps"].append(measure_step(step, batch, ready))
    result.update(phase="done", status="ok", **{f"step_{key}": value for key, value in result["steps"][-1].items()})


def configure(case: dict, perceptual: str, result: dict) -> tuple[Any, dict]:
    """The case's config with the model filled in as the trainer would; what it decided goes into ``result``."""
    cfg = recipe_config(case, perceptual)
    protocol, notes = case_protocol(cfg, case)
    sizes = fill_from_protocol(cfg, protocol)
    result.update(sizes, checkpointing=apply_checkpointing(cfg.model, case["checkpointing"]), notes=notes,
                  loss_weights={k: float(w) for k, w in cfg.loss.weights.items() if float(w) > 0})
    return cfg, sizes


def measure_build(cfg, sizes: dict, ready: int, result: dict):
    """Build model, loss, optimizer, step and batch; record the parameters and the build's peak."""
    from x2ct.models import count_parameters

    was_reset = reset_peak()
    model, step, batch = build_training(cfg, sizes)
    result.update(parameters=count_parameters(model), build_peak_gb=(peak_bytes(was_reset) - ready) / GB,
                  built_gb=(rss_bytes() - ready) / GB,
                  memory_method="VmHWM reset before each phase" if was_reset else
                  "ru_maxrss since the process started (reset refused): later peaks may hide under earlier ones")
    return step, batch


def measure_step(step, batch: dict, ready: int) -> dict:
    """One training step: its seconds, the resident size before it, its peak's rise over that and over ``ready``."""
    trim_heap()
    before = rss_bytes()
    was_reset = reset_peak()
    start = time.perf_counter()
    step([batch])
    seconds = time.perf_counter() - start
    peak = peak_bytes(was_reset)
    return {"seconds": seconds, "before_gb": (before - ready) / GB, "rise_gb": (peak - before) / GB,
            "total_gb": (peak - ready) / GB}


# --- running the cases ------------------------------------------------------------------------------------------
def address_space_cap(max_gb: float):
    """A ``preexec_fn``: cap the child's address space, so that a case that needs more fails to allocate."""
    limit = int(max_gb * GB)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return cap


def run_case(case: Case, args: argparse.Namespace) -> dict:
    """``case`` in a fresh process under the cap and time limit; a case over either is a result."""
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        spec, out = Path(tmp) / "case.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(asdict(case)))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--case", str(spec), "--case-out", str(out),
               "--steps", str(args.steps), "--threads", str(args.threads), "--perceptual", args.perceptual]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        returncode, output, wall_s = run_in_own_group(cmd, args.timeout, REPO_ROOT, env,
                                                      address_space_cap(args.max_gb))
        partial = json.loads(out.read_text()) if out.exists() else {}
    row = {**asdict(case), **partial, "wall_s": wall_s, "max_gb": args.max_gb,
           "timeout": args.timeout}
    row.pop("default")
    if row.get("status") not in ("ok", "over_cap"):
        row.update(outcome(returncode, output, row.get("phase", "start"), args))
    if row["status"] != "ok":
        row["output_tail"] = "\n".join(output.strip().splitlines()[-OUTPUT_TAIL_LINES:])
    return row


def outcome(returncode: int | None, output: str, phase: str, args: argparse.Namespace) -> dict:
    """A child that left no result: over the time limit, over the memory cap, killed, or failed."""
    if returncode is None:
        return {"status": "timeout", "note": f"over the {args.timeout:.0f} s time limit in {phase}"}
    if returncode == -signal.SIGKILL:
        return {"status": "killed", "note": f"killed by SIGKILL in {phase} (likely the kernel's OOM killer: the "
                                            "machine ran out before the cap)"}
    if MEMORY_ERRORS.search(output):
        return {"status": "over_cap", "note": f"allocation failed in {phase} under the {args.max_gb:g} GB cap"}
    if returncode in (-signal.SIGSEGV, -signal.SIGBUS) and not output.strip():
        # a native library whose mmap failed under the cap may crash without a word (seen at 0.5 GB in import)
        return {"status": "over_cap", "note": f"crashed silently ({signal.Signals(-returncode).name}) in {phase} "
                                              f"under the {args.max_gb:g} GB cap: an allocation that could not "
                                              "report its failure"}
    last = output.strip().splitlines()[-1:] or ["(no output)"]
    return {"status": "failed", "note": f"exit status {returncode} in {phase}: {last[0][:300]}"}


def select_cases(patterns: list[str] | None) -> list[Case]:
    """The cases whose names match one of ``patterns`` (shell patterns), in table order; all default ones if None."""
    if not patterns:
        return [case for case in CASES.values() if case.default]
    chosen = [case for case in CASES.values() if any(fnmatch.fnmatchcase(case.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in CASES)]
    if unknown:
        raise SystemExit(f"--cases: no case matches {unknown}; known: {', '.join(CASES)}")
    return chosen


# --- the report -------------------------------------------------------------------------------------------------
def fits(row: dict, size_gb: float) -> str:
    """Whether the step's total fits a GPU of ``size_gb`` (by the CPU proxy); "?" when the cap hid the answer."""
    if row["status"] == "ok":
        return "yes" if row["step_total_gb"] <= size_gb else "no"
    if row["status"] == "over_cap" and row["max_gb"] >= size_gb:
        return "no"
    return "?"


def add_comparisons(rows: list[dict]) -> None:
    """Each checkpointed row's total against its peer without checkpointing, run in the same report."""
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        peer = by_name.get(row["name"].removesuffix("_ckpt")) if row["name"].endswith("_ckpt") else None
        if peer and row["status"] == peer["status"] == "ok":
            row["total_vs_without"] = row["step_total_gb"] / peer["step_total_gb"]
            row["time_vs_without"] = row["step_seconds"] / peer["step_seconds"]


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_row(row: dict) -> str:
    views = f"{row['views']} x {row['view_size']}^2" if "views" in row else str(row["num_views"] or "recipe's")
    params = f"{row['parameters'] / 1e6:.1f} M" if "parameters" in row else "-"
    if row["status"] == "ok":
        rise, total, seconds = _gb(row["step_rise_gb"]), _gb(row["step_total_gb"]), f"{row['step_seconds']:.1f}"
    elif row["status"] == "over_cap":
        rise = total = f"> {row['max_gb']:g} (cap)"
        seconds = "-"
    else:  # timeout, killed, failed
        rise, total = row["status"], "-"
        seconds = f"> {row['timeout']:g}" if row["status"] == "timeout" else "-"
    ratio = (f"{row['total_vs_without']:.2f}x the total, {row['time_vs_without']:.2f}x the time without"
             if "total_vs_without" in row else "")
    note = "; ".join([*row.get("notes", []), *([row["note"]] if row.get("note") else []), *([ratio] if ratio else [])])
    checkpointing = row["checkpointing"]  # the case's flag until its process describes it
    checkpointing = ("on" if checkpointing else "off") if isinstance(checkpointing, bool) else checkpointing
    cells = [row["name"], row["experiment"], f"{row['volume']}^3", views, checkpointing, params,
             _gb(row.get("build_peak_gb")), rise, total, seconds, *(fits(row, g) for g in GPU_SIZES_GB),
             note.replace("|", "/")]
    return "| " + " | ".join(cells) + " |"


def markdown(report: dict) -> str:
    lines = [f"## Peak memory of one training step, CPU, {report['date']}", "",
             f"- `{report['command']}`; {provenance.describe(report)} (threads: each case's)",
             f"- each case capped at {report['max_gb']:g} GB of address space and {report['timeout']:.0f} s",
             "- each case in a fresh process: the recipe's model, loss and AdamW (fused) as the trainer builds them, "
             "the trainer's `TrainStep` (forward, loss, backward, clipping, AdamW, schedule) on a synthetic batch of "
             "1 (random views and target in [0, 1]), **float32 on the CPU**; "
             f"{report['steps']} steps, the last reported",
             f"- loss: the recipe's, {report['perceptual_note']}",
             "- GB = 2^30 bytes of resident memory (Linux VmRSS / VmHWM). *build peak*: building model, loss, "
             "optimizer and batch, over the process once torch and the configs are loaded. *step rise*: the step's "
             "peak over the resident size just before it. *step total*: the step's peak over the loaded process "
             "(weights, optimizer state, batch, activations, gradients): the fit columns judge it",
             "- **CPU resident memory is a proxy for GPU memory, not a measurement of it**: the CUDA caching "
             "allocator rounds and keeps blocks, cuDNN takes workspaces, the CUDA context adds ~0.5 GB, and GPU "
             "training runs under bf16 autocast, which keeps most activations in half the bytes. A fit judged here "
             "is a float32 estimate; measure on the GPU (`scripts/gpu_check.sh`) before relying on it",
             "", "| case | recipe | volume | views | checkpointing | params | build peak GB | step rise GB | "
             "step total GB | step s | fits 24 GB | fits 40 GB | fits 80 GB | note |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    lines += [table_row(row) for row in report["rows"]]
    return "\n".join(lines) + "\n"


def perceptual_note(mode: str) -> str:
    if mode == "off":
        return ("perceptual term at weight 0 (the VGG16 ImageNet file is absent offline; its VGG activations are "
                "not counted: `--perceptual random` counts them on a random VGG16)")
    return "perceptual term on a randomly initialised VGG16 (the same memory as the ImageNet weights)"


# --- command line -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=lambda s: [p for p in s.split(",") if p], default=None,
                        help="comma-separated case names or shell patterns (default: every case but the tiny one)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--max-gb", type=float, default=20.0, help="address-space cap of each case, GB (2^30 B)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each case may take")
    parser.add_argument("--steps", type=int, default=2, help="training steps per case; the last is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (other runs share the CPU)")
    parser.add_argument("--perceptual", choices=["off", "random"], default="off",
                        help="off: the perceptual term at weight 0; random: on a random VGG16 (same memory)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes <out>.json and <out>.md")
    parser.add_argument("--case", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def list_cases() -> str:
    lines = []
    for case in CASES.values():
        views = f"{case.num_views} views" if case.num_views else "the recipe's views"
        extra = "" if case.default else " (not in the default table: the harness rehearsal)"
        lines.append(f"{case.name:<20} experiment={case.experiment}, {case.volume}^3, {views}, checkpointing "
                     f"{'on' if case.checkpointing else 'off'}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case is not None:  # inside a case's process
        measure_case(json.loads(args.case.read_text()), args.steps, args.threads, args.perceptual, args.case_out)
        return 0
    if args.list:
        print(list_cases())
        return 0
    cases = select_cases(args.cases)
    rows = []
    for case in cases:
        print(f"[bench_memory] {case.name} ...", flush=True)
        rows.append(run_case(case, args))
        print(f"[bench_memory] {case.name}: {rows[-1]['status']} {rows[-1].get('note', '')}".rstrip(), flush=True)
    add_comparisons(rows)
    report = {"command": " ".join(["python benchmarks/bench_memory.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": dt.datetime.now().isoformat(timespec="seconds"), **provenance.record(threads=args.threads),
              "precision": "fp32", "device": "cpu", "batch": 1, "steps": args.steps,
              "max_gb": args.max_gb, "timeout": args.timeout, "perceptual": args.perceptual,
              "perceptual_note": perceptual_note(args.perceptual), "gpu_sizes_gb": list(GPU_SIZES_GB), "rows": rows}
    text = markdown(report)
    write_json_atomic(args.out.with_name(args.out.name + ".json"), report)
    write_text_atomic(args.out.with_name(args.out.name + ".md"), text)
    print(text)
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
