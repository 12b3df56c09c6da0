"""Markdown results tables checked cell by cell against the JSON files in benchmarks/results/, and rewritten from
them: the mechanism behind benchmarks/doc_tables.py (which holds the register of every table).

A ``Table`` names a doc file, the heading the table sits under, its header row, the columns that identify a row
(``key``), the default mapping of column -> ``Cell`` (which record, which field, which format), and its ``Row``s,
each with the JSON records behind it (``setting``, ``paired``, ``item``, ``at``, ``rank_pair``, ``rank_of`` pick a
comparison file's setting or paired difference, a benchmark file's row or part, a rank correlation). A cell is the
record's field in the format's rounding (``FORMATS``); ``shown`` rounds to the decimals the doc cell shows,
``in:<format>`` only asks the cell to contain the value (a sentence quoting it). Label columns (what a row is) are
not checked; bold marks, link targets and footnote marks (``*``, ``†``) are left out of every comparison.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from bench_memory import GPU_SIZES_GB, fits  # benchmarks/bench_memory.py: the memory table's own verdict

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# --- the records behind a row -------------------------------------------------------------------------------------
Pick = Callable[[dict], dict]


def _one(items: list[dict], what: str) -> dict:
    if len(items) != 1:
        raise LookupError(f"{len(items)} {what} (expected exactly one)")
    return items[0]


def setting(*overrides: str) -> Pick:
    """A comparison file's mean +- std setting with exactly these overrides."""
    return lambda data: _one([s for s in data["aggregate"]["settings"] if set(s["overrides"]) == set(overrides)],
                             f"settings with overrides {list(overrides)}")


def paired(*overrides: str) -> Pick:
    """A comparison file's paired differences (``--paired-to``) of the setting with exactly these overrides."""
    return lambda data: _one([s for s in data["paired"]["settings"] if set(s["overrides"]) == set(overrides)],
                             f"paired settings with overrides {list(overrides)}")


def item(path: str, **match: Any) -> Pick:
    """The element of the list at ``path`` whose fields equal ``match``."""
    return lambda data: _one([x for x in dig(data, path) if all(x.get(k) == v for k, v in match.items())],
                             f"items of {path} with {match}")


def at(path: str) -> Pick:
    """The object at ``path``."""
    return lambda data: dig(data, path)


def rank_pair(column_a: str, column_b: str) -> Pick:
    """A comparison file's rank correlation between two columns."""
    return lambda data: _one([p for p in data["rank_correlation"]["pairs"]
                              if (p["column_a"], p["column_b"]) == (column_a, column_b)],
                             f"rank correlations {column_a} vs {column_b}")


def rank_of(settings: Sequence[Sequence[str]], column_a: str, column_b: str) -> Pick:
    """Spearman's rho between two columns over some of a comparison file's settings, as x2ct.compare computes it."""
    def pick(data: dict) -> dict:
        from x2ct.evaluation.comparison.aggregate import Setting, Stat
        from x2ct.evaluation.comparison.rank_correlation import rank_correlation

        names = {f.name for f in fields(Setting)}
        rows = []
        for overrides in settings:
            raw = setting(*overrides)(data)
            rows.append(Setting(**{**{k: v for k, v in raw.items() if k in names},
                                   "stats": {k: Stat(**v) for k, v in raw["stats"].items()}}))
        return rank_correlation(rows, column_a, column_b).to_dict()
    return pick


def dig(data: Any, path: str) -> Any:
    """``data`` at a dotted path (keys may hold ``/``: ``stats.eval/best_test/psnr``); "" is ``data`` itself."""
    for key in path.split(".") if path else ():
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


# --- formats: (record, field) -> the cell's text ----------------------------------------------------------------
def _pm(decimals: int) -> Callable[[dict, str], str]:
    def fmt(record: dict, path: str) -> str:
        stat = dig(record, path)
        if stat["n"] < 2:
            return f"{stat['mean']:.{decimals}f}"
        return f"{stat['mean']:.{decimals}f} +- {stat['std']:.{decimals}f}"
    return fmt


def _fixed(decimals: int, scale: float = 1.0, suffix: str = "") -> Callable[[dict, str], str]:
    return lambda record, path: f"{dig(record, path) * scale:.{decimals}f}{suffix}"


def _paired(decimals: int, per_seed: bool) -> Callable[[dict, str], str]:
    """mean +- std of the per-seed differences, then each seed's in seed order."""
    def fmt(record: dict, key: str) -> str:
        stat = record["stats"][key]
        text = f"{stat['mean']:+.{decimals}f} +- {stat['std']:.{decimals}f}"
        if per_seed:
            pairs = sorted(zip(record["pairs"], record["diffs"][key], strict=True), key=lambda p: int(p[0]))
            text += " (" + ", ".join(f"{d:+.{decimals}f}" for _, d in pairs) + ")"
        return text
    return fmt


