"""Group run rows by sweep, rank them, and format them as aligned text (terminal) or Markdown tables.

Columns (``COLUMNS``): run, model, overrides, loss weights, params, val PSNR (best), val SSIM (at that same
validation), best ep (its epoch), mean-vol PSNR (the mean-volume reference), test PSNR / SSIM, epochs
(completed / planned), wall time, status. Missing values show as "-". Within a sweep, the overrides that every
job shares are shown once, in the group's heading; each row lists only its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from x2ct.evaluation.comparison.runs import RunRow

SORT_KEYS = ("psnr", "name")
COLUMNS = ("run", "model", "overrides", "loss weights", "params", "val PSNR", "val SSIM", "best ep",
           "mean-vol PSNR", "test PSNR", "test SSIM", "epochs", "wall time", "status")
NUMERIC_COLUMNS = frozenset(COLUMNS[4:12])  # right-aligned
PSNR_DECIMALS = 2
SSIM_DECIMALS = 4
MISSING = "-"


@dataclass
class RunGroup:
    """Rows shown together: the jobs of one sweep, or all single runs (``sweep == ""``)."""

    sweep: str
    source: str  # the sweep folder or W&B group; "" for single runs
    rows: list[RunRow]
    shared_overrides: list[str] = field(default_factory=list)  # overrides every job of the sweep has

    @property
    def title(self) -> str:
        return f"sweep {self.sweep}" if self.sweep else "single runs"


def group_runs(rows: list[RunRow], sort: str = "psnr") -> list[RunGroup]:
    """Rows grouped by ``sweep_source`` and sorted within each group.

    ``sort="psnr"``: best validation PSNR first (runs without one last), groups ordered by their best run.
    ``sort="name"``: by run name with job numbers in numeric order, single runs first, then sweeps by name.
    """
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {SORT_KEYS}, got {sort!r}")
    key = _psnr_key if sort == "psnr" else name_key
    members: dict[str, list[RunRow]] = {}
    for row in rows:
        members.setdefault(row.sweep_source, []).append(row)
    groups = []
    for source, group_rows in members.items():
        group_rows = sorted(group_rows, key=key)
        sweep = group_rows[0].sweep
        shared = shared_overrides(group_rows) if sweep and len(group_rows) > 1 else []
        groups.append(RunGroup(sweep=sweep, source=source, rows=group_rows, shared_overrides=shared))
    if sort == "psnr":
        return sorted(groups, key=lambda g: key(g.rows[0]))
    return sorted(groups, key=lambda g: (_natural(g.sweep), g.source))


def shared_overrides(rows: list[RunRow]) -> list[str]:
    """Overrides present in every row, in the order of the first row."""
    return [o for o in rows[0].overrides if all(o in row.overrides for row in rows[1:])]


def _natural(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def name_key(row: RunRow) -> tuple:
    """Sort key: run name with numbers compared as numbers (job 2 before job 10)."""
    return (_natural(row.run), row.source)


def _psnr_key(row: RunRow) -> tuple:
    return (row.best_val_psnr is None, -(row.best_val_psnr or 0.0), *name_key(row))


# ------------------------------------------------------------------------------------------------- cell text


def format_number(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def format_parameters(count: int | None) -> str:
    """1234567 -> "1.23M", 45600 -> "45.6k"."""
    if count is None:
        return MISSING
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    if count >= 1_000:
        return f"{count / 1e3:.1f}k"
    return str(count)


def format_duration(seconds: float | None) -> str:
    """0.32 -> "0.3s", 42.3 -> "42s", 185 -> "3m05s", 7384 -> "2h03m"."""
    if seconds is None:
        return MISSING
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def row_cells(row: RunRow, shared: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The text of each of ``COLUMNS`` for ``row``; overrides in ``shared`` are left out."""
    overrides = [o for o in row.overrides if o not in shared]
    epochs = MISSING if row.epochs is None else (
        f"{row.epochs}/{row.max_epochs}" if row.max_epochs is not None else str(row.epochs))
    return [
        row.run,
        row.model,
        " ".join(overrides) or MISSING,
        " ".join(f"{k}={v:g}" for k, v in row.loss_weights.items()) or MISSING,
        format_parameters(row.parameters),
        format_number(row.best_val_psnr, PSNR_DECIMALS),
        format_number(row.val_ssim_at_best, SSIM_DECIMALS),
        MISSING if row.best_epoch is None else str(row.best_epoch),
        format_number(row.mean_volume_psnr, PSNR_DECIMALS),
        format_number(row.test_psnr, PSNR_DECIMALS),
        format_number(row.test_ssim, SSIM_DECIMALS),
        epochs,
        format_duration(row.wall_time_s),
        row.status,
    ]


def group_heading(group: RunGroup, with_source: bool = True) -> str:
    """"sweep lr_sweep (outputs/multiruns/lr_sweep); shared overrides: a=1 b=2", or "single runs"."""
    text = group.title
    if with_source and group.source:
        text += f" ({group.source})"
    if group.shared_overrides:
        text += "; shared overrides: " + " ".join(group.shared_overrides)
    return text


# ------------------------------------------------------------------------------------------------- tables


def format_text_table(groups: list[RunGroup]) -> str:
    """One aligned plain-text table; each group starts with a blank line and its heading."""
    cells = [[row_cells(row, group.shared_overrides) for row in group.rows] for group in groups]
    widths = [max([len(name)] + [len(c[i]) for rows in cells for c in rows]) for i, name in enumerate(COLUMNS)]

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if name in NUMERIC_COLUMNS else v.ljust(w)
                         for v, w, name in zip(values, widths, COLUMNS, strict=True)).rstrip()

    lines = [line(COLUMNS), line(["-" * w for w in widths])]
    for group, rows in zip(groups, cells, strict=True):
        lines += ["", group_heading(group), *(line(c) for c in rows)]
    return "\n".join(lines) + "\n"


def format_markdown_table(group: RunGroup) -> str:
    """A GitHub-flavoured Markdown table of one group (numbers right-aligned, ``|`` in cells escaped)."""
    def line(values: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(_escape(v) for v in values) + " |"

    rule = ["---:" if name in NUMERIC_COLUMNS else "---" for name in COLUMNS]
    rows = [line(row_cells(row, group.shared_overrides)) for row in group.rows]
    return "\n".join([line(COLUMNS), line(rule), *rows]) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
