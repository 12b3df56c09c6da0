"""The repository's ``conf/`` folder, its resolvers, and one way to compose its configs outside ``train.py``'s app.

The evaluation CLI, the data set preparation a training run triggers, the benchmarks and the tests all compose
configs the way ``train.py`` does; they share this function so the folder, the resolvers and Hydra's global state
are handled once. The resolvers: ``${x2ct.run_stamp:}``, the launch's timestamp (``x2ct.engine.launch`` sets it
once for every torchrun rank), and ``${x2ct.run_dir:output_dir,run_name,resume}``, the run folder.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
RUN_STAMP_ENV = "X2CT_RUN_STAMP"
STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"


def register_resolvers() -> None:
    """``${x2ct.run_stamp:}`` and ``${x2ct.run_dir:output_dir,run_name,resume}`` (idempotent)."""
    OmegaConf.register_new_resolver("x2ct.run_stamp", run_stamp, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("x2ct.run_dir", run_dir, replace=True)


def run_stamp() -> str:
    """The launch's timestamp: set once per launch (shared by all ranks), else now."""
    return os.environ.get(RUN_STAMP_ENV) or datetime.now().strftime(STAMP_FORMAT)


def run_dir(output_dir: str, run_name: str, resume: str | None = None) -> str:
    """The run folder: the resumed run's own folder when ``resume`` names one (or a checkpoint inside one)."""
    if resume not in (None, "", "auto"):
        path = Path(resume)
        if path.is_dir():
            return str(path)
        if path.parent.name == "checkpoints":
            return str(path.parent.parent)
    return str(Path(output_dir) / "runs" / run_name)


def compose_config(config_name: str, overrides: list[str], *, in_running_app: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, its resolvers registered, so that it resolves as in
    ``train.py``; outside a running app Hydra's global state is cleared before and after.

    ``in_running_app``: inside a Hydra app (``train.py`` preparing its data set), compose with the app's own
    search path; elsewhere, and outside any app, compose from ``CONF_DIR``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if in_running_app and GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
