"""Rows from a W&B project through its public API (``wandb.Api().runs("entity/project")``).

Needs the network and an API key (``wandb login`` or ``WANDB_API_KEY``); any failure to reach the project ends in
one ``WandbUnavailable`` whose message says why. wandb is imported only when this is called. Only the fetching is
untestable offline: ``read_wandb_runs`` takes the API object, so tests pass a stand-in.

Mapping (the trainer logs these, see ``x2ct/engine/trainer.py``): history ``val/psnr``, ``val/ssim``, ``epoch``
(0-based) -> the validation curve; summary ``parameters``, ``val/psnr_mean_volume``, ``test/psnr``,
``test/ssim``, ``_runtime`` (seconds); config ``model._target_``, ``loss.weights``, ``trainer.max_epochs``;
``run.group`` (one per sweep) -> the sweep; ``run.state`` -> the status. A sweep job's W&B name is
``<job number>_<override_dirname>``; its overrides are read back from that name.
"""

from __future__ import annotations

import re
from typing import Any

from x2ct.evaluation.comparison.runs import (
    RunRow,
    config_value,
    finite_or_none,
    int_or_none,
    is_noise_override,
    loss_weights_of,
    model_name,
    set_best_validation,
    validation_curve,
)

HISTORY_KEYS = ["val/psnr", "val/ssim", "epoch"]
HISTORY_SAMPLES = 100_000  # W&B samples history down to this many rows; validation rows are one per epoch
API_TIMEOUT_S = 30
SWEEP_JOB_NAME = re.compile(r"^(\d+)_(.+)$")


class WandbUnavailable(RuntimeError):
    """The W&B project could not be read (no wandb, no network, no API key, no such project)."""


def read_wandb_runs(project: str, api: Any | None = None) -> list[RunRow]:
    """One ``RunRow`` per run of ``project`` ("entity/project"); ``api`` defaults to ``wandb.Api()``."""
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=API_TIMEOUT_S)
        fetched = [{"id": run.id, "name": run.name, "group": run.group, "state": run.state,
                    "config": dict(run.config), "summary": dict(run.summary.items()),
                    "history": list(run.history(keys=HISTORY_KEYS, samples=HISTORY_SAMPLES, pandas=False))}
                   for run in api.runs(project)]
    except ImportError as err:
        raise WandbUnavailable("reading a W&B project needs the wandb package (pip install wandb)") from err
    except Exception as err:  # network, authentication, unknown project: all mean "cannot read it"
        message = " ".join(str(err).split())
        raise WandbUnavailable(f"cannot read W&B project {project!r}: {type(err).__name__}: {message}") from err
    return [wandb_row(project, **run) for run in fetched]


def wandb_row(project: str, id: str, name: str | None, group: str | None, state: str | None,
              config: dict[str, Any], summary: dict[str, Any], history: list[dict[str, Any]]) -> RunRow:
    """A ``RunRow`` from one W&B run's fetched fields (see the module docstring for the mapping)."""
    name = name or id
    job = SWEEP_JOB_NAME.match(name) if group else None
    row = RunRow(run=f"{group}/{job.group(1)}" if job else name, source=f"wandb:{project}/{id}",
                 sweep=group or "", sweep_source=f"wandb:{project}/{group}" if group else "")
    row.model = model_name(config_value(config, "model", "_target_"))
    row.overrides = [o for o in split_override_dirname(job.group(2))
                     if not is_noise_override(o)] if job else []
    row.loss_weights = loss_weights_of(config_value(config, "loss", "weights"))
    row.max_epochs = int_or_none(config_value(config, "trainer", "max_epochs"))
    row.parameters = int_or_none(summary.get("parameters"))
    row.val_curve = validation_curve(history, psnr_key="val/psnr", ssim_key="val/ssim")
    set_best_validation(row)
    row.epochs = row.val_curve[-1]["epoch"] if row.val_curve else 0
    row.mean_volume_psnr = finite_or_none(summary.get("val/psnr_mean_volume"))
    row.test_psnr, row.test_ssim = finite_or_none(summary.get("test/psnr")), finite_or_none(summary.get("test/ssim"))
    row.wall_time_s = finite_or_none(summary.get("_runtime"))
    row.status = state or "unknown"
    return row


def split_override_dirname(text: str) -> list[str]:
    """Hydra's ``override_dirname`` ("a=1,b=[2,3]") back into overrides, splitting at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]
