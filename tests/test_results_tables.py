"""The results tables of docs/results.md that benchmarks/*_tables.py print are the committed JSON's, cell by cell:
every table row the script prints from the file it cites is in the page. A number edited by hand in the page, or a
JSON regenerated without the page (or the other way round), fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

TABLES = [  # (script, the comparison files whose tables docs/results.md shows)
    ("transfer_tables.py", ["transfer_benchmark_seed1_cpu.json", "transfer_benchmark_v2_cpu.json"]),
    ("realism_tables.py", ["realism_benchmark_v2_cpu.json"]),
]


def printed_rows(script: str, files: list[str]) -> list[str]:
    """The Markdown table rows the script prints for the files."""
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *(str(RESULTS / f) for f in files)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("script, files", TABLES, ids=[script for script, _ in TABLES])
def test_every_printed_table_row_is_in_the_results_page(script, files):
    page = set((REPO / "docs" / "results.md").read_text().splitlines())
    rows = printed_rows(script, files)
    assert len(rows) > 6, rows
    missing = [row for row in rows if row not in page]
    assert not missing, f"docs/results.md lacks these rows printed by benchmarks/{script}:\n" + "\n".join(missing)


def test_the_realism_drop_is_each_runs_clean_minus_processed_with_its_t_interval(tmp_path):
    """Two settings of three runs with known values: the drop cell is mean +- sample std [mean -+ t(2) std / sqrt 3]
    of the per-run differences."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import realism_tables
    finally:
        sys.path.pop(0)
    runs, settings = [], []
    for label, clean, processed in (("none", [25.0, 24.0, 26.0], [20.0, 21.0, 19.0]),
                                    ("default", [23.0, 23.0, 23.0], [22.5, 22.0, 22.75])):
        names = []
        for seed, (a, b) in enumerate(zip(clean, processed, strict=True), start=1):
            name = f"sweep/{label}{seed}"
            names.append(name)
            evaluations = {"best_test": {"scanned_psnr": a}, "best_test_clinical": {"scanned_psnr": b},
                           "best_example_ct": {"scanned_psnr": a - 4},
                           "best_example_ct_clinical": {"scanned_psnr": b - 4}}
            runs.append({"run": name, "evaluations": evaluations, "code": {"commit": "0" * 40}})
        settings.append({"overrides": [f"+realism={label}"], "runs": names, "over_values": ["1", "2", "3"]})
    record = {"runs": runs, "aggregate": {"settings": settings}, "compared_by": {"code": {"commit": "1" * 40},
                                                                                "machine": {"cpu_model": "test"}}}
    lines = realism_tables.table(record).splitlines()
    # none: drops 5, 3, 7 -> mean 5, std 2, half width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.97
    assert lines[2] == ("| `+realism=none` | 1, 2, 3 | 25.00 +- 1.00 | 20.00 +- 1.00 | 5.00 +- 2.00 [+0.03, +9.97] "
                        "| 21.00 +- 1.00 | 16.00 +- 1.00 | 5.00 +- 2.00 [+0.03, +9.97] |")
    # default: drops 0.5, 1.0, 0.25 -> mean 0.583, std 0.382, half width 0.949
    assert lines[3].split(" | ")[4] == "0.58 +- 0.38 [-0.37, +1.53]"
    assert lines[-1] == "PSNR on scanned voxels (dB). Trained at: 0000000; compared at 1111111 on test."
