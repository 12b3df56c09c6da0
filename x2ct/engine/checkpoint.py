"""Checkpoints: everything needed to resume a run exactly, written atomically, read with ``weights_only=True``.

A checkpoint is a dict (``torch.save``) with the keys:

- the run's parts, each its ``state_dict`` under the name ``x2ct.engine.training_state.TrainingState`` gives it
  (``None`` for a part the run has not): ``model`` (unwrapped: no ``module.`` / ``_orig_mod.`` prefixes),
  ``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``adversarial`` (format 2 kept it in ``extra``).
- ``epoch``, ``step`` (optimizer steps so far), ``best_metric``.
- ``rng_states``: a list of ``capture_rng_state()`` dicts indexed by rank (one entry unless the caller gathered
  all ranks with ``gather_rng_states``).
- ``config``: the resolved config as a plain dict; ``wandb_run_id``; ``extra`` (caller's plain dict or None).
- ``x2ct_version``, ``torch_version``, ``format_version``.
- ``copies``: names of the files beside this one that hold the same state (``best.pt``, ``epoch_0007.pt``).
- ``checksum``: sha256 of everything else (``state_checksum``), verified by ``load_checkpoint`` (format 2).

Only rank 0 saves (the caller decides); every rank loads and restores. File names inside a run folder:
``checkpoints/last.pt``, ``checkpoints/best.pt`` and ``checkpoints/epoch_0007.pt`` (see ``checkpoint_path``).

``last.pt`` is the commit point: it is written first and names its copies, which are then written as byte copies
of it. A kill between those writes loses nothing, and a damaged ``last.pt`` is not the end either: resuming
(``x2ct.engine.resume``) restores lost copies and falls back to the newest intact checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import x2ct
from x2ct.atomic_io import atomic_path, copy_atomic
from x2ct.engine.seeding import capture_rng_state, restore_rng_state

FORMAT_VERSION = 3  # 2: ``checksum`` and ``copies``; 3: every part at the top level (adversarial)
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_KINDS = ("last", "best", "epoch")
# what every checkpoint holds: the weights (what inference reads) and the run's progress and record; which other
# parts a run needs is TrainingState's to say
REQUIRED_KEYS = ("model", "epoch", "step", "best_metric", "rng_states", "config", "wandb_run_id", "extra",
                 "x2ct_version", "format_version")
# Exact types: subclasses (NumPy scalars, torch's TorchVersion str) are refused by weights_only loading.
_PLAIN_SCALARS = (str, int, float, bool, type(None))
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")


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


def state_checksum(state: Mapping[str, Any]) -> str:
    """sha256 over a checkpoint's content but its ``checksum``: every tensor's dtype, shape and bytes and every other
    value, each with its key path, dict keys sorted (the same on the saved dict and on its ``torch.load``)."""
    digest = hashlib.sha256()
    _hash_value(digest, "", {k: v for k, v in state.items() if k != "checksum"})
    return digest.hexdigest()


def _hash_value(digest: Any, where: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype, even 0-d
        digest.update(f"{where}:tensor:{value.dtype}:{tuple(value.shape)}\n".encode())
        digest.update(data.numpy())  # the buffer itself: no copy on the CPU
    elif isinstance(value, Mapping):
        digest.update(f"{where}:dict:{len(value)}\n".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):  # optimizer state has int keys
            _hash_value(digest, f"{where}/{key!r}", value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"{where}:seq:{len(value)}\n".encode())
        for i, item in enumerate(value):
            _hash_value(digest, f"{where}[{i}]", item)
    else:  # plain scalars only (_check_plain); repr round-trips floats exactly
        digest.update(f"{where}:{type(value).__name__}:{value!r}\n".encode())


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


def save_checkpoint(path: str | os.PathLike, parts: Mapping[str, Any], *, epoch: int, step: int,
                    best_metric: float | None, config: dict, wandb_run_id: str | None = None,
                    extra: dict | None = None, rng_states: list[dict[str, Any]] | None = None,
                    copies: Sequence[str] = ()) -> Path:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact), then its ``copies``;
    return ``path``.

    Args:
        parts: every part's ``state_dict`` by name (``TrainingState.state_dict()``), None for a part the run has
            not; ``model`` is required.
        rng_states: from ``gather_rng_states()`` for exact per-rank resume under DDP; default: this process's
            ``capture_rng_state()`` only.
        copies: file names beside ``path`` (``best.pt``, ``epoch_0007.pt``) that get the same state. They are
            recorded in ``path`` and then written as byte copies of it (faster than serialising again), so
            ``path`` alone is enough to restore them (``restore_copies``).

    Raises ``ValueError`` naming the first model or EMA tensor holding NaN/Inf, and ``TypeError`` naming the
    key of ``config`` / ``extra`` that is not a plain container.
    """
    path = Path(path)
    if "model" not in parts:
        raise ValueError(f"checkpoint {path}: the parts lack 'model' (got {sorted(parts)})")
    clash = sorted(set(parts) & (set(REQUIRED_KEYS) - {"model"} | {"checksum", "copies", "torch_version"}))
    if clash:
        raise ValueError(f"checkpoint {path}: parts named {clash} would overwrite the record's own keys")
    _check_finite(parts["model"], "model tensor", path)
    if parts.get("ema") is not None:
        _check_finite(parts["ema"]["module"], "EMA tensor", path)
    if not isinstance(config, dict):
        raise TypeError(f"config is a {type(config).__name__}, expected a plain dict "
                        "(OmegaConf.to_container(cfg, resolve=True))")
    _check_plain(config, "config")
    _check_plain(extra, "extra")
    for name, state in parts.items():
        _check_plain(state, name)
    payload = {
        **parts,
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
        "copies": _copy_names(copies, path),
    }
    payload["checksum"] = state_checksum(payload)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # through a file object: a full disk is then an OSError (ENOSPC), not torch's "unexpected pos" RuntimeError
        torch.save(payload, f)
    for name in payload["copies"]:
        copy_atomic(path, path.parent / name)
    return path


