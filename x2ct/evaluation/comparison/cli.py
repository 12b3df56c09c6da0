"""``python -m x2ct.compare PATH [PATH ...] [--out DIR] [--wandb-project ENTITY/PROJECT] [--sort psnr|name]
[--no-plot] [--over KEY [--x KEY] [--merge-sweeps] [--paired-to OVERRIDES] [--rank-correlation COL COL]...]``:
print a table comparing runs and write ``comparison.md``, ``comparison.json``, ``val_psnr.png``. ``--over seed``
adds a table of mean +- std over runs that differ only in the seed (x2ct/evaluation/comparison/aggregate.py);
``--x data.num_views`` a plot of test PSNR / SSIM against it; ``--paired-to 'ablation=none'`` a table of each
setting's per-seed differences from that one (paired.py); ``--rank-correlation 'test PSNR' 'best_example_ct PSNR'``
Spearman's rho between two columns of that table over its settings (rank_correlation.py).

Each PATH is a run folder or a folder searched (recursively) for run folders, e.g. ``outputs/``. Output goes to
``--out``, by default ``<first PATH>/comparison/`` (``./comparison/`` when only ``--wandb-project`` is given).

Exit status: 0 compared; 1 the W&B project could not be read; 2 bad arguments (a PATH that does not exist or
holds no runs, no run that could be read, a column or reference setting that is not in the table). A run folder
with a corrupt metrics.jsonl or config is skipped with a warning naming the file; the other runs are still compared.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from x2ct.evaluation.comparison.aggregate import aggregate_runs, format_aggregate_markdown
from x2ct.evaluation.comparison.paired import format_paired_markdown, paired_differences
from x2ct.evaluation.comparison.rank_correlation import format_rank_correlation_line, rank_correlation
from x2ct.evaluation.comparison.report import write_comparison_report
from x2ct.evaluation.comparison.runs import CONFIG_FILE, METRICS_FILE, find_run_dirs, read_runs
from x2ct.evaluation.comparison.table import SORT_KEYS, format_text_table, group_runs

PROG = "python -m x2ct.compare"
DEFAULT_OUT_NAME = "comparison"
EXIT_WANDB_UNAVAILABLE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Compare training runs: a table, a Markdown report "
                                     "and a plot of validation PSNR per epoch.")
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="a run folder, or a folder searched for run folders (e.g. outputs/)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help=f"folder for the report (default: <first PATH>/{DEFAULT_OUT_NAME}/)")
    parser.add_argument("--wandb-project", metavar="ENTITY/PROJECT", default=None,
                        help="also compare the runs of this W&B project (needs the network and an API key)")
    parser.add_argument("--sort", choices=SORT_KEYS, default="psnr",
                        help="psnr: best validation PSNR first (default); name: by run name")
    parser.add_argument("--no-plot", action="store_true", help="do not draw val_psnr.png")
    parser.add_argument("--over", metavar="KEY", default=None,
                        help="also merge runs that differ only in this override (e.g. seed): mean +- std table")
    parser.add_argument("--merge-sweeps", action="store_true",
                        help="with --over: merge runs of different sweeps too (e.g. seeds 1,2 and seed 3 run apart)")
    parser.add_argument("--x", dest="x_key", metavar="KEY", default=None,
                        help="with --over: plot test PSNR/SSIM against this numeric override (e.g. data.num_views)")
    parser.add_argument("--paired-to", metavar="OVERRIDES", default=None,
                        help="with --over: the reference setting (overrides it has, space-separated, e.g. "
                             "'ablation=none'); adds each other setting's differences from it per seed")
    parser.add_argument("--rank-correlation", nargs=2, action="append", default=[], metavar=("COL_A", "COL_B"),
                        help="with --over: Spearman's rho (and Pearson's r) between two metric columns of the mean "
                             "+- std table over its settings, e.g. 'test PSNR' 'best_example_ct PSNR'; repeatable")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the command with the arguments ``argv`` (without the program name); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if not args.paths and not args.wandb_project:
        parser.error("give at least one run folder (or folder of runs), or --wandb-project")
    if args.x_key and not args.over:
        parser.error("--x needs --over (the plot shows means over the merged runs)")
    if args.merge_sweeps and not args.over:
        parser.error("--merge-sweeps needs --over (it says which runs --over merges)")
    if args.paired_to and not args.over:
        parser.error("--paired-to needs --over (it pairs runs by that override's value, e.g. the seed)")
    if args.rank_correlation and not args.over:
        parser.error("--rank-correlation needs --over (it ranks the settings by their means over that override; "
                     "with one run per setting each mean is the run's number)")
    run_dirs = find_all_run_dirs(parser, args.paths)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning  # one line each on stderr; restored when the block ends
        rows = read_runs(run_dirs)
        if run_dirs and not rows:
            parser.error(f"none of the {len(run_dirs)} run folders could be read (see the warnings above)")
        if args.wandb_project:
            from x2ct.evaluation.comparison.wandb_source import WandbUnavailable, read_wandb_runs

            try:
                wandb_rows = read_wandb_runs(args.wandb_project)
            except WandbUnavailable as err:
                print(f"{PROG}: error: {err}", file=sys.stderr)
                return EXIT_WANDB_UNAVAILABLE
            if not wandb_rows and not rows:
                parser.error(f"W&B project {args.wandb_project} has no runs")
            rows += wandb_rows

        groups = group_runs(rows, args.sort)
        print(format_text_table(groups), end="")
        in_table_order = [r for g in groups for r in g.rows]
        settings = aggregate_runs(in_table_order, args.over, args.merge_sweeps) if args.over else []
        if settings:
            print(f"\nmean +- std over {args.over}:\n" + format_aggregate_markdown(settings, args.over), end="")
        paired = None
        if settings and args.paired_to:
            try:
                paired = paired_differences(settings, shlex.split(args.paired_to))
            except ValueError as err:
                parser.error(str(err))
            print(f"\npaired differences over {args.over}:\n" + format_paired_markdown(*paired, args.over), end="")
        try:
            correlations = [rank_correlation(settings, a, b) for a, b in args.rank_correlation]
        except ValueError as err:
            parser.error(f"--rank-correlation: {err}")
        if correlations:
            print(f"\nrank correlation over {len(settings)} settings (means over {args.over}):")
            print("\n".join(format_rank_correlation_line(c) for c in correlations))
        out = args.out or (args.paths[0] / DEFAULT_OUT_NAME if args.paths else Path(DEFAULT_OUT_NAME))
        sources = [str(p) for p in args.paths] + ([f"wandb:{args.wandb_project}"] if args.wandb_project else [])
        written = write_comparison_report(groups, out, plot=not args.no_plot, sort=args.sort, sources=sources,
                               command=f"{PROG} {shlex.join(str(a) for a in argv)}", settings=settings,
                               over=args.over, x_key=args.x_key, paired=paired, rank_correlations=correlations)
    print(f"\nwrote {', '.join(p.name for p in written.values())} to {out}")
    return 0


def find_all_run_dirs(parser: argparse.ArgumentParser, paths: Sequence[Path]) -> list[Path]:
    """Run folders under every PATH, each once; a PATH that is missing or holds no runs ends the command (exit 2)."""
    run_dirs: dict[Path, Path] = {}
    for path in paths:
        try:
            found = find_run_dirs(path)
        except (FileNotFoundError, NotADirectoryError) as err:
            parser.error(str(err))
        if not found:
            parser.error(f"no runs found under {path} (a run folder holds {METRICS_FILE} and {CONFIG_FILE})")
        for run_dir in found:
            run_dirs.setdefault(run_dir.resolve(), run_dir)
    return list(run_dirs.values())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
