"""The tables of docs/results.md "Real anatomy as the yardstick", regenerated from their comparison files.

    python benchmarks/transfer_tables.py benchmarks/results/transfer_benchmark_seed1_cpu.json \
        benchmarks/results/transfer_benchmark_v2_cpu.json

Each JSON is `python -m x2ct.compare ... --over seed` output over runs scored by scripts/benchmark_transfer.sh
(evaluation folders: best_test, the test split; best_example_ct, the real CT on the benchmark grid preset, table
removed; best_example_ct_table, the real CT on the old protocol, table kept). Prints one Markdown table per file:
mean +- sample std over the seeds (n) of the phantom test PSNR and the real-CT figures, the file's paired
differences (``--paired-to``: each setting minus the reference with the same seed, with the 95% interval of the
mean difference) where it has them, then its rank correlations, so that every number in the docs comes from a
committed file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [  # (stat key, title, decimals)
    ("eval/best_test/psnr", "phantom test PSNR", 2),
    ("eval/best_test/scanned_psnr", "phantom test PSNR, scanned", 2),
    ("eval/best_example_ct_table/psnr", "real CT PSNR, whole volume, table kept", 2),
    ("eval/best_example_ct_table/scanned_psnr", "real CT PSNR, scanned, table kept", 2),
    ("eval/best_example_ct/scanned_psnr", "**real CT PSNR, scanned, table removed**", 2),
    ("eval/best_example_ct/scanned_ssim", "real CT SSIM, scanned, table removed", 3),
]


PAIRED_COLUMNS = [  # (difference key, title, decimals)
    ("eval/best_test/scanned_psnr", "Δ phantom test PSNR, scanned", 2),
    ("eval/best_example_ct/scanned_psnr", "**Δ real CT PSNR, scanned, table removed**", 2),
    ("eval/best_example_ct/scanned_ssim", "Δ real CT SSIM, scanned, table removed", 3),
]


def cell(stat: dict | None, decimals: int) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat["n"] < 2:
        return f"{stat['mean']:.{decimals}f}"
    return f"{stat['mean']:.{decimals}f} +- {stat['std']:.{decimals}f}"


def table(record: dict) -> str:
    settings = record["aggregate"]["settings"]
    columns = [c for c in COLUMNS if any(s["stats"].get(c[0], {}).get("mean") is not None for s in settings)]
    lines = ["| setting | seeds | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for s in settings:
        label = " ".join(f"`{o}`" for o in s["overrides"]) or "-"
        lines.append(f"| {label} | {', '.join(s['over_values'])} | "
                     + " | ".join(cell(s["stats"].get(key), d) for key, _, d in columns) + " |")
    lines += paired_table(record.get("paired"))
    pairs = record.get("rank_correlation", {}).get("pairs", [])
    if pairs:
        lines += ["", "| columns | n | Spearman rho | p (exact) | Pearson r |", "|---|---:|---:|---:|---:|"]
        for p in pairs:
            numbers = (["undefined", "-", "-"] if p["undefined"] else
                       [f"{p['rho']:.3f}", f"{p['p_value']:.3f}", f"{p['pearson_r']:.3f}"])
            lines.append(f"| {p['column_a']} vs {p['column_b']} | {p['n']} | " + " | ".join(numbers) + " |")
    lines += ["", trained_at(record)]
    return "\n".join(lines)


def trained_at(record: dict) -> str:
    """The commits the compared runs were trained at, and the commit and machine that compared them."""
    code = record.get("code") or {}
    commits = sorted({str((r.get("code") or {}).get("commit"))[:7] if (r.get("code") or {}).get("commit")
                      else "not recorded (runs older than run_info's code record)" for r in record["runs"]})
    return (f"Trained at: {', '.join(commits)}; compared at {str(code.get('commit'))[:7]} on "
            f"{(record.get('machine') or {}).get('cpu_model') or '?'}.")


def paired_table(paired: dict | None, columns: list[tuple[str, str, int]] = PAIRED_COLUMNS) -> list[str]:
    """Each setting's paired differences from the reference: mean +- std [95% interval] (per seed)."""
    if not paired or not paired.get("settings"):
        return []
    reference = " ".join(f"`{o}`" for o in paired["reference"])
    lines = ["", f"Paired by seed, each setting minus {reference}:", "",
             "| setting | seeds | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for s in paired["settings"]:
        cells = []
        for key, _, d in columns:
            stat, diffs, interval = s["stats"].get(key), s["diffs"].get(key), (s.get("intervals") or {}).get(key)
            if not stat or stat.get("mean") is None:
                cells.append("-")
                continue
            bounds = f" [{interval[0]:+.{d}f}, {interval[1]:+.{d}f}]" if interval else ""
            each = ", ".join("-" if v is None else f"{v:+.{d}f}" for v in diffs)
            cells.append(f"{stat['mean']:+.{d}f} +- {stat['std']:.{d}f}{bounds} ({each})")
        label = " ".join(f"`{o}`" for o in s["overrides"] if o not in paired["reference"]) or "-"
        lines.append(f"| {label} | {', '.join(s['pairs'])} | " + " | ".join(cells) + " |")
    return lines


def main(paths: list[str], render=None) -> int:
    """Print each comparison file's tables (``render``: record -> Markdown; this file's ``table`` by default),
    each under a comment naming the file."""
    for path in paths:
        print(f"<!-- {path} -->")
        print((render or table)(json.loads(Path(path).read_text())))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
