"""Checkpoints: everything needed to resume a run exactly, written atomically, read with ``weights_only=True``.

A checkpoint is a dict (``torch.save``) with the keys:

- ``model``: the unwrapped model's ``state_dict`` (no ``module.`` / ``_orig_mod.`` prefixes).
- ``optimizer``, ``scheduler``: their ``state_dict``; ``scaler``, ``ema``: ``state_dict`` or ``None``.
- ``epoch``, ``step`` (optimizer steps so far), ``best_metric``.
- ``rng_states``: a list of ``capture_rng_state()`` dicts indexed by rank (one entry unless the caller gathered
  all ranks with ``gather_rng_states``).
- ``config``: the resolved config as a plain dict; ``wandb_run_id``; ``extra`` (caller's plain dict or None).
- ``x2ct_version``, ``torch_version``, ``format_version``.

Only rank 0 saves (the caller decides); every rank loads and restores. File names inside a run folder:
``checkpoints/last.pt``, ``checkpoints/best.pt`` and ``checkpoints/epoch_0007.pt`` (see ``checkpoint_path``).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import x2ct
from x2ct.atomic_io import atomic_path
from x2ct.engine.distributed import unwrap_model
from x2ct.engine.ema import ModelEMA
from x2ct.engine.seeding import capture_rng_state, restore_rng_state

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_KINDS = ("last", "best", "epoch")
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "best_metric", "rng_states",
                 "config", "wandb_run_id", "extra", "x2ct_version", "format_version")
# Exact types: subclasses (NumPy scalars, torch's TorchVersion str) are refused by weights_only loading.
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or lacks what resuming needs; the message names the file."""


def checkpoint_path(run_dir: str | os.PathLike, kind: str, epoch: int | None = None) -> Path:
    """``run_dir/checkpoints/{last,best}.pt`` or, for ``kind="epoch"``, ``run_dir/checkpoints/epoch_XXXX.pt``."""
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"checkpoint kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    if (kind == "epoch") != (epoch is not None):
        raise ValueError(f"an epoch number is needed for kind='epoch' and only then (kind={kind!r}, epoch={epoch})")
    name = f"epoch_{epoch:04d}.pt" if kind == "epoch" else f"{kind}.pt"
    return Path(run_dir) / CHECKPOINT_DIR / name


def find_resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run folder's ``checkpoints/last.pt`` if it exists, else ``None`` (a fresh start)."""
    path = checkpoint_path(run_dir, "last")
    return path if path.is_file() else None


def _check_finite(state: Mapping[str, Any], what: str, path: Path) -> None:
    floats = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if not floats:
        return
    # One device sync for the whole state, not one per tensor.
    flags = [torch.isfinite(v).all() for v in floats.values()]
    finite = torch.stack([f.to(flags[0].device) for f in flags]).cpu()
    if bool(finite.all()):
        return
    name = list(floats)[int((~finite).nonzero()[0])]
    bad = int((~torch.isfinite(floats[name])).sum())
    raise ValueError(f"{what} {name!r} has {bad} non-finite value(s) (NaN/Inf); refusing to save checkpoint "
                     f"{path} (training has diverged; the previous checkpoint is intact)")