def _paired_interval(record: dict, key: str) -> str:
    low, high = record["intervals"][key]
    return f"{record['stats'][key]['mean']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _with_ratio(value_key: str, ratio_key: str, decimals: int) -> Callable[[dict, str], str]:
    """A memory row's figure, with its ratio to the row without checkpointing where it has one."""
    def fmt(row: dict, _: str) -> str:
        text = f"{row[value_key]:.{decimals}f}"
        return text + (f" ({row[ratio_key]:.2f}x)" if ratio_key in row else "")
    return fmt


def _over_cap(row: dict, _: str) -> str:
    resident = re.search(r"([\d.]+) GB resident", row["note"])
    return f"> {row['max_gb']:g} (cap; {float(resident.group(1)):.1f} GB resident when an allocation failed)"


def _fits(row: dict, _: str) -> str:
    return " / ".join(fits(row, size) for size in GPU_SIZES_GB)


def _p_value(record: dict, _: str) -> str:
    return f"{record['p_value']:.3f}" + (" (t)" if record["n"] > 8 else "")


FORMATS: dict[str, Callable[[dict, str], str]] = {
    "pm2": _pm(2), "pm3": _pm(3), "pm4": _pm(4),
    "f0": _fixed(0), "f1": _fixed(1), "f2": _fixed(2), "f3": _fixed(3), "f4": _fixed(4),
    "int": lambda r, p: f"{dig(r, p):,}",
    "int0": lambda r, p: f"{dig(r, p):,.0f}",
    "params_M": lambda r, p: f"{dig(r, p) / 1e6:.2f}M",  # 3.67M
    "params_M1": lambda r, p: f"{dig(r, p) / 1e6:.1f} M",  # 17.4 M
    "minutes": lambda r, p: f"{dig(r, p)['mean'] / 60:.1f} min",  # a wall_time_s stat
    "percent1": _fixed(1, 100.0, "%"),
    "ratio1": _fixed(1, suffix="x"),
    "min_f4": lambda r, p: f"{min(dig(r, p)):.4f}", "max_f4": lambda r, p: f"{max(dig(r, p)):.4f}",
    "count": lambda r, p: str(len(dig(r, p))),
    "seeds": lambda r, p: ", ".join(dig(r, p)),
    "paired2": _paired(2, True), "paired4": _paired(4, True), "paired4_mean": _paired(4, False),
    "paired_interval": _paired_interval,
    "total_gb": _with_ratio("step_total_gb", "total_vs_without", 2),
    "step_s": _with_ratio("step_seconds", "time_vs_without", 0),
    "over_cap": _over_cap, "fits": _fits, "p_value": _p_value,
    "tests": lambda r, _: f"{r['passed']} passed, {r['skipped']} skipped",
    "cube": lambda r, p: f"{dig(r, p)}^3",
    "views": lambda r, _: f"{r['views']} x {r['view_size']}^2",
    "precision_batch": lambda r, _: f"{r['precision']}, {r['batch']}",
}


# --- a table's description ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    title: str  # the column's header, as in the doc (bold marks left out)
    record: str  # which of the row's records
    path: str  # the field in that record
    fmt: str  # a FORMATS key, "shown" (the doc cell's own decimals) or "in:<key>" (the cell contains it)


@dataclass(frozen=True)
class Row:
    key: str  # the row's key cells as in the doc, joined by " | " (bold marks and link targets left out)
    records: dict[str, tuple[str, Pick]]  # name -> (JSON file under benchmarks/results/, its record)
    cells: tuple[Cell, ...] = ()  # cells of this row beside / instead of (same title) the table's
    skip: tuple[str, ...] = ()  # columns of the table's cells this row leaves blank or states otherwise


@dataclass(frozen=True)
class Table:
    doc: str
    heading: str  # the heading the table sits under (without the #s)
    header: tuple[str, ...]  # the header row's cells (bold marks left out)
    cells: tuple[Cell, ...]
    rows: tuple[Row, ...]
    key: int = 1  # how many leading columns identify a row
    unsourced: dict[str, str] = field(default_factory=dict)  # row key -> why no JSON holds it


# --- reading the docs ---------------------------------------------------------------------------------------------
@dataclass
class DocTable:
    doc: str
    heading: str
    header: tuple[str, ...]
    rows: list[list[str]]  # raw cells
    lines: list[int]  # 0-based line of each row in the doc


def split_row(line: str) -> list[str]:
    """A table row's cells (a pipe escaped as ``\\|`` stays in its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))]


def plain(text: str) -> str:
    """A cell without bold marks, link targets or footnote marks (`*`, `†`)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text.replace("**", "")).strip()
    return re.sub(r"\s+[*†]$", "", text)


@cache
def doc_tables(doc: str) -> tuple[DocTable, ...]:
    """Every Markdown table of ``doc`` with the heading above it (fenced code skipped)."""
    lines = (REPO / doc).read_text().splitlines()
    found, heading, fenced, i = [], "", False, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif not fenced and line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            table = DocTable(doc, heading, tuple(plain(c) for c in split_row(line)), [], [])
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                table.rows.append(split_row(lines[i]))
                table.lines.append(i)
                i += 1
            found.append(table)
            continue
        i += 1
    return tuple(found)