def _copy_names(copies: Iterable[str], path: Path) -> list[str]:
    names = [str(name) for name in copies]
    bad = [name for name in names if Path(name).name != name or name == path.name or not name.endswith(".pt")]
    if bad:
        raise ValueError(f"copies of {path} must be other .pt file names in its folder, got {bad}")
    return names


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (naming the file) for a truncated,
    corrupt or foreign file, one lacking the keys in ``REQUIRED_KEYS``, or one whose content does not match its
    checksum (flipped bytes that ``torch.load`` reads without complaint). A format-1 file (no checksum) loads with
    a warning.
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
    _verify(ckpt, path)
    return ckpt


def _verify(ckpt: dict[str, Any], path: Path) -> None:
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this x2ct reads versions up to "
                              f"{FORMAT_VERSION} (was it written by a newer x2ct?)")
    if version < 2:
        warnings.warn(f"checkpoint {path} has format version {version}, which has no checksum: its content is not "
                      "verified", stacklevel=3)
        return
    if "checksum" not in ckpt:
        raise CheckpointError(f"checkpoint {path} (format {version}) lacks its checksum; the file is damaged or was "
                              "not written by x2ct's save_checkpoint")
    if state_checksum(ckpt) != ckpt["checksum"]:
        raise CheckpointError(f"checkpoint {path}: checksum mismatch: the file is damaged (its content differs from "
                              "what was saved); do not use it")


def state_mismatches(expected: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """How ``saved`` weights fail to fit a model whose ``state_dict`` is ``expected``: the non-empty lists of names
    among ``wrong shape``, ``missing`` (from ``saved``) and ``unexpected`` (in ``saved``), in that order."""
    found = {
        "wrong shape": [k for k, v in expected.items() if k in saved and saved[k].shape != v.shape],
        "missing": [k for k in expected if k not in saved],
        "unexpected": [k for k in saved if k not in expected],
    }
    return {label: names for label, names in found.items() if names}


def config_differences(saved: Any, current: Any, where: str) -> list[str]:
    """Keys whose values differ between two nested config dicts, as ``"where.key: saved vs current"``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in sorted(set(saved) | set(current), key=str)
                for line in config_differences(saved.get(key, "<absent>"), current.get(key, "<absent>"),
                                               f"{where}.{key}")]
    return [] if saved == current else [f"{where}: {saved!r} (checkpoint) vs {current!r} (this run)"]


def check_model_fits(ckpt: dict[str, Any], model: nn.Module, path: Path | None, config: dict | None) -> None:
    """Raise ``CheckpointError`` when ``ckpt``'s weights do not fit ``model`` (unwrapped): naming ``path``, the first
    parameter that differs with both shapes, and the ``model`` keys of ``config`` (this run's resolved config) that
    differ from the checkpoint's."""
    expected, saved = model.state_dict(), ckpt["model"]
    problems = state_mismatches(expected, saved)
    if not problems:
        return
    label, names = next(iter(problems.items()))
    first = {"wrong shape": f"{names[0]!r} is {tuple(saved[names[0]].shape)} in the checkpoint but "
                            f"{tuple(expected[names[0]].shape)} in this run's model",
             "missing": f"this run's model has {names[0]!r}, the checkpoint has not",
             "unexpected": f"the checkpoint has {names[0]!r}, this run's model has not"}[label]
    counts = ", ".join(f"{len(v)} {k}" for k, v in problems.items())
    message = f"checkpoint {path or '(unnamed)'} does not fit this run's model: {first} ({counts})"
    if config is not None:
        differing = config_differences((ckpt.get("config") or {}).get("model"), config.get("model"), "model")
        message += ("; the model config differs from the checkpoint's in " + "; ".join(differing) if differing
                    else "; the model config is the same as the checkpoint's")
    raise CheckpointError(message + ". Resume with the checkpoint's model settings, or start a new run.")


def saved_part(ckpt: Mapping[str, Any], name: str) -> Any:
    """A part's saved state, None when the file has none; format 2 and earlier kept ``adversarial`` in ``extra``."""
    if name in ckpt:
        return ckpt[name]
    return (ckpt.get("extra") or {}).get(name) if name == "adversarial" else None


def restore_rank_rng(ckpt: Mapping[str, Any], rank: int, stacklevel: int = 2) -> None:
    """This rank's random streams as saved; a file saved with fewer ranks leaves them as they are, with a warning
    (``stacklevel`` as ``warnings.warn``'s, counted from the caller of this function)."""
    states = ckpt["rng_states"]
    if rank < len(states):
        restore_rng_state(states[rank])
    else:
        warnings.warn(f"checkpoint holds RNG states for {len(states)} rank(s); rank {rank} keeps its current RNG "
                      "(save with rng_states=gather_rng_states() for exact multi-rank resume)", stacklevel=stacklevel)
