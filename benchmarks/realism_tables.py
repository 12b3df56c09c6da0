"""The radiograph-realism table of docs/results.md, regenerated from its comparison file.

    python benchmarks/realism_tables.py benchmarks/results/realism_benchmark_v2_cpu.json

The JSON is ``python -m x2ct.compare <sweep> --over seed --paired-to +realism=none`` output over a sweep of
``+realism=none,default`` whose best checkpoints were scored four ways (docs/evaluation.md, "Radiograph realism"):
``best_test`` / ``best_example_ct``, the clean DRRs of the phantom test split and of the real CT, and
``best_test_clinical`` / ``best_example_ct_clinical``, the same views through the fixed clinical-style chain
(``evaluate.py --view-processing clinical``). Prints, per setting, mean +- sample std over the seeds of each input's
scanned-voxel PSNR and **the drop** from clean to clinical inputs: per run (the same model scored on both), then
over the seeds with its 95% interval (Student's t, n - 1); then the file's paired differences from ``+realism=none``.
"""

from __future__ import annotations

import sys

from transfer_tables import cell, main, paired_table, trained_at  # benchmarks/transfer_tables.py

from x2ct.evaluation.comparison.aggregate import Stat
from x2ct.evaluation.comparison.paired import paired_interval

# (clean evaluation, clinically processed evaluation, title): the drop is clean minus processed, per run
INPUTS = [
    ("best_test", "best_test_clinical", "phantom test"),
    ("best_example_ct", "best_example_ct_clinical", "real CT"),
]
METRIC = "scanned_psnr"
PAIRED_COLUMNS = [(f"eval/{name}/{METRIC}", title, 2) for name, title in (
    ("best_test", "Δ phantom test, clean"), ("best_test_clinical", "Δ phantom test, clinical chain"),
    ("best_example_ct", "Δ real CT, clean"), ("best_example_ct_clinical", "**Δ real CT, clinical chain**"))]


def drop_cell(stat: Stat, decimals: int = 2) -> str:
    """mean +- std [95% interval] of a per-run difference over the seeds."""
    if stat.mean is None:
        return "-"
    interval = paired_interval(stat)
    bounds = f" [{interval[0]:+.{decimals}f}, {interval[1]:+.{decimals}f}]" if interval else ""
    return f"{stat.mean:.{decimals}f} +- {stat.std:.{decimals}f}{bounds}"


def table(record: dict) -> str:
    runs = {r["run"]: r for r in record["runs"]}
    titles = []
    for _, _, name in INPUTS:
        titles += [f"{name}, clean", f"{name}, clinical chain", f"**drop, {name}**"]
    lines = ["| setting | seeds | " + " | ".join(titles) + " |", "|---|---:|" + "---:|" * len(titles)]
    for setting in record["aggregate"]["settings"]:
        members = [runs[name] for name in setting["runs"]]
        cells = []
        for clean, processed, _ in INPUTS:
            values = [(r["evaluations"].get(clean, {}).get(METRIC), r["evaluations"].get(processed, {}).get(METRIC))
                      for r in members]
            cells.append(cell(Stat.of([a for a, _ in values]).__dict__, 2))
            cells.append(cell(Stat.of([b for _, b in values]).__dict__, 2))
            cells.append(drop_cell(Stat.of([a - b for a, b in values if a is not None and b is not None])))
        label = " ".join(f"`{o}`" for o in setting["overrides"] if o.startswith("+realism")) or "-"
        lines.append(f"| {label} | {', '.join(setting['over_values'])} | " + " | ".join(cells) + " |")
    lines += paired_table(record.get("paired"), PAIRED_COLUMNS)
    lines += ["", f"PSNR on scanned voxels (dB). {trained_at(record)}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], render=table))
