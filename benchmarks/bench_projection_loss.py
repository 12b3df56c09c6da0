"""What the projection-consistency loss (loss.weights.projection, x2ct/losses/projection.py) adds to a training step.

Run from the repository root::

    python benchmarks/bench_projection_loss.py            # CPU: 32^3 and 64^3; CUDA (when present): 64^3, 128^3
    python benchmarks/bench_projection_loss.py --device cpu --volumes 32 --views 2,8

Per case (volume size, number of views): the milestone-4 model (the hybrid CNN-ViT with the geometric lift,
attention fusion and angle embedding, at the device's width) takes one training step on random views (forward,
L1 + deep supervision, backward, AdamW step) without and with the projection term (L1 between DRRs of the
prediction at the input angles and the input views; rendered by the project's differentiable cone-beam projector),
and the loss alone (forward + backward on a random volume). Reports the median seconds of each and the ratio
step-with / step-without: the peer is the same step in the same process. Writes ``projection_loss_<device>.json``
and ``.md`` under ``--out``, with the provenance record of ``x2ct.provenance`` (``X2CT_SHARED_MACHINE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402

DEVICE_SETUPS = {
    "cpu": {"volumes": (32, 64), "base_channels": 8, "view_ratio": 2, "batch": 1},
    "cuda": {"volumes": (64, 128), "base_channels": 32, "view_ratio": 4, "batch": 2},
}
# the protocol of the phantom data sets: 352 mm cube, cone beam SID 1000 / SDD 1500 mm, detector 512 mm wide
FOV_MM = 352.0
DETECTOR_MM = 512.0


def input_spec(volume: int, view: int, angles: list[float]) -> dict:
    """A data set's input spec for a phantom protocol at this size (what the trainer hands the loss)."""
    from x2ct.physics.geometry import ProjectionGeometry

    geometry = ProjectionGeometry(kind="cone", angles_deg=angles, detector_shape=(view, view),
                                  pixel_spacing_mm=(DETECTOR_MM / view,) * 2, source_to_isocenter_mm=1000.0,
                                  source_to_detector_mm=1500.0)
    return {"protocol": "bench", "views": [f"angle_{a:g}" for a in angles], "angles_deg": angles,
            "view_shape": [view, view], "radiograph": "log", "normalisation": "fixed", "scale": 8.0,
            "hu_window": [-1000.0, 1500.0], "ct_size": [volume] * 3, "ct_fov_mm": [FOV_MM] * 3, "mu_water": 0.0193,
            "geometry": geometry.to_dict()}


def median_seconds(fn, device, steps: int) -> float:
    import torch

    fn()  # warm-up (optimiser state, sampling grids)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(device_name: str, volume: int, num_views: int, setup: dict, steps: int) -> dict:
    import torch

    from x2ct.data.input_spec import InputSpec
    from x2ct.losses import ReconstructionLoss
    from x2ct.models import HybridViT

    torch.manual_seed(0)
    device = torch.device(device_name)
    view = volume * setup["view_ratio"]
    angles = [180.0 * i / num_views for i in range(num_views)]
    spec = input_spec(volume, view, angles)
    model = HybridViT(num_views=num_views, view_size=view, volume_size=volume, base_channels=setup["base_channels"],
                      depth=3, channel_multipliers=(1, 2, 4, 8), num_heads=(2, 2, 4, 8), transformer_levels=(1,),
                      pyramid_channels=8, cross_view_grid=8, view_angles_deg=angles, lift="geometric",
                      fusion="attention", view_angle_embedding=True, geometry=spec["geometry"],
                      volume_fov_mm=spec["ct_fov_mm"]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    views = torch.rand(setup["batch"], num_views, 1, view, view, device=device)
    angle_batch = torch.tensor([angles] * setup["batch"], device=device)
    target = torch.rand(setup["batch"], 1, volume, volume, volume, device=device)
    plain = ReconstructionLoss({"l1": 1.0, "deep_supervision": 0.2}).to(device)
    with_projection = ReconstructionLoss({"l1": 1.0, "deep_supervision": 0.2, "projection": 0.1},
                                         input_spec=InputSpec.from_dict(spec)).to(device)

    def step(criterion) -> None:
        out = model(views, angle_batch)
        loss, _ = criterion(out, target, views=views, angles_deg=angle_batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    projection = with_projection.components["projection"]
    volume01 = torch.rand_like(target, requires_grad=True)

    def loss_alone() -> None:
        projection(volume01, views, angle_batch).backward()

    without = median_seconds(lambda: step(plain), device, steps)
    with_term = median_seconds(lambda: step(with_projection), device, steps)
    alone = median_seconds(loss_alone, device, steps)
    return {"volume": volume, "view": view, "views": num_views, "batch": setup["batch"],
            "step_s": without, "step_with_projection_s": with_term, "projection_loss_s": alone,
            "ratio": with_term / without}


def markdown(report: dict) -> str:
    lines = [f"# Projection-consistency loss cost ({report['device']})", "",
             f"{report['generated']}; {provenance.describe(report)}.", "",
             "| volume | views (size) | batch | step s | step + projection s | ratio | loss alone s |",
             "|---|---|---|---|---|---|---|"]
    for r in report["cases"]:
        lines.append(f"| {r['volume']}^3 | {r['views']} ({r['view']}^2) | {r['batch']} | {r['step_s']:.3f} | "
                     f"{r['step_with_projection_s']:.3f} | {r['ratio']:.2f} | {r['projection_loss_s']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--volumes", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    parser.add_argument("--views", type=lambda s: tuple(int(v) for v in s.split(",")), default=(2, 4, 8))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    setup = DEVICE_SETUPS[device]
    cases = []
    for volume in args.volumes or setup["volumes"]:
        for num_views in args.views:
            case = run_case(device, volume, num_views, setup, args.steps)
            cases.append(case)
            print(f"{volume}^3, {num_views} views: step {case['step_s']:.3f} s, with projection "
                  f"{case['step_with_projection_s']:.3f} s (x{case['ratio']:.2f}), loss alone "
                  f"{case['projection_loss_s']:.3f} s", flush=True)
    report = {"generated": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "device": device,
              **provenance.record(), "cases": cases}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / f"projection_loss_{device}.json", report)
    write_text_atomic(args.out / f"projection_loss_{device}.md", markdown(report))
    print(markdown(report))
    print(json.dumps({"written": str(args.out / f"projection_loss_{device}.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
