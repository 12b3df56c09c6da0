"""Mean +- std over repeats: the rows of runs that differ only in one override (``seed`` by default) merged into one.

A sweep ``python train.py -m experiment=a,b seed=1,2,3`` gives six runs; ``python -m x2ct.compare SWEEP --over seed``
adds a table of two settings, each with the mean and sample standard deviation (``ddof=1``; 0 for one run) of its
runs' numbers: best validation PSNR, test PSNR / SSIM (the trainer's ``test_metrics.json``), every ``evaluate.py``
result found in the run folders (``evaluation/<name>/summary.json``: the mean over patients of each run, then mean
+- std over the runs) and wall time. Runs are matched within one sweep (or among single runs) by their overrides
with the ``over`` key removed, or, with ``merge_sweeps`` (``--merge-sweeps``: seeds run as several sweeps), across
sweeps; overrides every setting shares are shown once, as for the run table.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from x2ct.evaluation.comparison.runs import EVALUATION_METRICS, RunRow
from x2ct.evaluation.comparison.table import MISSING, PSNR_DECIMALS, SSIM_DECIMALS, format_duration, format_parameters

# (key in Setting.stats, column title, decimals or None for a duration)
BASE_METRICS = (("best_val_psnr", "val PSNR", PSNR_DECIMALS), ("test_psnr", "test PSNR", PSNR_DECIMALS),
                ("test_ssim", "test SSIM", SSIM_DECIMALS))
WALL_TIME = ("wall_time_s", "wall time", None)


@dataclass
class Stat:
    """Mean and sample standard deviation of the finite values of one number over a setting's runs."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return cls(None, None, 0)
        std = statistics.stdev(finite) if len(finite) > 1 else 0.0
        return cls(statistics.fmean(finite), std, len(finite))


@dataclass
class Setting:
    """The runs of one sweep (or of the single runs) that share all overrides but ``over``."""

    sweep: str
    source: str
    overrides: list[str]  # the setting's own overrides (``over`` removed)
    model: str
    runs: list[str]
    over_values: list[str]  # the ``over`` value of each run, e.g. the seeds
    parameters: int | None
    stats: dict[str, Stat] = field(default_factory=dict)
    values: dict[str, list[float | None]] = field(default_factory=dict)  # each run's number, in ``runs`` order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def over_value(row: RunRow, over: str) -> str | None:
    """The value ``row`` has for the override key ``over`` (``seed=3`` -> ``"3"``), or None."""
    for override in row.overrides:
        key, _, value = override.partition("=")
        if key.lstrip("~+") == over:
            return value
    return None


def aggregate_runs(rows: Sequence[RunRow], over: str = "seed", merge_sweeps: bool = False) -> list[Setting]:
    """Settings in first-seen order; each holds ``Stat`` for ``BASE_METRICS``, wall time and every evaluation
    (``eval/<name>/psnr``, ``eval/<name>/ssim``). ``merge_sweeps``: runs of different sweeps (and single runs)
    with the same overrides merge too; the setting's ``sweep`` / ``source`` then list each sweep once, joined by
    ``", "``."""
    members: dict[tuple[str | None, tuple[str, ...]], list[RunRow]] = {}
    for row in rows:
        own = tuple(o for o in row.overrides if o.partition("=")[0].lstrip("~+") != over)
        members.setdefault((None if merge_sweeps else row.sweep_source, own), []).append(row)
    settings = []
    for (_, own), group in members.items():
        sweep = ", ".join(dict.fromkeys(r.sweep for r in group))
        source = ", ".join(dict.fromkeys(r.sweep_source for r in group))
        setting = Setting(sweep=sweep, source=source, overrides=list(own), model=group[0].model,
                          runs=[r.run for r in group], over_values=[over_value(r, over) or MISSING for r in group],
                          parameters=group[0].parameters)
        for key, _, _ in (*BASE_METRICS, WALL_TIME):
            setting.values[key] = [getattr(r, key) for r in group]
        for name in evaluation_names(group):
            for metric in EVALUATION_METRICS:
                setting.values[f"eval/{name}/{metric}"] = [r.evaluations.get(name, {}).get(metric) for r in group]
        setting.stats = {key: Stat.of(values) for key, values in setting.values.items()}
        settings.append(setting)
    return settings


def evaluation_names(rows: Sequence[RunRow]) -> list[str]:
    """Names of the ``evaluate.py`` results of any of ``rows``, sorted."""
    return sorted({name for row in rows for name in row.evaluations})


def shared_setting_overrides(settings: Sequence[Setting]) -> list[str]:
    """Overrides that every setting has (shown once above the table)."""
    if len(settings) < 2:
        return []
    return [o for o in settings[0].overrides if all(o in s.overrides for s in settings[1:])]


def format_stat(stat: Stat, decimals: int | None) -> str:
    """``31.54 +- 0.38``; a duration as ``3m05s +- 12s``; "-" when no run had the number."""
    if stat.mean is None:
        return MISSING
    if decimals is None:
        return f"{format_duration(stat.mean)} +- {format_duration(stat.std)}"
    return f"{stat.mean:.{decimals}f} +- {stat.std:.{decimals}f}"


def aggregate_columns(settings: Sequence[Setting]) -> list[tuple[str, str, int | None]]:
    """(stat key, title, decimals) of each metric column: base metrics, evaluations, wall time."""
    names = sorted({key.split("/")[1] for s in settings for key in s.stats if key.startswith("eval/")})
    present = {key for s in settings for key, stat in s.stats.items() if stat.mean is not None}
    evals = [(f"eval/{n}/{m}", f"{n} {title}", SSIM_DECIMALS if m.endswith("ssim") else PSNR_DECIMALS)
             for n in names for m, title in EVALUATION_METRICS.items()
             if m in ("psnr", "ssim") or f"eval/{n}/{m}" in present]
    return [*BASE_METRICS, *evals, WALL_TIME]


def format_aggregate_markdown(settings: Sequence[Setting], over: str) -> str:
    """A Markdown table: setting, model, n (the ``over`` values), params, then mean +- std per metric column."""
    shared = shared_setting_overrides(settings)
    columns = aggregate_columns(settings)
    head = ["setting", "model", f"n ({over})", "params", *(title for _, title, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |"]
    for s in settings:
        label = " ".join(o for o in s.overrides if o not in shared) or MISSING
        cells = [label, s.model, f"{len(s.runs)} ({', '.join(s.over_values)})", format_parameters(s.parameters),
                 *(format_stat(s.stats.get(key, Stat(None, None, 0)), decimals) for key, _, decimals in columns)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    note = f"Overrides shared by every setting: {', '.join(f'`{o}`' for o in shared)}.\n\n" if shared else ""
    return note + "\n".join(lines) + "\n"


def numeric_override(setting: Setting, key: str) -> float | None:
    """The value of override ``key`` in ``setting`` as a number (``data.num_views=4`` -> 4.0), or None."""
    for override in setting.overrides:
        name, _, value = override.partition("=")
        if name.lstrip("~+") == key:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def series_label(setting: Setting, x_key: str, shared: Sequence[str]) -> str:
    """The setting's overrides other than ``x_key`` and the shared ones: its series in a plot against ``x_key``."""
    rest = [o for o in setting.overrides if o not in shared and o.partition("=")[0].lstrip("~+") != x_key]
    return " ".join(rest) or "recipe as is"


def natural_key(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
