"""Rank correlation between two metric columns over the settings of a comparison.

The models are scored on the phantom benchmark (test PSNR) and on a real CT (``evaluate.py --data example_ct_*``,
the ``best_example_ct PSNR`` column); a ranking of settings on the phantom is only worth trusting for real CTs if
it predicts the real-CT ranking. ``python -m x2ct.compare ... --over seed --rank-correlation 'test PSNR'
'best_example_ct PSNR'`` answers that with Spearman's rho over the settings' means (ties as average ranks, the
two-sided p-value of ``scipy.stats.spearmanr``) and Pearson's r beside it; settings missing either column are
left out and counted. ``rank_correlation(settings, "test PSNR", "best_example_ct PSNR")`` does the same in a
notebook.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from x2ct.evaluation.comparison.aggregate import Setting, aggregate_columns
from x2ct.evaluation.comparison.table import MISSING

MIN_ROWS = 3  # two points always rank perfectly: rho says nothing, and its p-value needs n - 2 > 0
# up to this many settings the p-value is exact (all n! orderings of one column, 40,320 at 8); the t approximation
# is rough there (a perfect ranking of 4 settings gets p = 0 from it, 2 / 4! = 0.083 exactly)
EXACT_P_MAX_ROWS = 8
RHO_DECIMALS = 3


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho (and Pearson's r) between two metric columns over the rows that have both.

    ``rho``, ``p_value`` and ``pearson_r`` are None when undefined; ``undefined`` then says why, else it is "".
    """

    column_a: str
    column_b: str
    n: int  # rows with both columns
    left_out: int  # rows missing either column
    rho: float | None
    p_value: float | None  # two-sided: exact up to EXACT_P_MAX_ROWS settings, else scipy's t approximation
    pearson_r: float | None
    undefined: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_column_keys(rows: Sequence[Setting]) -> dict[str, str]:
    """Column title -> stat key of every metric column of the mean +- std table (``"test PSNR"`` ->
    ``"test_psnr"``, ``"best_example_ct PSNR"`` -> ``"eval/best_example_ct/psnr"``)."""
    return {title: key for key, title, _ in aggregate_columns(rows)}


def rank_correlation(rows: Sequence[Setting], column_a: str, column_b: str) -> RankCorrelation:
    """Spearman's rho between the means of ``column_a`` and ``column_b`` (titles of the mean +- std table, or
    their stat keys) over ``rows``, with its two-sided p-value and Pearson's r. Rows missing either mean are left
    out; with fewer than ``MIN_ROWS`` left, or a column that has one value throughout, rho is undefined.

    Raises ``ValueError`` naming the column and listing the available ones if a column is not in the table.
    """
    keys = metric_column_keys(rows)
    a_key, b_key = (_column_key(keys, column) for column in (column_a, column_b))
    both = [row for row in rows if _mean(row, a_key) is not None and _mean(row, b_key) is not None]
    a_values, b_values = [_mean(row, a_key) for row in both], [_mean(row, b_key) for row in both]
    n, left_out = len(both), len(rows) - len(both)
    undefined = ""
    if n < MIN_ROWS:
        undefined = f"n = {n} < {MIN_ROWS}"
    else:
        constant = [column for column, values in ((column_a, a_values), (column_b, b_values))
                    if len(set(values)) == 1]
        if constant:
            undefined = f"{constant[0]} has the same value in all {n} settings"
    if undefined:
        return RankCorrelation(column_a, column_b, n, left_out, None, None, None, undefined)
    spearman = stats.spearmanr(a_values, b_values)
    p_value = exact_spearman_p(a_values, b_values) if n <= EXACT_P_MAX_ROWS else float(spearman.pvalue)
    pearson = stats.pearsonr(a_values, b_values)
    return RankCorrelation(column_a, column_b, n, left_out, float(spearman.statistic), p_value,
                           float(pearson.statistic))


def exact_spearman_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided permutation p-value of Spearman's rho: the share of all n! orderings of ``b``'s ranks whose rho
    is at least as far from 0 as the observed one (ties keep their average ranks)."""
    ranks_a, ranks_b = (stats.rankdata(v) - (len(v) + 1) / 2 for v in (a, b))
    orderings = np.array(list(itertools.permutations(range(len(ranks_b)))))
    rhos = (ranks_b[orderings] @ ranks_a) / (np.linalg.norm(ranks_a) * np.linalg.norm(ranks_b))
    observed = abs(float(ranks_b @ ranks_a)) / (np.linalg.norm(ranks_a) * np.linalg.norm(ranks_b))
    return float(np.mean(np.abs(rhos) >= observed - 1e-12))


def _column_key(keys: dict[str, str], column: str) -> str:
    if column in keys:
        return keys[column]
    if column in keys.values():
        return column
    raise ValueError(f"no metric column {column!r}; the columns are: {', '.join(repr(t) for t in keys)}")


def _mean(row: Setting, key: str) -> float | None:
    stat = row.stats.get(key)
    return None if stat is None or stat.mean is None or not math.isfinite(stat.mean) else stat.mean


# ------------------------------------------------------------------------------------------------- text


def format_rank_correlation_line(result: RankCorrelation) -> str:
    """``test PSNR vs best_example_ct PSNR: Spearman rho 0.800 (p 0.104, n 5), Pearson r 0.853; 1 setting left out``."""
    head = f"{result.column_a} vs {result.column_b}: "
    if result.undefined:
        text = f"Spearman rho undefined ({result.undefined})"
    else:
        text = (f"Spearman rho {result.rho:.{RHO_DECIMALS}f} (p {result.p_value:.3g}, n {result.n}), "
                f"Pearson r {result.pearson_r:.{RHO_DECIMALS}f}")
    if not result.left_out:
        return head + text
    return head + text + f"; {result.left_out} setting{'' if result.left_out == 1 else 's'} left out (a column missing)"


def format_rank_correlation_markdown(results: Sequence[RankCorrelation], over: str) -> str:
    """A note on what the numbers are and a Markdown table, one line per pair of columns."""
    note = (f"Over the settings of the mean +- std table, each its mean over `{over}`: Spearman's rho (ties as "
            f"average ranks) with its two-sided p-value (exact over all orderings up to {EXACT_P_MAX_ROWS} "
            f"settings, else `scipy.stats.spearmanr`'s t approximation), and Pearson's r for context. Settings "
            f"missing either column are left out; with fewer than {MIN_ROWS} rho is undefined.\n\n")
    lines = ["| columns | n | Spearman rho | p | Pearson r | left out |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.undefined:
            numbers = [f"undefined ({r.undefined})", MISSING, MISSING]
        else:
            numbers = [f"{r.rho:.{RHO_DECIMALS}f}", f"{r.p_value:.3g}", f"{r.pearson_r:.{RHO_DECIMALS}f}"]
        cells = [f"{r.column_a} vs {r.column_b}", str(r.n), *numbers, str(r.left_out)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return note + "\n".join(lines) + "\n"
