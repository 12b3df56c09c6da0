"""Compare training runs: one table of what each run was and how well it did, a Markdown report, a PSNR plot.

``python -m x2ct.compare outputs/`` (see ``x2ct.evaluation.comparison.cli``). Pieces, each usable from a notebook:

- ``runs``: find run folders and read one into a ``RunRow`` (metrics.jsonl, config_resolved.yaml, .hydra/,
  run_info.json, test_metrics.json).
- ``wandb_source``: the same rows from a W&B project through its public API.
- ``table``: group rows by sweep, rank them, format them as aligned text or Markdown.
- ``aggregate``, ``paired``: mean +- std over seeds; each setting's per-seed differences from a reference.
- ``rank_correlation``: does one metric column rank the settings as another does (phantom against real CT)?
- ``report``: write comparison.md, comparison.json and the validation PSNR plot.
"""

from x2ct.evaluation.comparison.runs import RunReadError, RunRow, find_run_dirs, read_run, read_runs
from x2ct.evaluation.comparison.table import RunGroup, group_runs

__all__ = ["RunGroup", "RunReadError", "RunRow", "find_run_dirs", "group_runs", "read_run", "read_runs"]
