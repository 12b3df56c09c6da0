"""Write a comparison: ``comparison.md`` (tables + definitions + plot), ``comparison.json`` (the rows, with their
validation curves), ``val_psnr.png`` (validation PSNR per epoch, one colour family per sweep). All atomic.

The plot uses matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``: no global figure state,
no display needed. matplotlib is optional: without it the report is written without a plot, with a warning.
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from x2ct import provenance
from x2ct.atomic_io import write_atomic, write_json_atomic, write_text_atomic
from x2ct.data.reference import MEAN_VOLUME_PATIENTS
from x2ct.evaluation.comparison.aggregate import (
    Setting,
    format_aggregate_markdown,
    natural_key,
    numeric_override,
    series_label,
    shared_setting_overrides,
)
from x2ct.evaluation.comparison.paired import PairedSetting, format_paired_markdown
from x2ct.evaluation.comparison.rank_correlation import RankCorrelation, format_rank_correlation_markdown
from x2ct.evaluation.comparison.runs import RunRow
from x2ct.evaluation.comparison.table import COLUMNS, RunGroup, format_markdown_table, name_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MARKDOWN_FILE = "comparison.md"
JSON_FILE = "comparison.json"
PLOT_FILE = "val_psnr.png"
AGGREGATE_PLOT_FILE = "{metric}_vs_{x}.png"

# What each column means; printed in the report and stored in the JSON so a number is never read without it.
DEFINITIONS = {
    "run": "the run folder's name; for a job of a Hydra multirun sweep, `<sweep>/<job number>`",
    "model": "class name of the config's model._target_",
    "overrides": "command-line overrides (.hydra/overrides.yaml), less run_name, resume, data.root, paths.* and "
                 "hydra.*; in a sweep, those every job shares are listed once above its table",
    "loss weights": "loss.weights of the resolved config (the weighted sum the run trained on; terms with weight 0 "
                    "are off and left out)",
    "params": "number of model parameters (run_info.json; '-' for runs that lack it)",
    "val PSNR": "best validation PSNR over the run's validation passes, in dB: 10 log10(1 / MSE) per patient on "
                "volumes in [0, 1] (the HU window mapped linearly), averaged over the validation split",
    "val SSIM": "3D SSIM at the validation pass with the best PSNR (not the best SSIM of the run): Gaussian "
                "window sigma 1.5 (11 taps), K1 0.01, K2 0.03, data range 1, per patient, averaged",
    "best ep": "the epoch (counting from 1) of that validation pass",
    "mean-vol PSNR": f"validation PSNR of the mean training volume predicted for every patient (the mean of the "
                     f"first {MEAN_VOLUME_PATIENTS} training CTs, all of a smaller split): the reference a model must "
                     "beat to have learned anything from the X-rays",
    "test PSNR": "the best checkpoint (by validation PSNR) on the test split (test_metrics.json)",
    "test SSIM": "3D SSIM as above, same checkpoint, test split",
    "epochs": "epochs completed (the highest epoch in the training/validation records) / trainer.max_epochs",
    "wall time": "run_info.json wall_time_s (the sum of the run's sessions); for running runs and runs without "
                 "it, first to last metrics record (start-up before the first record left out, pauses between a "
                 "stop and a resume counted)",
    "status": "run_info.json status (running, finished, failed; a run killed without a chance to record it stays "
              "'running'); for runs without it, 'finished' if all trainer.max_epochs epochs are recorded, else "
              "'incomplete'",
}
WANDB_NOTE = ("Runs read from W&B take the same quantities from the run's history (val/psnr, val/ssim, epoch) "
              "and summary (parameters, val/psnr_mean_volume, test/psnr, test/ssim, _runtime).")
SORT_TEXT = {"psnr": "ranked by best validation PSNR", "name": "sorted by name"}

# Plot style: single runs take distinct colours; each sweep takes one colour family (light to dark by job order)
# and one line style.
FIGURE_SIZE_IN = (9.0, 5.0)
FIGURE_DPI = 120
SINGLE_RUN_COLOURMAP = "tab10"
SWEEP_COLOURMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
SWEEP_SHADES = (0.45, 0.95)  # the colour-map range a sweep's jobs spread over
SWEEP_LINESTYLES = ("--", "-.", "-")
SWEEP_MARKER = "s"
SINGLE_RUN_MARKER = "o"
LEGEND_LABEL_CHARS = 60
REFERENCE_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1.2}
LEGEND_ROWS_PER_COLUMN = 20


def write_comparison_report(groups: list[RunGroup], out_dir: str | os.PathLike, *, plot: bool = True,
                            sort: str = "psnr", command: str | None = None, sources: Sequence[str] = (),
                            settings: Sequence[Setting] = (), over: str | None = None, x_key: str | None = None,
                            paired: tuple[Setting, Sequence[PairedSetting]] | None = None,
                            rank_correlations: Sequence[RankCorrelation] = ()) -> dict[str, Path]:
    """Write the comparison files into ``out_dir`` (created if needed); returns {"markdown", "json", "plot"?,
    "aggregate_plot"?}. ``settings`` (``aggregate_runs`` over ``over``) add the mean +- std table; with ``x_key``
    also a plot of test PSNR and SSIM against that override's numeric value; ``paired`` (``paired_differences``:
    the reference setting and the others' differences from it) a table of paired differences;
    ``rank_correlations`` (``rank_correlation`` over ``settings``) a table of rank correlations between columns."""
    out_dir = Path(out_dir)
    written = {}
    if plot:
        plot_path = write_val_psnr_plot(groups, out_dir / PLOT_FILE)
        if plot_path is not None:
            written["plot"] = plot_path
        if settings and x_key:
            name = AGGREGATE_PLOT_FILE.format(metric="test", x=x_key.replace(".", "_"))
            aggregate_path = write_aggregate_plot(settings, x_key, out_dir / name)
            if aggregate_path is not None:
                written["aggregate_plot"] = aggregate_path
    generated = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    origin = provenance.record()
    record = comparison_json(groups, generated, sort, command, sources, origin)
    if settings:
        record["aggregate"] = {"over": over, "std": "sample standard deviation (ddof=1) over the runs",
                               "settings": [s.to_dict() for s in settings]}
    if paired:
        reference, differences = paired
        record["paired"] = {"over": over, "reference": reference.overrides,
                            "difference": f"run minus the reference run with the same {over}",
                            "settings": [d.to_dict() for d in differences]}
    if rank_correlations:
        record["rank_correlation"] = {
            "over": over, "rows": f"the settings of the aggregate table, each its mean over {over}",
            "rho": "Spearman's rank correlation, ties as average ranks; p_value two-sided, exact over all orderings "
                   "up to 8 settings (else scipy.stats.spearmanr's t approximation)",
            "left_out": "settings missing either column", "pairs": [c.to_dict() for c in rank_correlations]}
    written["json"] = write_json_atomic(out_dir / JSON_FILE, record)
    markdown = comparison_markdown(groups, generated, sort, command, sources, origin,
                                   plot_name=PLOT_FILE if "plot" in written else None)
    if settings:
        markdown += aggregate_markdown(settings, over or "seed",
                                       written["aggregate_plot"].name if "aggregate_plot" in written else None)
    if paired:
        markdown += f"\n## Paired differences over `{over}`\n\n" + format_paired_markdown(*paired, over or "seed")
    if rank_correlations:
        markdown += ("\n## Rank correlation between columns\n\n"
                     + format_rank_correlation_markdown(rank_correlations, over or "seed"))
    written["markdown"] = write_text_atomic(out_dir / MARKDOWN_FILE, markdown)
    return written


def comparison_json(groups: list[RunGroup], generated: str, sort: str, command: str | None,
                    sources: Sequence[str], origin: dict[str, Any]) -> dict[str, Any]:
    """The comparison's JSON; ``origin``: its own provenance (``x2ct.provenance.record``), spread at the top level.
    Each run's training commit, machine, threads and sharing are in ``runs`` (None where its run_info.json did
    not record them)."""
    return {
        "generated": generated,
        "command": command,
        **origin,
        "sources": list(sources),
        "sort": sort,
        "definitions": DEFINITIONS,
        "groups": [{"sweep": g.sweep, "source": g.source, "shared_overrides": g.shared_overrides,
                    "runs": [row.run for row in g.rows]} for g in groups],
        "runs": [row.to_dict() for g in groups for row in g.rows],
    }


def comparison_markdown(groups: list[RunGroup], generated: str, sort: str, command: str | None,
                        sources: Sequence[str], origin: dict[str, Any], plot_name: str | None) -> str:
    n_runs = sum(len(g.rows) for g in groups)
    n_sweeps = sum(1 for g in groups if g.sweep)
    summary = f"{_count(n_runs, 'run')} ({_count(n_sweeps, 'sweep')}), {SORT_TEXT.get(sort, sort)}."
    lines = ["# Run comparison", "",
             f"{summary} Generated {generated}" + (f" by `{command}`" if command else "")
             + f"; compared at {provenance.describe(origin)}.", ""]
    if sources:
        lines += ["Sources: " + ", ".join(f"`{s}`" for s in sources) + ".", ""]
    if plot_name:
        lines += [f"![Validation PSNR per epoch]({plot_name})", ""]
    for group in groups:
        lines += [f"## Sweep `{group.sweep}`" if group.sweep else "## Single runs", ""]
        if group.source and group.sweep:
            lines += [f"Folder: `{group.source}`." + (
                " Overrides shared by every job: " + ", ".join(f"`{o}`" for o in group.shared_overrides) + "."
                if group.shared_overrides else ""), ""]
        lines += [format_markdown_table(group).rstrip("\n"), ""]
    lines += ["## Definitions", ""]
    lines += [f"- **{name}**: {DEFINITIONS[name]}." for name in COLUMNS]
    if any(row.source.startswith("wandb:") for g in groups for row in g.rows):
        lines += ["", WANDB_NOTE]
    return "\n".join(lines) + "\n"


def aggregate_markdown(settings: Sequence[Setting], over: str, plot_name: str | None) -> str:
    """The "mean +- std over <over>" section of comparison.md."""
    lines = ["", f"## Mean +- std over `{over}`", "",
             f"Runs that differ only in `{over}` merged: mean +- sample standard deviation (ddof=1) of each run's "
             f"number. Evaluation columns (`<name> PSNR/SSIM`) are `evaluate.py` results found in the run folders "
             f"(`evaluation/<name>/summary.json`), each run's mean over its patients.", ""]
    if plot_name:
        lines += [f"![test PSNR and SSIM]({plot_name})", ""]
    return "\n".join(lines) + format_aggregate_markdown(settings, over)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ------------------------------------------------------------------------------------------------- plot


def val_psnr_figure(groups: list[RunGroup]) -> Figure | None:
    """Validation PSNR (dB) against epoch, one line per run with validation records; ``None`` if there are none.

    Dotted grey lines mark each distinct mean-volume reference (runs on the same data share one).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not any(row.val_curve for g in groups for row in g.rows):
        return None
    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    references: dict[str, float] = {}
    sweeps_seen = 0
    for group in groups:
        rows = [row for row in group.rows if row.val_curve]
        if group.sweep:  # shades follow the job order, whatever the table's order
            cmap = colormaps[SWEEP_COLOURMAPS[sweeps_seen % len(SWEEP_COLOURMAPS)]]
            low, high = SWEEP_SHADES
            order = sorted(rows, key=name_key)
            colours = [cmap(high if len(rows) == 1 else low + (high - low) * order.index(row) / (len(rows) - 1))
                       for row in rows]
            style, marker = SWEEP_LINESTYLES[sweeps_seen % len(SWEEP_LINESTYLES)], SWEEP_MARKER
            sweeps_seen += 1
        else:
            cmap = colormaps[SINGLE_RUN_COLOURMAP]
            colours = [cmap(j % cmap.N) for j in range(len(rows))]
            style, marker = "-", SINGLE_RUN_MARKER
        for row, colour in zip(rows, colours, strict=True):
            ax.plot([p["epoch"] for p in row.val_curve], [p["psnr"] for p in row.val_curve], linestyle=style,
                    marker=marker, markersize=3, color=colour, label=legend_label(row, group))
        for row in group.rows:
            if row.mean_volume_psnr is not None:
                references.setdefault(f"{row.mean_volume_psnr:.2f}", row.mean_volume_psnr)
    for text, value in references.items():
        ax.axhline(value, label=f"mean-volume reference ({text} dB)", **REFERENCE_STYLE)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title("Validation PSNR")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    entries = len(ax.get_legend_handles_labels()[1])
    # below the axes: the curves keep the full width however long the run names are
    fig.legend(fontsize="small", loc="outside lower center", ncol=1 + (entries - 1) // LEGEND_ROWS_PER_COLUMN)
    return fig


def legend_label(row: RunRow, group: RunGroup) -> str:
    """The run's name; for a sweep job also what it varies ("sweepA/1 (loss.weights.l1=0.5)")."""
    own = [o for o in row.overrides if o not in group.shared_overrides] if group.sweep else []
    return _shorten(f"{row.run} ({' '.join(own)})", LEGEND_LABEL_CHARS) if own else row.run


def write_val_psnr_plot(groups: list[RunGroup], path: str | os.PathLike) -> Path | None:
    """Write ``val_psnr_figure`` as a PNG; ``None`` (with a warning) without matplotlib or validation records."""
    try:
        fig = val_psnr_figure(groups)
    except ImportError:
        warnings.warn("matplotlib is not installed: no PSNR plot (pip install matplotlib)", stacklevel=2)
        return None
    if fig is None:
        warnings.warn("no run has validation records: no PSNR plot", stacklevel=2)
        return None
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


def aggregate_figure(settings: Sequence[Setting], x_key: str) -> Figure | None:
    """Test PSNR and SSIM (mean +- std over the merged runs) against the numeric override ``x_key``, one line per
    series (the settings' other overrides); ``None`` if no setting has both ``x_key`` and a test number."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shared = shared_setting_overrides(settings)
    series: dict[str, list[tuple[float, Setting]]] = {}
    for setting in settings:
        x = numeric_override(setting, x_key)
        if x is not None and setting.stats["test_psnr"].mean is not None:
            series.setdefault(series_label(setting, x_key, shared), []).append((x, setting))
    if not series:
        return None
    fig = Figure(figsize=(10.0, 4.2), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    cmap = colormaps[SINGLE_RUN_COLOURMAP]
    for j, label in enumerate(sorted(series, key=natural_key)):
        points = sorted(series[label], key=lambda p: p[0])
        for ax, key in zip(axes, ("test_psnr", "test_ssim"), strict=True):
            stats = [s.stats[key] for _, s in points]
            ax.errorbar([x for x, _ in points], [st.mean for st in stats], yerr=[st.std for st in stats],
                        marker="o", capsize=3, color=cmap(j % cmap.N), label=_shorten(label, LEGEND_LABEL_CHARS))
    for ax, title in zip(axes, ("test PSNR (dB)", "test SSIM"), strict=True):
        ax.set_xlabel(x_key)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({x for pts in series.values() for x, _ in pts}))
    n = max(len(s.runs) for pts in series.values() for _, s in pts)
    fig.suptitle(f"Test metrics against {x_key}: mean +- std over up to {n} runs each")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize="small", loc="outside lower center")
    return fig


def write_aggregate_plot(settings: Sequence[Setting], x_key: str, path: str | os.PathLike) -> Path | None:
    """Write ``aggregate_figure`` as a PNG; ``None`` (with a warning) without matplotlib or plottable settings."""
    try:
        fig = aggregate_figure(settings, x_key)
    except ImportError:
        warnings.warn("matplotlib is not installed: no plot (pip install matplotlib)", stacklevel=2)
        return None
    if fig is None:
        warnings.warn(f"no setting has a numeric override {x_key} and a test PSNR: no plot", stacklevel=2)
        return None
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
