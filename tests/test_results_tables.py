"""Every results table of README.md, docs/*.md and benchmarks/README.md is its JSON's, cell by cell.

benchmarks/doc_tables.py registers each table: the JSON record behind every row and the field and rounding behind
every checked column. A number edited by hand in a doc, or a JSON regenerated without the doc (or the other way
round), fails here; so does a table the register does not know. The tables of docs/results.md that
benchmarks/*_tables.py print are checked the other way too: every row the script prints is in the page, and every
row of the page's table is printed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def benchmark_module(name: str):
    """A benchmarks/ module, imported as the scripts import their neighbours (benchmarks/ on the path)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


doc_tables = benchmark_module("doc_tables")
table_check = benchmark_module("table_check")


@cache
def printed_rows(script: str, files: tuple[str, ...]) -> list[str]:
    """The Markdown table rows the script prints for the files."""
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *(str(RESULTS / f) for f in files)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("doc, heading, script, files", doc_tables.PRINTED,
                         ids=[heading for _, heading, _, _ in doc_tables.PRINTED])
def test_every_printed_table_row_is_in_the_results_page(doc, heading, script, files):
    page = set((REPO / doc).read_text().splitlines())
    rows = printed_rows(script, files)
    assert len(rows) > 2, rows
    missing = [row for row in rows if row not in page]
    assert not missing, f"{doc} lacks these rows printed by benchmarks/{script}:\n" + "\n".join(missing)


def test_the_realism_drop_is_each_runs_clean_minus_processed_with_its_t_interval(tmp_path):
    """Two settings of three runs with known values: the drop cell is mean +- sample std [mean -+ t(2) std / sqrt 3]
    of the per-run differences."""
    realism_tables = benchmark_module("realism_tables")
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
    record = {"runs": runs, "aggregate": {"settings": settings}, "code": {"commit": "1" * 40},
              "machine": {"cpu_model": "test"}}
    lines = realism_tables.table(record).splitlines()
    # none: drops 5, 3, 7 -> mean 5, std 2, half width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.97
    assert lines[2] == ("| `+realism=none` | 1, 2, 3 | 25.00 +- 1.00 | 20.00 +- 1.00 | 5.00 +- 2.00 [+0.03, +9.97] "
                        "| 21.00 +- 1.00 | 16.00 +- 1.00 | 5.00 +- 2.00 [+0.03, +9.97] |")
    # default: drops 0.5, 1.0, 0.25 -> mean 0.583, std 0.382, half width 0.949
    assert lines[3].split(" | ")[4] == "0.58 +- 0.38 [-0.37, +1.53]"
    assert lines[-1] == "PSNR on scanned voxels (dB). Trained at: 0000000; compared at 1111111 on test."


def table_id(table) -> str:
    return f"{table.doc}: {table.heading} [{table.header[0]}]"


@pytest.mark.parametrize("table", doc_tables.TABLES, ids=[table_id(t) for t in doc_tables.TABLES])
def test_every_checked_cell_of_a_registered_table_is_its_json(table):
    differences = table_check.check_table(table)
    assert not differences, "\n".join(map(str, differences))


def test_every_table_of_the_docs_is_registered():
    checked = {(t.doc, t.heading, t.header) for t in doc_tables.TABLES}
    printed = {(doc, heading) for doc, heading, _, _ in doc_tables.PRINTED}
    unregistered = [f"{t.doc}: {t.heading} [{' | '.join(t.header)}]"
                    for doc in doc_tables.DOCS for t in table_check.doc_tables(doc)
                    if (t.doc, t.heading, t.header) not in checked and (t.doc, t.heading) not in printed
                    and (t.doc, t.heading, t.header) not in doc_tables.NOT_FROM_JSON]
    assert not unregistered, "tables in no register of benchmarks/doc_tables.py:\n" + "\n".join(unregistered)
    for doc, heading, header in doc_tables.NOT_FROM_JSON:
        table_check.find(doc, heading, header)  # raises if the doc has no such table


@pytest.mark.parametrize("doc, heading, script, files", doc_tables.PRINTED,
                         ids=[heading for _, heading, _, _ in doc_tables.PRINTED])
def test_every_row_of_a_printed_table_is_printed_by_its_script(doc, heading, script, files):
    rows = set(printed_rows(script, files))
    page_rows = ["| " + " | ".join(cells) + " |" for t in table_check.doc_tables(doc) if t.heading == heading
                 for cells in t.rows]
    assert page_rows
    assert not [row for row in page_rows if row not in rows], f"{doc} rows not printed by benchmarks/{script}"


def test_an_altered_cell_is_reported_and_written_back_from_its_json(tmp_path, monkeypatch):
    """Two cells of the README's milestone table edited by hand (one of them bold): the check names those
    cells, and ``write`` puts the JSON's back, leaving the rest of the file as it was."""
    original = (REPO / "README.md").read_text()
    edits = {"| `benchmark/milestone1` | HybridViT | 2.68M | 30.49 +- 0.88 |": ("30.49", "30.50"),
             "| MultiResCascade | 0.94M | **32.65 +- 0.04** |": ("32.65", "32.75")}
    altered = original
    for row, (old, new) in edits.items():
        assert original.count(row) == 1, row
        altered = altered.replace(row, row.replace(old, new))
    (tmp_path / "README.md").write_text(altered)
    monkeypatch.setattr(table_check, "REPO", tmp_path)
    table_check.doc_tables.cache_clear()
    try:
        table = next(t for t in doc_tables.TABLES if t.doc == "README.md" and t.header[0] == "recipe")
        differences = table_check.check_table(table)
        assert [(d.column, d.doc_cell, d.json_cell) for d in differences] == [
            ("test PSNR (dB)", "30.50 +- 0.88", "30.49 +- 0.88"), ("test PSNR (dB)", "32.75 +- 0.04", "32.65 +- 0.04")]
        assert differences[0].row == "`benchmark/milestone1`"
        assert table_check.write(differences) == 2
        assert (tmp_path / "README.md").read_text() == original
        assert table_check.check_table(table) == []
    finally:
        table_check.doc_tables.cache_clear()


def test_a_paired_cell_lists_the_seeds_in_order_and_shown_keeps_the_docs_decimals():
    record = {"pairs": ["2", "3", "1"], "diffs": {"k": [-0.92, -1.81, -1.29]},
              "stats": {"k": {"mean": -1.34, "std": 0.4455, "n": 3}}}
    assert table_check.FORMATS["paired2"](record, "k") == "-1.34 +- 0.45 (-1.29, -0.92, -1.81)"
    assert table_check.FORMATS["paired4_mean"](record, "k") == "-1.3400 +- 0.4455"
    cell = table_check.Cell("s / call", "main", "seconds", "shown")
    assert table_check.expected(cell, {"main": {"seconds": 0.006168}}, "0.0062") == "0.0062"
    assert table_check.expected(cell, {"main": {"seconds": 0.6901}}, "0.690") == "0.690"
    over_cap = {"status": "over_cap", "max_gb": 18.0, "note": "allocation failed, 16.73 GB resident reached"}
    assert table_check.FORMATS["fits"](over_cap, "") == "? / ? / ?"  # a cap below 24 GB tells nothing of 24 GB
    assert table_check.FORMATS["over_cap"](over_cap, "") == "> 18 (cap; 16.7 GB resident when an allocation failed)"
