"""The repository's ``conf/`` folder, and one way to compose its configs outside ``train.py``'s Hydra app.

The evaluation CLI, the data set preparation a training run triggers, and the benchmarks all compose configs
the way ``train.py`` does; they share this function so the folder and Hydra's global state are handled once.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(config_name: str, overrides: list[str], *, in_running_app: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``; Hydra's global state is left as it was found.

    ``in_running_app``: inside a Hydra app (``train.py`` preparing its data set), compose with the app's own
    search path; elsewhere, and outside any app, compose from ``CONF_DIR``. Custom resolvers must be registered
    first (``x2ct.engine.launch.register_resolvers``) where the config uses them.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if in_running_app and GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
