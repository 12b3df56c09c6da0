"""Weights & Biases logging on rank 0, and a ``NullLogger`` with the same methods for everything else.

Use::

    logger = WandbLogger.create(cfg_dict, mode=cfg.logger.mode, project=..., run_dir=...)
    try:
        ...  # logger.log({"train/loss": 0.1}, step=step)
    except BaseException:
        logger.finish(exit_code=1)  # a crashed run must not show as "finished" (https://github.com/wandb/wandb/issues/4591)
        raise
    finally:
        logger.finish()  # always: else W&B hangs at the end of DDP runs or the next multirun job logs into it

or ``with WandbLogger.create(...) as logger:``, which does the same. ``finish`` is safe to call twice.

Traps this module avoids (see shared/FRAMEWORK_NOTES.md): init on every rank (duplicate runs: ``create``
returns a ``NullLogger`` on ranks other than 0 even if asked for W&B), a DictConfig as config (``create``
requires a plain dict), and no resume (pass the run id stored in the checkpoint as ``run_id``).
``wandb.watch`` is deliberately not offered: ``log="all"`` stalls DDP.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("online", "offline", "disabled")


def _scalar(value: Any) -> Any:
    """0-d tensors and NumPy scalars as Python numbers (W&B stores anything else as given)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def image_to_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` (C in 1, 3, 4) to uint8: floats are taken as [0, 1] and clipped, uint8 kept.

    Doing this here, not in W&B, means a float image is never silently rescaled to its own min/max.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name}: expected an (H, W) or (H, W, C) image with C in (1, 3, 4), got {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 or float in [0, 1], got dtype {array.dtype}")
    return np.round(np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


class NullLogger:
    """Accepts every ``WandbLogger`` call and does nothing (logging disabled, or a rank other than 0)."""

    run_id: str | None = None

    def log(self, values: dict[str, Any], step: int) -> None:
        pass

    def log_images(self, name: str, images: Sequence[np.ndarray], step: int,
                   captions: Sequence[str] | None = None) -> None:
        pass

    def log_table(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass

    def __enter__(self) -> NullLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def _this_rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK") or 0)


class WandbLogger(NullLogger):
    """One W&B run. Build it with ``WandbLogger.create``; its files go under ``run_dir/wandb``.

    Steps passed to ``log`` / ``log_images`` must not decrease (W&B drops rows with an older step); use the
    optimizer step, which a resumed run continues from the checkpoint.
    """

    def __init__(self, run: Any) -> None:
        self._run = run
        self._finished = False

    @classmethod
    def create(cls, cfg: dict[str, Any], *, mode: str, project: str, run_dir: str | os.PathLike,
               entity: str | None = None, group: str | None = None,
               name: str | None = None, run_id: str | None = None,
               tags: Sequence[str] | None = None) -> WandbLogger | NullLogger:
        """Start (or resume) a W&B run; returns a ``NullLogger`` when disabled or not on rank 0.

        Args:
            cfg: the resolved config as a plain dict (``OmegaConf.to_container(cfg, resolve=True)``).
            mode: the one switch: ``"offline"`` (files for ``wandb sync``), ``"online"`` (needs ``wandb login`` or
                ``WANDB_API_KEY``), or ``"disabled"`` (a ``NullLogger``: no files, no network).
            project, entity, group, name, tags: W&B run metadata (``entity``: team or user, None for the
                default; ``group`` e.g. the experiment or sweep name).
            run_dir: the run folder; W&B writes ``run_dir/wandb/{offline-run,run}-<time>-<id>/``.
            run_id: the id stored in the checkpoint being resumed; the run continues with ``resume="allow"``.
        """
        if mode not in MODES:
            raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}")
        if not isinstance(cfg, dict):
            raise TypeError(f"W&B config is a {type(cfg).__name__}; pass a plain dict "
                            "(OmegaConf.to_container(cfg, resolve=True))")
        if mode == "disabled" or _this_rank() != 0:
            return NullLogger()
        try:
            import wandb
        except ImportError as err:
            raise ImportError(f"W&B logging is on (mode {mode}) but wandb is not installed: `pip install wandb`, "
                              "or switch it off with logger=none (logger.mode=disabled)") from err
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, entity=entity, config=cfg, mode=mode, group=group, name=name,
                         dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
                         tags=list(tags) if tags else None)
        return cls(run)

    @property
    def run_id(self) -> str:  # type: ignore[override]
        """The W&B run id: store it in checkpoints so a resumed run continues the same W&B run."""
        return self._run.id

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"W&B run {self._run.id} is already finished; nothing more can be logged")

    def log(self, values: dict[str, Any], step: int) -> None:
        """Log scalars (floats, 0-d tensors) under their keys, e.g. ``{"train/loss": 0.12}``, at ``step``."""
        self._check_open()
        self._run.log({key: _scalar(value) for key, value in values.items()}, step=int(step))

    def log_images(self, name: str, images: Sequence[np.ndarray], step: int,
                   captions: Sequence[str] | None = None) -> None:
        """Log a list of images under ``name``; each ``(H, W)`` / ``(H, W, C)``, uint8 or float in [0, 1]."""
        import wandb

        self._check_open()
        if captions is not None and len(captions) != len(images):
            raise ValueError(f"{name}: {len(images)} images but {len(captions)} captions")
        media = [wandb.Image(image_to_uint8(image, f"{name}[{i}]"), caption=None if captions is None else captions[i])
                 for i, image in enumerate(images)]
        self._run.log({name: media}, step=int(step))

    def log_table(self, name: str, rows: Sequence[dict[str, Any]]) -> None:
        """Log rows of dicts as one W&B table; columns in order of first appearance, missing cells None."""
        import wandb

        self._check_open()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = wandb.Table(columns=columns, data=[[_scalar(row.get(c)) for c in columns] for row in rows])
        self._run.log({name: table})

    def summary(self, values: dict[str, Any]) -> None:
        """Set run summary values (shown in the W&B runs table), e.g. ``{"best/val_psnr": 27.3}``."""
        self._check_open()
        for key, value in values.items():
            self._run.summary[key] = _scalar(value)

    def finish(self, exit_code: int = 0) -> None:
        """End the run (``exit_code != 0`` marks it failed); later calls do nothing."""
        if not self._finished:
            self._finished = True
            self._run.finish(exit_code=exit_code)
