"""The mean-training-CT reference of the results tables ("mean of the first 64 of the 112 training CTs"), recomputed
into a results file, so that those rows regenerate from a JSON that records its commit and machine.

Run from the repository root::

    X2CT_SHARED_MACHINE=1 python benchmarks/mean_volume_reference.py   # writes mean_volume_reference_cpu.{json,md}

``evaluate.py`` scores the mean CT of a model's training split beside the model (``ref_psnr``, ``ref_ssim``, and
``ref_scanned_psnr`` / ``ref_scanned_ssim`` where the evaluated data set stores scanned-voxel masks): it needs no
model, only the two data sets. Per row of ``ROWS`` (a training data set, an evaluated data set and split) this
script does what ``evaluate.py`` does for that pair: the mean volume of the training data set's train split
(``x2ct.data.reference.mean_volume``: its first 64 patients, float32, then float64, as
``x2ct.evaluation.evaluator._reference_volume``), scored against every patient of the evaluated split by
``x2ct.evaluation.evaluator.patient_metrics`` (the target in [0, 1] as float64, the scanned mask where the data set
stores masks), then summarised by ``x2ct.evaluation.summary.summarise`` (mean, sample std with ddof 1: the
"+-" across patients of every other table). The data sets are prepared on first use from their
``conf/data/<name>.yaml`` (the real CT needs ``python -m x2ct.data.example_ct`` once). Writes
``mean_volume_reference_cpu.json`` (per row: the data configs, the per-patient values and their summary, with the
provenance record of ``x2ct.provenance``) and the ``.md`` beside it under ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402

METRICS = ("ref_psnr", "ref_ssim", "ref_scanned_psnr", "ref_scanned_ssim")


@dataclass(frozen=True)
class Reference:
    name: str  # the row's name in the results file
    train_data: str  # conf/data/<train_data>.yaml: whose train split gives the mean volume
    eval_data: str  # conf/data/<eval_data>.yaml: whose split is scored
    split: str
    shown_in: str  # the docs' tables that show it


ROWS = (
    Reference("benchmark_test", "benchmark", "benchmark", "test",
              "README.md / docs/results.md milestone table and milestone 4's views table: test PSNR, test SSIM"),
    Reference("benchmark_real_ct_demo_grid", "benchmark", "example_ct_demo", "test",
              "milestone table: real CT PSNR, whole volume, table kept (evaluate.py --data example_ct_demo), SSIM"),
    Reference("benchmark_real_ct_benchmark_grid", "benchmark", "example_ct_benchmark", "test",
              "milestone 4's views table: real CT PSNR, SSIM (evaluate.py --data example_ct_benchmark)"),
    Reference("benchmark_real_ct_scanned", "benchmark", "example_ct_32", "test",
              "milestone and views tables: real CT PSNR, scanned, table removed, seed 1 (ref_scanned_psnr)"),
    Reference("benchmark_v2_real_ct_scanned", "benchmark_v2", "example_ct_32", "test",
              "docs/results.md 'From the PA view alone': real CT PSNR, scanned, table removed (ref_scanned_psnr)"),
    Reference("phantoms_demo_test", "phantoms_demo", "phantoms_demo", "test",
              "docs/results.md 'What the demo measured': PSNR, SSIM (mean +- std over the 24 test phantoms)"),
    Reference("phantoms_demo_real_ct", "phantoms_demo", "example_ct_demo", "test",
              "docs/results.md 'What the demo measured': real CT PSNR / SSIM"),
)


def data_root(name: str) -> Path:
    """The root of ``conf/data/<name>.yaml``, prepared if missing (as ``evaluate.py --data`` does)."""
    from x2ct.config_files import compose_config
    from x2ct.data.ensure import ensure_dataset

    return ensure_dataset(compose_config("train", [f"data={name}"]).data)


@functools.cache
def reference_volume(train_root: Path, size: tuple[int, ...]) -> tuple[torch.Tensor, int, int]:
    """The mean CT of ``train_root``'s train split as ``evaluate.py`` scores it (``_reference_volume``); computed
    once per training set (four rows share ``benchmark``'s)."""
    from x2ct.data.dataset import PatientDRRDataset
    from x2ct.data.reference import mean_volume, mean_volume_patients

    train = PatientDRRDataset(train_root, "train")
    if not len(train) or tuple(train.manifest["ct"]["size"]) != size:
        raise ValueError(f"{train_root}: no train split of CT size {size} to average")
    return mean_volume(train)[0].double(), mean_volume_patients(train), len(train)


def score(row: Reference) -> dict:
    """One row: the mean volume of ``row.train_data`` scored on every patient of ``row.eval_data``'s split."""
    import numpy as np

    from x2ct.data.dataset import PatientDRRDataset
    from x2ct.data.preprocess import AIR_HU
    from x2ct.data.readers import read_nifti
    from x2ct.evaluation.evaluator import patient_metrics
    from x2ct.evaluation.summary import summarise

    train_root, eval_root = data_root(row.train_data), data_root(row.eval_data)
    dataset = PatientDRRDataset(eval_root, row.split)
    reference, averaged, train_patients = reference_volume(train_root, tuple(dataset.manifest["ct"]["size"]))
    hu_window = tuple(float(v) for v in dataset.hu_window)
    patients = []
    for index, pid in enumerate(dataset.patient_ids):
        target = dataset.ct(index)[0].double()
        scanned = dataset.scanned(pid, target.shape)[0] if dataset.has_scanned_masks else None
        target_hu = torch.from_numpy(np.maximum(read_nifti(dataset.layout.ct(pid)).hu, np.float32(AIR_HU)))
        metrics = patient_metrics(reference, target, target_hu, hu_window, reference=reference, scanned=scanned)
        patients.append({"patient_id": pid, **{k: metrics[k] for k in METRICS if k in metrics}})
    stats = summarise(patients, [k for k in METRICS if k in patients[0]])
    return {"name": row.name, "train_data": row.train_data, "train_root": str(train_root),
            "train_patients": train_patients, "mean_volume_patients": averaged, "eval_data": row.eval_data,
            "eval_root": str(eval_root), "split": row.split, "scanned_masks": dataset.has_scanned_masks,
            "shown_in": row.shown_in, "stats": stats, "patients": patients}


def cell(stat: dict, decimals: int) -> str:
    """``mean +- std`` over the patients, or the one patient's value."""
    if stat["n"] < 2:
        return f"{stat['mean']:.{decimals}f}"
    return f"{stat['mean']:.{decimals}f} +- {stat['std']:.{decimals}f}"


def table(report: dict) -> str:
    """The rows as a Markdown table (printed, and in the .md file)."""
    lines = ["| row | mean of | scored on | patients | ref_psnr | ref_ssim | ref_scanned_psnr | ref_scanned_ssim |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        s = r["stats"]
        cells = [cell(s[k], d) if k in s else "" for k, d in zip(METRICS, (2, 4, 2, 4), strict=True)]
        lines.append(f"| {r['name']} | {r['train_data']} train ({r['mean_volume_patients']} of "
                     f"{r['train_patients']}) | {r['eval_data']} {r['split']} | {len(r['patients'])} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The .md file: what ran where, then the table."""
    return "\n".join([
        "# The mean-training-CT reference (evaluate.py's ref_* metrics)", "",
        f"`{report['command']}`, {report['generated']}, {report['seconds']:.0f} s; {provenance.describe(report)}.",
        "", "Mean +- sample std (ddof 1) over the patients of the scored split; one patient: its value.", "",
        table(report), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for row in ROWS:
        rows.append(score(row))
        print(f"{row.name}: {json.dumps({k: round(v['mean'], 4) for k, v in rows[-1]['stats'].items()})}",
              flush=True)
    report = {"generated": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join(["python benchmarks/mean_volume_reference.py", *sys.argv[1:]]),
              **provenance.record(), "seconds": time.perf_counter() - start, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "mean_volume_reference_cpu.json", report)
    write_text_atomic(args.out / "mean_volume_reference_cpu.md", markdown(report))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
