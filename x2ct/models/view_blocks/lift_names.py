"""The names of the 2D -> 3D lifts, one set for ``model.lift`` and for the ``lift`` config group:

- ``geometric``: every voxel centre projected into every view with the data set's cone-beam geometry, the view's
  features read there (``cone_lift.py``); no parameters;
- ``parallel``: each view's features copied along parallel rays that span the volume (``lift.py``); no parameters;
- ``learned``: a learned stack of features along each parallel ray (``ChannelsToDepth``, the X2CT-GAN lift).

Former names: ``model.lift`` said ``backproject`` for the parallel copy and ``channels_to_depth`` for the learned
lift, while the group option ``lift=backproject`` chose the *geometric* lift. A former name is refused naming its
replacement; a checkpoint's saved config keeps them, and ``with_current_lift_names`` renames them to rebuild its
model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

LIFTS = ("geometric", "parallel", "learned")

# former model.lift values -> the names that replace them
RENAMED_LIFTS = {"backproject": "parallel", "channels_to_depth": "learned"}

# what the old group option (conf/lift/backproject.yaml) puts into model.lift, so that every path refuses it
OLD_GROUP_OPTION = "lift=backproject"


def check_lift(lift: Any, owner: str, key: str = "lift", allowed: Sequence[str] = LIFTS) -> None:
    """Refuse a lift name outside ``allowed`` in one line naming ``owner`` (a class, or the config) and ``key``; an
    old name is answered with its new one."""
    if lift == OLD_GROUP_OPTION:
        raise ValueError(f"{owner}: the lift group's option lift=backproject is an old name: use lift=geometric (the "
                         "cone-beam lift it chose; lift=parallel is the parallel copy)")
    if lift in RENAMED_LIFTS:
        raise ValueError(f"{owner}: {key}={lift} is an old name: use {key}={RENAMED_LIFTS[lift]} (the lifts are "
                         f"{' | '.join(LIFTS)})")
    if lift not in allowed:
        raise ValueError(f"{owner}: {key}={lift!r} is not one of {' | '.join(allowed)}")


def lift_settings(model_cfg: Mapping[str, Any], prefix: str = "model") -> Iterator[tuple[str, Any]]:
    """``(key path, value)`` of every ``lift`` key of a model config, nested ones too (``model.coarse_kwargs.lift``)."""
    for key, value in model_cfg.items():
        path = f"{prefix}.{key}"
        if key == "lift":
            yield path, value
        elif isinstance(value, Mapping):
            yield from lift_settings(value, path)


def with_current_lift_names(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a saved model config (a checkpoint's) with every former ``lift`` value renamed, nested ones too:
    a model saved with former names rebuilds as the same modules, so its weights load."""
    renamed = {}
    for key, value in model_cfg.items():
        if key == "lift" and isinstance(value, str):
            value = RENAMED_LIFTS.get(value, value)
        elif isinstance(value, Mapping):
            value = with_current_lift_names(value)
        renamed[key] = value
    return renamed
