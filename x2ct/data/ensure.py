"""A data set on demand: the folder ``data.root`` names, prepared with prepare.py's pipeline when it is missing.

Training and evaluation call this before reading ``data.root``. Under torchrun only one process may prepare: the
caller passes ``run_once``, which runs the preparation on rank 0 while the other ranks wait (the engine's
``run_on_main_then_wait``); the data layer itself knows nothing of process groups.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig


class RunOnce(Protocol):
    """Runs ``prepare`` once for all the processes of a run; ``what`` names it in the other ranks' errors."""

    def __call__(self, prepare: Callable[[], None], *, what: str) -> None: ...


def run_here(prepare: Callable[[], None], *, what: str) -> None:
    """One process: prepare here."""
    prepare()


# how long a run waits for another process that prepares the data set it needs
PREPARE_WAIT_S = 24 * 3600.0


def ensure_dataset(data_cfg: DictConfig, run_once: RunOnce = run_here) -> Path:
    """The data set folder ``data_cfg.root``; prepared (through ``run_once``) when missing and ``data.prepare`` is
    set, else a FileNotFoundError naming the folder."""
    root = Path(data_cfg.root)
    if not (root / "dataset.json").exists():
        if data_cfg.prepare is None:
            raise FileNotFoundError(f"data.root={root} holds no data set (dataset.json); prepare one with prepare.py "
                                    f"or set data.prepare")

        def prepare() -> None:
            from x2ct.config_files import compose_config
            from x2ct.data.prepare import load_prepare_config, prepare_dataset

            overrides = [*data_cfg.prepare, f"output_dir={root}"]
            prepare_cfg = compose_config("prepare", overrides, in_running_app=True)
            print(f"data set {root} not found: preparing it (prepare.py {' '.join(overrides)})", flush=True)
            # another process preparing the same folder (a parallel sweep job) is waited for, then reused
            report = prepare_dataset(load_prepare_config(prepare_cfg), lock_wait_s=PREPARE_WAIT_S)
            if not report.ok:
                raise RuntimeError(f"preparing {root} failed for {len(report.failures)} patients: {report.failures}")

        run_once(prepare, what=f"preparing the data set {root}")
    return root
