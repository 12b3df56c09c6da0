"""Size, FLOPs, training throughput and peak memory of each model variant.

Run from the repository root::

    python benchmarks/bench_models.py                 # CPU: tiny widths; CUDA (when present): the real sizes, bf16
    python benchmarks/bench_models.py --device cpu --models hybrid_vit --volumes 32
    python benchmarks/bench_models.py --device cpu --models hybrid_vit --volumes 64 --base-channels 32 --view 512 \
        --steps 2 --tag _m1_full                      # milestone 1's real size, on the CPU (slow)

Per case (a model config from conf/model/ at a volume size): parameters (``count_parameters``), FLOPs of one
training sample (forward + backward, ``torch.utils.flop_counter.FlopCounterMode``), training samples/s (forward,
the model's loss = mean of its outputs, backward, AdamW step; median over timed steps after a warm-up) and peak
memory of those steps. Every case runs in a fresh subprocess so peaks never mix. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` (model, optimiser state, activations, gradients); on CPU the rise of the
process's peak resident set size (Linux ``VmHWM``, reset just before the warm-up) over its size at that moment,
so it counts activations, gradients and optimiser state but not the model's weights.

The model sees random views and its output is reduced to a mean: the numbers measure the network, not data
loading or a loss. Writes ``models_<device>.json`` and ``models_<device>.md`` under ``--out``, with the provenance
record of ``x2ct.provenance`` (commit, machine, threads: the cases inherit torch's default, ``X2CT_SHARED_MACHINE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from peak_memory import PeakMemory  # noqa: E402  (benchmarks/peak_memory.py)

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402

MODELS = ("baseline_unet", "hybrid_vit", "multires")
# the cascade is for large volumes: on CUDA it runs at 128^3 and 256^3 (the others at 64^3 and 128^3)
CUDA_VOLUMES = {"multires": (128, 256)}
# what each device runs: CPU a tiny width (minutes on 2 cores), CUDA the source design's sizes
DEVICE_SETUPS = {
    "cpu": {"volumes": (32, 64), "base_channels": 8, "view_ratio": 2, "batch": 1, "precision": "fp32"},
    "cuda": {"volumes": (64, 128), "base_channels": 32, "view_ratio": None, "batch": 2, "precision": "bf16"},
}
CUDA_VIEW_SIZE = 512  # the source design's X-rays, at every volume size


def model_config(name: str, volume: int, view: int, base_channels: int, checkpointing: bool) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "model" / f"{name}.yaml"))
    cfg.update(num_views=2, view_size=view, volume_size=volume, view_angles_deg=[0.0, 90.0],
               base_channels=base_channels)
    if checkpointing and "checkpointing" in cfg:
        cfg["checkpointing"] = True
    if name == "multires":  # coarse stage at half the size with the same width; patches for 256^3
        cfg.pop("base_channels")
        cfg["stage_sizes"] = [volume // 2, volume] if volume <= 128 else [volume // 4, volume // 2, volume]
        cfg["coarse_kwargs"] = {**cfg["coarse_kwargs"], "base_channels": base_channels}
        if volume >= 256:
            cfg["train_patch_size"] = volume // 4
        if volume // 2 < 2 ** cfg["coarse_kwargs"]["depth"] * 2:  # tiny CPU sizes: a shallower coarse stage
            cfg["coarse_kwargs"].update(depth=2, channel_multipliers=[1, 2, 4], transformer_levels=[1],
                                        num_heads=[2, 4, 8])
    return cfg


def run_case(spec: dict) -> dict:
    """One case, in this (fresh) process."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    from x2ct.models import count_parameters

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model = instantiate(spec["model"]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    views = torch.rand(spec["batch"], 2, 1, spec["view"], spec["view"], device=device)
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(views)
        outputs = [out.volume, *out.deep_supervision]
        sum(o.float().mean() for o in outputs).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    peak = PeakMemory(device, include_existing=True)  # CUDA: weights, optimiser state, activations, gradients
    peak.start()
    step()  # warm-up (allocates the optimiser state)
    sync()
    times = []
    deadline = time.perf_counter() + spec["budget_s"]
    while len(times) < spec["min_steps"] or (len(times) < spec["steps"] and time.perf_counter() < deadline):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak_mb = peak.peak_mb()
    with FlopCounterMode(display=False) as counter:  # one sample's forward + backward
        single = views[:1]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(single)
        outputs = [out.volume, *out.deep_supervision]
        sum(o.float().mean() for o in outputs).backward()
    model.zero_grad(set_to_none=True)

    return {"parameters": count_parameters(model), "gflops_per_sample": counter.get_total_flops() / 1e9,
            "seconds_per_step": seconds, "samples_per_s": spec["batch"] / seconds, "steps_timed": len(times),
            "peak_mb": peak_mb}


def run_in_subprocess(spec: dict, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, __file__, "--case", str(spec_path), "--case-out", str(out_path)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return {"error": "out of memory" if "out of memory" in result.stderr.lower() else tail[0]}
        return json.loads(out_path.read_text())


def run_device(device: str, args: argparse.Namespace) -> dict:
    setup = dict(DEVICE_SETUPS[device])
    if args.base_channels is not None:
        setup["base_channels"] = args.base_channels
    if args.view is not None:
        setup["view_ratio"], setup["view"] = None, args.view
    rows = []
    for name in args.models:
        volumes = args.volumes or (CUDA_VOLUMES.get(name, setup["volumes"]) if device == "cuda" else setup["volumes"])
        for volume in volumes:
            for checkpointing in ((False, True) if device == "cuda" and name == "hybrid_vit" else (False,)):
                ratio = setup["view_ratio"]
                view = setup.get("view", CUDA_VIEW_SIZE) if ratio is None else volume * ratio
                spec = {"device": device, "batch": setup["batch"], "precision": setup["precision"], "view": view,
                        "steps": args.steps, "min_steps": args.min_steps, "budget_s": args.budget_s,
                        "model": model_config(name, volume, view, setup["base_channels"], checkpointing)}
                result = run_in_subprocess(spec, args.timeout_s)
                row = {"model": name, "volume": volume, "view": view, "batch": setup["batch"],
                       "base_channels": setup["base_channels"], "precision": setup["precision"],
                       "checkpointing": checkpointing, **result}
                print(_line(row), flush=True)
                rows.append(row)
    return {"device": device, "setup": setup, "rows": rows, **provenance.record(),
            "date": dt.datetime.now().isoformat(timespec="seconds")}


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:>14} {row['volume']:>4}^3: {row['error']}"
    return (f"{row['model']:>14} {row['volume']:>4}^3 views {row['view']}^2 batch {row['batch']}"
            f"{' ckpt' if row['checkpointing'] else ''}: {row['parameters']:,} params, "
            f"{row['gflops_per_sample']:.1f} GFLOP/sample, {row['samples_per_s']:.2f} samples/s, "
            f"peak {row['peak_mb']:.0f} MB")


def markdown(report: dict) -> str:
    setup = report["setup"]
    lines = [f"## Models on {report['device']}, {report['date']}", "", f"{provenance.describe(report)}", "",
             f"base_channels {setup['base_channels']}, batch {setup['batch']}, {setup['precision']}, two views; "
             "training step = forward + backward + AdamW", "",
             "| model | volume | views | checkpointing | parameters | GFLOP / sample (fwd+bwd) | samples/s | "
             "peak MB |", "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['volume']}^3 | {row['view']}^2 | {row['checkpointing']} | "
                         f"{row['error']} | | | |")
            continue
        lines.append(f"| {row['model']} | {row['volume']}^3 | {row['view']}^2 | {row['checkpointing']} | "
                     f"{row['parameters']:,} | {row['gflops_per_sample']:.1f} | {row['samples_per_s']:.2f} | "
                     f"{row['peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--volumes", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    parser.add_argument("--base-channels", type=int, default=None, help="instead of the device's default width")
    parser.add_argument("--view", type=int, default=None, help="view size instead of the device's default")
    parser.add_argument("--tag", default="", help="suffix of the output files (models_<device><tag>.json)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps at most")
    parser.add_argument("--min-steps", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=30.0, help="stop timing a case after this long")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--case", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case is not None:  # inside a case's subprocess
        write_json_atomic(args.case_out, run_case(json.loads(args.case.read_text())))
        return 0
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    report = run_device(device, args)
    stem = f"models_{device}{args.tag}"
    write_json_atomic(args.out / f"{stem}.json", report)
    write_text_atomic(args.out / f"{stem}.md", markdown(report))
    print(f"wrote {args.out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
