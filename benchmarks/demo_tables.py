"""The demo's table of docs/results.md ("What the demo measured"), from its results file.

    python benchmarks/demo_tables.py --from outputs/multiruns/demo_<stamp> --out benchmarks/results/demo_cpu.json
    python benchmarks/demo_tables.py benchmarks/results/demo_cpu.json

``--from`` collects a ``bash scripts/demo.sh`` sweep into one results file: per run (with and without the learned
template volume) the mean and the std over patients of each metric of ``evaluate.py``'s reports on the test split
(``best_test``) and on the real example CT (``best_example_ct``), its wall time, and the provenance the run
recorded (commit, machine, threads, shared). Without it, prints the table from such a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO))

from x2ct.atomic_io import write_json_atomic  # noqa: E402

EVALUATIONS = ("best_test", "best_example_ct")
PROVENANCE = ("code", "machine", "threads", "shared")
HEADER = ("| baseline, `base_channels=16` | PSNR (dB) | SSIM | MAE (HU) | lungs PSNR | bone PSNR | heart PSNR | "
          "X2CT-GAN PSNR 3D / slice SSIM | real CT PSNR / SSIM / MAE |")
LABELS = {True: "with template (`learned_prior=true`, default)", False: "without template"}


def collect(sweep: Path) -> dict:
    """The results file of a demo sweep folder (its numbered jobs, each evaluated by scripts/demo.sh)."""
    from omegaconf import OmegaConf

    runs = []
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        info = json.loads((job / "run_info.json").read_text())
        config = OmegaConf.load(job / "config_resolved.yaml")
        evaluations = {}
        for name in EVALUATIONS:
            metrics = json.loads((job / "evaluation" / name / "summary.json").read_text())["metrics"]
            evaluations[name] = {key: {"mean": m["mean"], "std": m.get("std")} for key, m in metrics.items()
                                 if isinstance(m, dict) and "mean" in m}
        runs.append({"run": f"{sweep.name}/{job.name}", "learned_prior": bool(config.model.learned_prior),
                     "seed": int(config.seed), "wall_time_s": info.get("wall_time_s"), "evaluations": evaluations,
                     **{key: info.get(key) for key in PROVENANCE}})
    if not runs:
        raise SystemExit(f"{sweep}: no numbered job folders; pass a scripts/demo.sh sweep folder")
    return {"source": f"scripts/demo.sh sweep {sweep.name}", **{key: runs[0][key] for key in PROVENANCE}, "runs": runs}


def pm(stat: dict, decimals: int) -> str:
    return f"{stat['mean']:.{decimals}f} +- {stat['std']:.{decimals}f}"


def table(record: dict) -> str:
    """The Markdown table: one row per run, then the mean-volume reference's."""
    lines = [HEADER, "|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(record["runs"], key=lambda r: not r["learned_prior"]):
        test, real = (run["evaluations"][name] for name in EVALUATIONS)
        lines.append(f"| {LABELS[run['learned_prior']]} | {pm(test['psnr'], 2)} | {pm(test['ssim'], 4)} | "
                     f"{pm(test['mae_hu'], 1)} | {pm(test['lungs_psnr'], 2)} | {pm(test['bone_psnr'], 2)} | "
                     f"{pm(test['heart_psnr'], 2)} | {test['x2ct_gan_psnr_3d']['mean']:.2f} / "
                     f"{test['x2ct_gan_ssim_slice']['mean']:.4f} | {real['psnr']['mean']:.2f} / "
                     f"{real['ssim']['mean']:.3f} / {real['mae_hu']['mean']:.0f} HU |")
    test, real = (record["runs"][0]["evaluations"][name] for name in EVALUATIONS)
    cells = ["mean of the first 64 of the 112 training CTs (reference)", pm(test["ref_psnr"], 2),
             pm(test["ref_ssim"], 4), "", "", "", "", "",
             f"{real['ref_psnr']['mean']:.2f} / {real['ref_ssim']['mean']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="results files to print the table of")
    parser.add_argument("--from", dest="sweep", type=Path, help="a demo sweep folder to collect")
    parser.add_argument("--out", type=Path, help="where --from writes the results file")
    args = parser.parse_args(argv)
    if args.sweep is not None:
        if args.out is None:
            parser.error("--from needs --out")
        write_json_atomic(args.out, collect(args.sweep))
        args.files.append(args.out)
    for path in args.files:
        print(f"<!-- {path} -->")
        print(table(json.loads(path.read_text())))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