def _check_plain(obj: Any, where: str) -> None:
    """Raise if ``obj`` holds anything ``torch.load(weights_only=True)`` would refuse (e.g. an OmegaConf node)."""
    if type(obj) in _PLAIN_SCALARS or isinstance(obj, torch.Tensor):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}; use str or int keys")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only plain dicts, lists, str, numbers, "
                    "bools, None and tensors (for a Hydra config pass OmegaConf.to_container(cfg, resolve=True))")


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: Any, ema: ModelEMA | None, epoch: int, step: int,
                    best_metric: float | None, config: dict, wandb_run_id: str | None = None,
                    extra: dict | None = None, rng_states: list[dict[str, Any]] | None = None) -> Path:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact); return ``path``.

    Args:
        scheduler: an LR scheduler (anything with ``state_dict``) or None.
        scaler: a ``torch.amp.GradScaler`` or None (bf16 needs none).
        rng_states: from ``gather_rng_states()`` for exact per-rank resume under DDP; default: this process's
            ``capture_rng_state()`` only.

    Raises ``ValueError`` naming the first model or EMA tensor holding NaN/Inf, and ``TypeError`` naming the
    key of ``config`` / ``extra`` that is not a plain container.
    """
    path = Path(path)
    model_state = unwrap_model(model).state_dict()
    _check_finite(model_state, "model tensor", path)
    ema_state = ema.state_dict() if ema is not None else None
    if ema_state is not None:
        _check_finite(ema_state["module"], "EMA tensor", path)
    if not isinstance(config, dict):
        raise TypeError(f"config is a {type(config).__name__}, expected a plain dict "
                        "(OmegaConf.to_container(cfg, resolve=True))")
    _check_plain(config, "config")
    _check_plain(extra, "extra")
    payload = {
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema_state,
        "epoch": int(epoch),
        "step": int(step),
        "best_metric": None if best_metric is None else float(best_metric),
        "rng_states": rng_states if rng_states is not None else [capture_rng_state()],
        "config": config,
        "wandb_run_id": None if wandb_run_id is None else str(wandb_run_id),
        "extra": extra,
        "x2ct_version": x2ct.__version__,
        "torch_version": str(torch.__version__),  # TorchVersion is a str subclass weights_only refuses
        "format_version": FORMAT_VERSION,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (naming the file) for a truncated,
    corrupt or foreign file, or one lacking the keys in ``REQUIRED_KEYS``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... depending on the damage
        raise CheckpointError(f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated, "
                              f"corrupt or holds objects weights_only loading refuses: {err}") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict from "
                              "save_checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; was it written by x2ct's save_checkpoint?")
    return ckpt


def restore_ema(ckpt: dict[str, Any], ema: ModelEMA, model: nn.Module) -> None:
    """Load the EMA's average from ``ckpt``; without one saved (a run resumed with EMA switched on), warn and restart
    the average from ``model``'s weights. Under DDP call it after the EMA is built, i.e. after DDP's broadcast."""
    if ckpt["ema"] is None:
        warnings.warn("checkpoint has no EMA state; the EMA restarts from the restored model", stacklevel=3)
        ema.module.load_state_dict(unwrap_model(model).state_dict())
    else:
        ema.load_state_dict(ckpt["ema"])


def restore_training_state(ckpt: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                           scheduler: Any, scaler: Any, ema: ModelEMA | None, rank: int = 0) -> None:
    """Load model, optimizer, scheduler, scaler, EMA and this rank's RNG state from ``load_checkpoint``'s dict.

    Build the optimizer and scheduler exactly as for a fresh run first, then call this. Mismatches between
    what is passed and what was saved:

    - ``scaler`` given but none saved (e.g. a bf16 run resumed as fp16): warning, the scaler starts fresh.
    - ``ema`` given but none saved: warning, the average restarts from the restored model weights.
    - RNG saved for fewer ranks than ``rank + 1``: warning, this rank keeps its current (seeded) RNG.

    ``epoch``, ``step``, ``best_metric`` and ``wandb_run_id`` are read from ``ckpt`` by the caller.
    """
    target = unwrap_model(model)
    target.load_state_dict(ckpt["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        if ckpt["scheduler"] is None:
            raise CheckpointError("checkpoint has no scheduler state but a scheduler was passed")
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None:
        if ckpt["scaler"] is None:
            warnings.warn("checkpoint has no GradScaler state; the scaler starts fresh", stacklevel=2)
        else:
            scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:
        restore_ema(ckpt, ema, target)
    states = ckpt["rng_states"]
    if rank < len(states):
        restore_rng_state(states[rank])
    else:
        warnings.warn(f"checkpoint holds RNG states for {len(states)} rank(s); rank {rank} keeps its current RNG "
                      "(save with rng_states=gather_rng_states() for exact multi-rank resume)", stacklevel=2)
