"""Training throughput of the real trainer (``train.py``), one checkout against another, in the same run.

``bench_models.py`` times the network alone (forward, backward, AdamW); this times what a user's run does per
step: data loading, the recipe's loss, clipping, the optimizer, the EMA, logging. Each checkout (``--repo``, default
this one) trains the same recipe on the same prepared data set in its own process, all at once, each pinned to its
own CPU core (``taskset``) with one thread, so the machine's load is shared equally and the ratio is fair::

    git worktree add /tmp/x2ct-before <commit>
    python benchmarks/bench_train_step.py --repo /tmp/x2ct-before --repo . --names before,after

Measured: ``samples_per_s`` as the trainer logs it (samples of all ranks / wall time of the logging window), over
the last epoch (the first one warms up caches and allocators). Default recipe: milestone 1 (hybrid CNN-ViT, the
six-part loss with perceptual ``weights=random``) at width 8 on 64^3 volumes from two 128^2 views (the procedural
phantoms), batch 2, fp32, EMA 0.999. Writes ``train_step_cpu.{json,md}`` under ``--out``, with the provenance
record of ``x2ct.provenance`` (``code``: this checkout's; each row names the commit it timed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402

RECIPE = ["experiment=milestone1", "data=phantoms", "model.base_channels=8", "data.batch_size=2",
          "data.num_workers=0", "loss.components.perceptual.weights=random", "trainer.accelerator=cpu",
          "trainer.precision=fp32", "trainer.ema_decay=0.999", "trainer.max_epochs=2", "trainer.val_every_epochs=2",
          "trainer.limit_val_batches=1", "test_after_training=false", "logger=none"]
DATA_PREPARE = ["source=phantom", "protocol=default", "source.num_patients=12", "workers=1"]


def prepare_data(root: Path) -> None:
    """The shared data set, prepared once with this checkout's prepare.py."""
    if (root / "dataset.json").exists():
        return
    subprocess.run([sys.executable, str(REPO_ROOT / "prepare.py"), *DATA_PREPARE, f"output_dir={root}"], check=True)


def run_all(repos: list[Path], names: list[str], data: Path, out: Path, steps: int, extra: list[str]) -> list[dict]:
    """Start one training per checkout at once, each on its own core; return each one's last-epoch rate."""
    cores = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    procs = []
    for k, (repo, name) in enumerate(zip(repos, names, strict=True)):
        run_out = out / name
        args = [*RECIPE, f"data.root={data}", "data.prepare=null", f"trainer.limit_train_batches={steps}",
                f"trainer.log_every_steps={steps}", f"paths.output_dir={run_out}", "run_name=bench", *extra]
        pin = ["taskset", "-c", str(cores[k % len(cores)])]
        log = open(out / f"{name}.log", "w")  # closed after the process ends
        command = [*pin, sys.executable, str(repo / "train.py"), *args]
        proc = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((name, repo, run_out, log, proc))
    rows = []
    for name, repo, run_out, log, proc in procs:
        code = proc.wait()
        log.close()
        if code != 0:
            raise RuntimeError(f"{name} ({repo}) failed with exit code {code}; see {out / (name + '.log')}")
        records = [json.loads(line) for line in (run_out / "runs" / "bench" / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in records if r["split"] == "train" and r["epoch"] == max(r["epoch"] for r in records)]
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        rows.append({"name": name, "repo": str(repo), "commit": commit, "samples_per_s": last[-1]["samples_per_s"],
                     "steps_timed": steps, "loss": last[-1]["loss"]})
    return rows


def markdown(report: dict) -> str:
    base = report["rows"][0]["samples_per_s"]
    lines = [f"## Trainer throughput on the CPU, {report['date']}", "",
             f"{' '.join(report['recipe'])}; {report['steps']} steps per epoch, rate of the last epoch; each "
             f"checkout on its own core with one thread, all at once; {provenance.describe(report)}", "",
             "| checkout | commit | samples/s | ratio to the first |", "|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | {row['commit']} | {row['samples_per_s']:.3f} | "
                     f"{row['samples_per_s'] / base:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", action="append", type=Path, help="a checkout to time (repeatable; default: this)")
    parser.add_argument("--names", default=None, help="comma-separated names of the checkouts")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per epoch")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "bench_train_step")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every checkout")
    args = parser.parse_args()
    repos = [r.resolve() for r in (args.repo or [REPO_ROOT])]
    names = args.names.split(",") if args.names else [r.name for r in repos]
    work = REPO_ROOT / "outputs" / "bench_train_step"  # run folders: not results, never committed
    work.mkdir(parents=True, exist_ok=True)
    prepare_data(args.data.resolve())
    rows = run_all(repos, names, args.data.resolve(), work, args.steps, args.overrides)
    report = {"recipe": RECIPE + args.overrides, "steps": args.steps, "rows": rows,
              "date": dt.datetime.now().isoformat(timespec="seconds"), **provenance.record(threads=1)}
    write_json_atomic(args.out / "train_step_cpu.json", report)
    write_text_atomic(args.out / "train_step_cpu.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