def find(doc: str, heading: str, header: Sequence[str]) -> DocTable:
    """The one table of ``doc`` under ``heading`` with this header row; ``LookupError`` naming them otherwise."""
    matches = [t for t in doc_tables(doc) if t.heading == heading and t.header == tuple(header)]
    if len(matches) != 1:
        raise LookupError(f"{doc}: {len(matches)} tables under '{heading}' with header {' | '.join(header)}")
    return matches[0]


def row_key(cells: list[str], key: int) -> str:
    return " | ".join(plain(c) for c in cells[:key])


# --- checking -----------------------------------------------------------------------------------------------------
@dataclass
class Difference:
    doc: str
    line: int  # 1-based
    row: str
    column: str
    doc_cell: str
    json_cell: str
    where: str  # the JSON file the cell comes from
    contains: bool = False  # an "in:" cell: the doc cell should contain json_cell

    def __str__(self) -> str:
        verb = "lacks" if self.contains else "is"
        return (f"{self.doc}:{self.line} [{self.row}] {self.column}: doc {verb} {self.doc_cell!r}, "
                f"{self.where} gives {self.json_cell!r}")


@cache
def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def expected(cell: Cell, records: dict[str, dict], doc_cell: str) -> str:
    fmt = cell.fmt.removeprefix("in:")
    if fmt == "shown":
        number = re.fullmatch(r"-?\d+(?:\.(\d+))?", doc_cell)
        decimals = len(number.group(1) or "") if number else 2
        return f"{dig(records[cell.record], cell.path):.{decimals}f}"
    return FORMATS[fmt](records[cell.record], cell.path)


def check_table(table: Table) -> list[Difference]:
    """Every checked cell of ``table`` against its JSON; raises ``LookupError`` on a row or column that is not
    where the register says."""
    doc_table = find(table.doc, table.heading, table.header)
    by_key = {row_key(cells, table.key): (cells, line) for cells, line in zip(doc_table.rows, doc_table.lines,
                                                                              strict=True)}
    known = {row.key for row in table.rows} | set(table.unsourced)
    if unknown := sorted(set(by_key) - known):
        raise LookupError(f"{table.doc} '{table.heading}': rows with no JSON behind them in the register: {unknown}")
    if missing := sorted(known - set(by_key)):
        raise LookupError(f"{table.doc} '{table.heading}': register rows not in the doc: {missing}")
    differences = []
    for row in table.rows:
        cells, line = by_key[row.key]
        records, wheres = {}, {}
        for name, (file, pick) in row.records.items():
            try:
                records[name], wheres[name] = pick(load(file)), file
            except (LookupError, KeyError) as err:
                raise LookupError(f"{table.doc} '{table.heading}' [{row.key}]: {file}: {err}") from err
        own = {c.title for c in row.cells}
        for cell in (*[c for c in table.cells if c.title not in own and c.title not in row.skip], *row.cells):
            if cell.record not in records:
                continue
            doc_cell = plain(cells[table.header.index(cell.title)])
            want = expected(cell, records, doc_cell)
            contains = cell.fmt.startswith("in:")
            if (want not in doc_cell) if contains else (want != doc_cell):
                differences.append(Difference(table.doc, line + 1, row.key, cell.title, doc_cell, want,
                                              wheres[cell.record], contains))
    return differences


def replace_cell(line: str, index: int, text: str) -> str:
    """``line`` (a table row) with its cell ``index`` replaced by ``text``, every other character kept."""
    pipes = [m.start() for m in re.finditer(r"(?<!\\)\|", line)]
    return f"{line[:pipes[index] + 1]} {text} {line[pipes[index + 1]:]}"


def check_all(tables: Sequence[Table]) -> list[Difference]:
    return [d for table in tables for d in check_table(table)]


def write(differences: Sequence[Difference]) -> int:
    """Rewrite each differing cell (not ``in:`` ones) from its JSON, keeping its bold and footnote marks."""
    written = 0
    for doc in sorted({d.doc for d in differences}):
        path = REPO / doc
        lines = path.read_text().splitlines(keepends=True)
        for d in (d for d in differences if d.doc == doc and not d.contains):
            table = next(t for t in doc_tables(doc) if d.line - 1 in t.lines)
            index = table.header.index(d.column)
            old = split_row(lines[d.line - 1])[index]
            mark = re.search(r"\s+[*†]$", old)
            body = old[:mark.start()] if mark else old
            bold = len(body) > 4 and body.startswith("**") and body.endswith("**")
            new = f"**{d.json_cell}**" if bold else d.json_cell
            lines[d.line - 1] = replace_cell(lines[d.line - 1], index, new + (mark.group(0) if mark else ""))
            written += 1
        path.write_text("".join(lines))
    doc_tables.cache_clear()
    return written
