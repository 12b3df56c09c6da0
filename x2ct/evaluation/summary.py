"""Per-patient metric rows -> per-metric summary statistics, and their CSV / JSON files.

A row is one patient's results, e.g. ``{"patient_id": "LIDC-0001", "psnr": 27.1, "ssim": 0.81, "psnr_lung": nan}``.
``summarise`` gives, for every numeric column:

- ``n``: values used; ``n_missing``: rows where the value is NaN, None or absent (e.g. an empty region mask gives
  NaN; see ``x2ct.ops.metrics``). Missing values are skipped, not counted as zero. ``inf`` (a perfect PSNR)
  is a value and propagates into the mean.
- ``mean``, ``std`` (sample standard deviation, ``ddof = 1``; 0.0 for a single value), ``median``, ``min``,
  ``max``.
- ``ci95_low``, ``ci95_high``: the 2.5th and 97.5th percentiles of the per-patient values (linear interpolation,
  numpy's default). This is a 95% *interval of the spread* across patients, where most patients fall; it is not
  a confidence interval of the mean and does not shrink with more patients.
- ``mean_ci95_low``, ``mean_ci95_high``: the 95% confidence interval of the mean, ``mean -+ t * std / sqrt(n)``
  with ``t`` the 0.975 quantile of Student's t with ``n - 1`` degrees of freedom (assumes roughly normal per-
  patient values or enough patients; no bootstrap). NaN when ``n < 2``.

Every statistic is NaN when ``n == 0``. Numbers may be Python, numpy or 0-d tensor values. Columns without any
number (``patient_id``, paths) are skipped; a column that mixes numbers with other values, or a non-numeric
column asked for by ``keys``, is an error naming the column and the row.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from x2ct.atomic_io import write_json_atomic, write_text_atomic

CONFIDENCE = 0.95
SPREAD_PERCENTILES = (2.5, 97.5)  # the "95% interval" of the per-patient values
SUMMARY_FIELDS = ("n", "n_missing", "mean", "std", "median", "min", "max", "ci95_low", "ci95_high",
                  "mean_ci95_low", "mean_ci95_high")


def summarise(rows: Sequence[Mapping[str, Any]], keys: list[str] | None = None) -> dict[str, dict]:
    """Summary statistics per metric: ``{metric: {"n": int, "n_missing": int, "mean": float, ...}}``.

    ``keys`` picks the metrics (in that order); by default every column whose values are all numbers (or
    missing), in the order of first appearance. See the module docstring for each statistic.
    """
    _check_rows(rows)
    columns = _columns(rows)
    if keys is None:
        keys = [key for key in columns if _is_numeric_column(rows, key)]
    summary = {}
    for key in keys:
        if key not in columns:
            raise KeyError(f"summarise: metric {key!r} is in none of the {len(rows)} rows (columns: {columns})")
        values, n_missing = [], 0
        for index, row in enumerate(rows):
            value = _number(row.get(key))
            if value is None and row.get(key) is not None:
                raise ValueError(f"summarise: metric {key!r} in row {index} is {row[key]!r}, not a number")
            if value is None or math.isnan(value):
                n_missing += 1
            else:
                values.append(value)
        summary[key] = {"n_missing": n_missing, **_statistics(np.asarray(values, dtype=np.float64))}
        summary[key] = {field: summary[key][field] for field in SUMMARY_FIELDS}
    return summary


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write per-patient rows as CSV (atomically): a header of all columns in order of first appearance, one
    line per row, an empty cell where a row lacks a column, floats at full precision (``repr``)."""
    _check_rows(rows)
    columns = _columns(rows)
    return write_text_atomic(path, _csv_text(columns, ([row.get(c) for c in columns] for row in rows)))


def write_summary(summary: Mapping[str, Mapping[str, Any]], json_path: str | os.PathLike,
                  csv_path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write a ``summarise`` result as JSON (``{metric: {statistic: value}}``) and as CSV (one line per metric:
    ``metric`` then the statistics), both atomically. NaN is written as JSON ``NaN`` / CSV ``nan``, which
    Python's ``json`` and ``float`` read back. With ``extra`` (e.g. what was evaluated, the definitions) the JSON
    is ``{**extra, "metrics": {metric: {statistic: value}}}``."""
    fields = list(dict.fromkeys(field for stats_ in summary.values() for field in stats_))
    text = _csv_text(["metric", *fields], ([metric, *(s.get(f) for f in fields)] for metric, s in summary.items()))
    json_obj = {metric: {field: _plain(value) for field, value in s.items()} for metric, s in summary.items()}
    if extra is not None:
        json_obj = {**extra, "metrics": json_obj}
    return write_json_atomic(json_path, json_obj), write_text_atomic(csv_path, text)


def _statistics(values: np.ndarray) -> dict[str, float | int]:
    n = values.size
    if n == 0:
        return {"n": 0} | dict.fromkeys(SUMMARY_FIELDS[2:], math.nan)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    low, high = (float(v) for v in np.percentile(values, SPREAD_PERCENTILES))
    if n > 1:
        half_width = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
        mean_low, mean_high = mean - half_width, mean + half_width
    else:
        mean_low = mean_high = math.nan
    return {"n": n, "mean": mean, "std": std, "median": float(np.median(values)), "min": float(values.min()),
            "max": float(values.max()), "ci95_low": low, "ci95_high": high, "mean_ci95_low": mean_low,
            "mean_ci95_high": mean_high}


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {index} is a {type(row).__name__}, expected a dict of column -> value")


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """All keys of all rows, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _number(value: Any) -> float | None:
    """The value as a float if it is a real number (Python, numpy or a 0-d tensor / array), else None.

    Bools are not numbers here (True is an int in Python, but not a metric value).
    """
    value = _plain(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    """A column with at least one number; ``summarise`` then insists that all its values are numbers."""
    return any(_number(row.get(key)) is not None for row in rows)


def _plain(value: Any) -> Any:
    """numpy scalars and 0-d arrays / tensors -> Python scalars, so that ``json`` and ``repr`` see plain numbers."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest string that reads back to the same float
    return str(value)


def _csv_text(header: list[str], lines: Any) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for line in lines:
        writer.writerow([_cell(value) for value in line])
    return buffer.getvalue()


__all__ = ["summarise", "write_rows_csv", "write_summary"]
