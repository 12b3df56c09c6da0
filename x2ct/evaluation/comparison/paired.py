"""Paired differences from a reference setting: each run minus the reference run with the same seed.

Seed-to-seed spread is often larger than the effect an ablation measures (milestone 1 on the phantom benchmark: test
PSNR 29.5-31.1 dB over three seeds), but runs with the same seed share their initialisation stream and batch order,
so ``run(setting, seed) - run(reference, seed)`` cancels much of it. ``python -m x2ct.compare ... --over seed
--paired-to 'ablation=none'`` adds, for every other setting, the mean +- std (``ddof=1``) of those differences over
the seeds both settings have, their 95% confidence interval (Student's t with n - 1 degrees of freedom: with 3 seeds
it is mean +- 2.48 std, so an interval that spans 0 says "no difference detected", not "no effect"), and the
differences themselves, for test PSNR / SSIM and every ``evaluate.py`` result (``eval/<name>/psnr``, ``.../ssim``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import stats as scipy_stats

from x2ct.evaluation.comparison.aggregate import Setting, Stat, aggregate_columns, shared_setting_overrides
from x2ct.evaluation.comparison.table import MISSING, PSNR_DECIMALS

# numbers compared in pairs: the test metrics and every evaluation (validation PSNR picked the checkpoint; wall time
# is not a result)
SKIPPED = ("best_val_psnr", "wall_time_s")
CONFIDENCE = 0.95


@dataclass
class PairedSetting:
    """One setting's differences from the reference, per ``over`` value both have (e.g. the seeds)."""

    overrides: list[str]
    model: str
    pairs: list[str]  # the ``over`` values both settings have, in this setting's order
    diffs: dict[str, list[float | None]] = field(default_factory=dict)  # per key, one difference per pair
    stats: dict[str, Stat] = field(default_factory=dict)
    # per key, the CONFIDENCE interval of the mean difference, [low, high]; None below 2 finite pairs
    intervals: dict[str, list[float] | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_reference(settings: Sequence[Setting], reference: Sequence[str]) -> Setting:
    """The one setting whose overrides include every override in ``reference``; a clear error otherwise."""
    matches = [s for s in settings if all(o in s.overrides for o in reference)]
    if len(matches) != 1:
        labels = "; ".join(" ".join(s.overrides) or "(no overrides)" for s in settings)
        raise ValueError(f"--paired-to {' '.join(reference)!r} must name exactly one setting, it matches "
                         f"{len(matches)}; the settings are: {labels}")
    return matches[0]


def paired_differences(settings: Sequence[Setting], reference: Sequence[str]) -> tuple[Setting, list[PairedSetting]]:
    """The reference setting and, for every other setting with at least one ``over`` value in common with it,
    its differences from the reference run of that value."""
    ref = find_reference(settings, reference)
    ref_index = _unique_index(ref)
    paired = []
    for setting in settings:
        if setting is ref:
            continue
        index = _unique_index(setting)
        pairs = [value for value in setting.over_values if value in ref_index]
        if not pairs:
            continue
        entry = PairedSetting(overrides=setting.overrides, model=setting.model, pairs=pairs)
        for key, values in setting.values.items():
            if key in SKIPPED or key not in ref.values:
                continue
            entry.diffs[key] = [_minus(values[index[v]], ref.values[key][ref_index[v]]) for v in pairs]
            entry.stats[key] = Stat.of(entry.diffs[key])
            entry.intervals[key] = paired_interval(entry.stats[key])
        paired.append(entry)
    return ref, paired


def paired_interval(stat: Stat, confidence: float = CONFIDENCE) -> list[float] | None:
    """The ``confidence`` interval of a mean paired difference, mean +- t(n - 1) std / sqrt(n); None when fewer than
    two pairs (no spread to scale by)."""
    if stat.mean is None or stat.n < 2:
        return None
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, stat.n - 1)) * stat.std / stat.n ** 0.5
    return [stat.mean - half, stat.mean + half]


def format_paired_markdown(reference: Setting, paired: Sequence[PairedSetting], over: str) -> str:
    """A Markdown table: setting, pairs, then ``mean +- std [95% interval] (d_1, d_2, ...)`` of each difference."""
    columns = [(key, title, decimals) for key, title, decimals in aggregate_columns([reference, *_as_settings(paired)])
               if key not in SKIPPED]
    shared = shared_setting_overrides([reference, *_as_settings(paired)])
    head = ["setting", f"pairs ({over})", *(f"Δ {title}" for _, title, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * len(columns)) + " |"]
    for entry in paired:
        label = " ".join(o for o in entry.overrides if o not in shared) or MISSING
        cells = [label, ", ".join(entry.pairs),
                 *(_format_diffs(entry.stats.get(key), entry.diffs.get(key), entry.intervals.get(key), decimals)
                   for key, _, decimals in columns)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    ref_label = " ".join(o for o in reference.overrides if o not in shared) or " ".join(reference.overrides)
    note = (f"Each run minus the reference run (`{ref_label}`) with the same {over}: mean +- std over the pairs, "
            f"the {CONFIDENCE:.0%} confidence interval of the mean difference (Student's t; an interval that spans 0 "
            f"detects no difference, which with few pairs is not evidence of no effect), then each pair's "
            f"difference in {over} order.\n\n")
    return note + "\n".join(lines) + "\n"


def _format_diffs(stat: Stat | None, diffs: list[float | None] | None, interval: list[float] | None,
                  decimals: int | None) -> str:
    if stat is None or stat.mean is None or diffs is None:
        return MISSING
    d = PSNR_DECIMALS if decimals is None else decimals
    each = ", ".join(MISSING if v is None else f"{v:+.{d}f}" for v in diffs)
    bounds = "" if interval is None else f" [{interval[0]:+.{d}f}, {interval[1]:+.{d}f}]"
    return f"{stat.mean:+.{d}f} +- {stat.std:.{d}f}{bounds} ({each})"


def _as_settings(paired: Sequence[PairedSetting]) -> list[Setting]:
    return [Setting(sweep="", source="", overrides=p.overrides, model=p.model, runs=[], over_values=p.pairs,
                    parameters=None, stats=p.stats) for p in paired]


def _unique_index(setting: Setting) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, value in enumerate(setting.over_values):
        if value in index:
            raise ValueError(f"setting {' '.join(setting.overrides)!r} has two runs with the same value {value!r} "
                             f"(runs {setting.runs[index[value]]} and {setting.runs[i]}): pairs would be ambiguous")
        index[value] = i
    return index


def _minus(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    return float(value) - float(reference)
