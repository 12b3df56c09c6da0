"""Local run folders -> ``RunRow``: what a run was (model, overrides, loss weights) and how it did.

A run folder (``outputs/runs/<name>/`` or ``outputs/multiruns/<sweep>/<job>/``) is one that holds
``metrics.jsonl`` or ``config_resolved.yaml``; both are needed to read it. Everything else is optional:
``.hydra/overrides.yaml`` (the command-line overrides), ``run_info.json`` (parameters, wall time, status; written
by newer trainers), ``test_metrics.json`` (the best checkpoint on the test split). A missing optional file gives
``None`` ("-" in tables); a corrupt one gives a warning and the same fallback.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.run_info import RUN_INFO, read_run_info

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config_resolved.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
TEST_METRICS_FILE = "test_metrics.json"
EVALUATION_DIR = "evaluation"  # evaluate.py's default output: <run>/evaluation/<name>/summary.json
EVALUATION_SUMMARY = "summary.json"
# the evaluate.py means read from each summary, and their column titles; the scanned-voxel figures exist for data
# sets that store scanned masks (x2ct.data.scanned), and lead where not every voxel was scanned (a real CT)
EVALUATION_METRICS = {"psnr": "PSNR", "ssim": "SSIM", "scanned_psnr": "scanned PSNR", "scanned_ssim": "scanned SSIM"}
SWEEP_RECORD_FILE = "multirun.yaml"  # Hydra writes it into the sweep folder, the parent of the job folders
# Overrides that say where a run lives, not what it is: left out of the comparison.
NOISE_OVERRIDES = ("run_name", "resume", "data.root", "paths.*", "hydra.*", "logger.group")
# Folders inside a run or output tree that never hold run folders: not searched.
SKIP_DIRS = ("checkpoints", "wandb")


class RunReadError(ValueError):
    """A run folder whose metrics or config cannot be read; the message names the file."""


@dataclass
class RunRow:
    """One run, as the comparison shows it. Epochs are 1-based (the trainer's epoch 0 is epoch 1 here)."""

    run: str  # folder name, or "<sweep>/<job>" for a sweep job
    source: str  # run folder, or "wandb:<entity>/<project>/<run id>"
    sweep: str = ""  # sweep (multirun) name; "" for a single run
    sweep_source: str = ""  # the sweep folder (or W&B group): which rows belong together
    model: str = "-"  # class name of model._target_
    overrides: list[str] = field(default_factory=list)
    loss_weights: dict[str, float] = field(default_factory=dict)
    parameters: int | None = None
    best_val_psnr: float | None = None
    val_ssim_at_best: float | None = None  # SSIM of the same validation record as the best PSNR
    best_epoch: int | None = None
    mean_volume_psnr: float | None = None  # the mean-training-volume reference on the validation split
    test_psnr: float | None = None
    test_ssim: float | None = None
    epochs: int | None = None  # epochs completed
    max_epochs: int | None = None
    wall_time_s: float | None = None
    status: str = "unknown"
    val_curve: list[dict[str, float | None]] = field(default_factory=list)  # [{"epoch", "psnr", "ssim"}]
    # evaluate.py results in the run folder: evaluation/<name>/summary.json -> {"psnr", "ssim"} (means over patients)
    evaluations: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # run_info.json's provenance (x2ct.provenance): the commit that trained the run, the machine, torch's threads
    # and whether other work shared the machine (None where run_info.json does not record it)
    code: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    threads: int | None = None
    shared: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_run_dir(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() or (path / CONFIG_FILE).is_file()


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Run folders at or below ``root`` in sorted order (a run folder's own subfolders are not searched).

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` naming ``root`` if it is missing or a file.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder (give a run folder or a folder of runs)")
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        if is_run_dir(Path(dirpath)):
            found.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
    return sorted(found)


def read_runs(run_dirs: Iterable[Path]) -> list[RunRow]:
    """Read each run folder; an unreadable one is skipped with a ``UserWarning`` naming the file."""
    rows = []
    for run_dir in run_dirs:
        try:
            rows.append(read_run(run_dir))
        except RunReadError as err:
            warnings.warn(f"skipping run {run_dir}: {err}", stacklevel=2)
    return rows


def read_run(run_dir: str | os.PathLike) -> RunRow:
    """Read one run folder into a ``RunRow``; ``RunReadError`` if its metrics or config are missing or corrupt."""
    run_dir = Path(run_dir)
    records = _read_records(run_dir / METRICS_FILE)
    config = _read_config(run_dir / CONFIG_FILE)
    info = _read_run_info(run_dir)
    sweep_dir = run_dir.parent if (run_dir.parent / SWEEP_RECORD_FILE).is_file() else None

    row = RunRow(run=f"{sweep_dir.name}/{run_dir.name}" if sweep_dir else run_dir.name, source=str(run_dir),
                 sweep=sweep_dir.name if sweep_dir else "", sweep_source=str(sweep_dir) if sweep_dir else "")
    row.model = model_name(config_value(config, "model", "_target_") or info.get("model"))
    row.overrides = read_overrides(run_dir / OVERRIDES_FILE)
    row.loss_weights = loss_weights_of(config_value(config, "loss", "weights"))
    row.max_epochs = int_or_none(config_value(config, "trainer", "max_epochs"))
    row.parameters = int_or_none(info.get("parameters"))

    row.val_curve = validation_curve([r for r in records if r.get("split") == "val"])
    set_best_validation(row)
    references = [r for r in records if r.get("split") == "val_mean_volume"]
    row.mean_volume_psnr = finite_or_none(references[-1].get("psnr")) if references else None
    test = _read_optional_json(run_dir / TEST_METRICS_FILE) or next(
        (r for r in reversed(records) if r.get("split") == "test"), {})
    row.test_psnr, row.test_ssim = finite_or_none(test.get("psnr")), finite_or_none(test.get("ssim"))
    row.evaluations = read_evaluations(run_dir)
    epochs = [int(r["epoch"]) for r in records
              if r.get("split") in ("train", "val") and finite_or_none(r.get("epoch")) is not None]
    row.epochs = max(epochs) + 1 if epochs else 0

    # a running session has not added its time to run_info.json yet: the metrics times say more
    if info.get("status") != "running":
        row.wall_time_s = finite_or_none(info.get("wall_time_s"))
    times = [float(r["time"]) for r in records if finite_or_none(r.get("time")) is not None]
    if row.wall_time_s is None and len(times) >= 2:
        row.wall_time_s = max(times) - min(times)
    row.code, row.machine, row.threads, row.shared = (info.get(key) for key in ("code", "machine", "threads",
                                                                               "shared"))
    if isinstance(info.get("status"), str):
        row.status = info["status"]
    elif row.max_epochs is not None:
        row.status = "finished" if row.epochs >= row.max_epochs else "incomplete"
    return row


def validation_curve(records: list[dict[str, Any]], psnr_key: str = "psnr", ssim_key: str = "ssim",
                     epoch_key: str = "epoch") -> list[dict[str, float | None]]:
    """``[{"epoch", "psnr", "ssim"}]`` in epoch order from the records that have a finite PSNR and an epoch.

    Records count epochs from 0; the curve counts them from 1, as the trainer's console output does.
    """
    points = [r for r in records if finite_or_none(r.get(psnr_key)) is not None
              and finite_or_none(r.get(epoch_key)) is not None]
    return [{"epoch": int(r[epoch_key]) + 1, "psnr": float(r[psnr_key]), "ssim": finite_or_none(r.get(ssim_key))}
            for r in sorted(points, key=lambda r: r[epoch_key])]


def read_evaluations(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """``evaluate.py`` summaries of the run: ``evaluation/<name>/summary.json`` -> {name: {metric: mean}} for the
    ``EVALUATION_METRICS`` (means over patients; None where absent); a corrupt summary gives a warning and is left
    out."""
    out = {}
    for path in sorted(run_dir.glob(f"{EVALUATION_DIR}/*/{EVALUATION_SUMMARY}")):
        metrics = _read_optional_json(path).get("metrics")
        if not isinstance(metrics, dict):
            continue
        out[path.parent.name] = {name: finite_or_none((metrics.get(name) or {}).get("mean"))
                                 if isinstance(metrics.get(name), dict) else None for name in EVALUATION_METRICS}
    return out


def set_best_validation(row: RunRow) -> None:
    """Best validation PSNR of ``row.val_curve``, with the SSIM and epoch of that same record (first on ties)."""
    if row.val_curve:
        best = max(row.val_curve, key=lambda point: point["psnr"])
        row.best_val_psnr, row.val_ssim_at_best, row.best_epoch = best["psnr"], best["ssim"], best["epoch"]


def read_overrides(path: Path) -> list[str]:
    """The overrides in Hydra's ``.hydra/overrides.yaml`` less ``NOISE_OVERRIDES``; ``[]`` if there is no file."""
    if not path.is_file():
        return []
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        warnings.warn(f"{path}: cannot read the overrides ({err}); showing none", stacklevel=2)
        return []
    if not isinstance(overrides, list):
        warnings.warn(f"{path}: expected a list of overrides, got {type(overrides).__name__}; showing none",
                      stacklevel=2)
        return []
    return [str(o) for o in overrides if not is_noise_override(str(o))]


def is_noise_override(override: str) -> bool:
    """True for overrides such as ``data.root=...`` or ``+paths.output_dir=...`` (see ``NOISE_OVERRIDES``)."""
    key = override.split("=", 1)[0].lstrip("~+")
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in NOISE_OVERRIDES)


def _read_records(path: Path) -> list[dict[str, Any]]:
    try:
        return read_metrics(path)
    except (OSError, ValueError) as err:  # read_metrics names the file and line
        raise RunReadError(str(err)) from err


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunReadError(f"{path} does not exist")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise RunReadError(f"{path} is not readable YAML ({_one_line(err)})") from err
    if not isinstance(config, dict):
        raise RunReadError(f"{path}: expected a mapping of config groups, got {type(config).__name__}")
    return config


def _read_run_info(run_dir: Path) -> dict[str, Any]:
    try:
        info = read_run_info(run_dir)
    except ValueError as err:  # names the file
        warnings.warn(f"{err}; ignoring it", stacklevel=3)
        return {}
    if not isinstance(info, dict):
        warnings.warn(f"{run_dir / RUN_INFO}: expected a JSON object, got {type(info).__name__}; ignoring it",
                      stacklevel=3)
        return {}
    return info


def _read_optional_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        warnings.warn(f"{path}: cannot read it ({err}); ignoring it", stacklevel=3)
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"{path}: expected a JSON object, got {type(data).__name__}; ignoring it", stacklevel=3)
        return {}
    return data


def config_value(config: dict[str, Any], *keys: str) -> Any:
    """``config[k1][k2]...``, or ``None`` where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def model_name(target: Any) -> str:
    """``x2ct.models.baseline_unet.BaselineUNet`` -> ``BaselineUNet``; "-" when unknown."""
    return str(target).rsplit(".", 1)[-1] if target else "-"


def loss_weights_of(weights: Any) -> dict[str, float]:
    if not isinstance(weights, dict):
        return {}
    # a weight of 0 turns its term off (the loss does not build it): not part of what the run trained on
    return {str(k): float(v) for k, v in weights.items() if isinstance(v, (int, float)) and v != 0}


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` if it is missing, not a number, NaN or infinite (JSON cannot hold those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
