"""A trained model back from its checkpoint: the network rebuilt from the config saved inside, and its weights.

The reading side of the checkpoint format (``x2ct.engine.checkpoint``), for the layers above the engine:
``evaluate.py`` (``x2ct.evaluation``) and ``predict.py`` (``x2ct.inference``). The checkpoint is read with
``torch.load(weights_only=True)``; the model is whatever ``config["model"]["_target_"]`` names, built with the
saved (data-derived) sizes, so no other file is needed (former lift names are renamed). EMA weights
are used when the run kept them (training validated and chose ``best`` with them). ``finite_output`` refuses what
a damaged checkpoint answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from x2ct.data.input_spec import InputSpec, InputSpecError
from x2ct.engine.checkpoint import CheckpointError, load_checkpoint
from x2ct.engine.config_schema import with_current_keys
from x2ct.models import ReconstructionModel, check_model
from x2ct.models.view_blocks.lift_names import with_current_lift_names

WEIGHTS = ("auto", "ema", "model")


@dataclass
class TrainedModel:
    """The network in eval mode, on its device, with what is needed to feed it and to place its output."""

    model: ReconstructionModel
    config: dict[str, Any]
    input_spec: InputSpec | None  # views, normalisation, CT grid; None for checkpoints older than it
    path: Path
    weights: str  # "ema" or "model": which weights were loaded
    epoch: int

    @property
    def run_dir(self) -> Path:
        """The training run's folder (``checkpoint_run_dir``)."""
        return checkpoint_run_dir(self.path)

    @property
    def view_names(self) -> list[str]:
        if self.input_spec is not None:
            return list(self.input_spec.views)
        return [str(v) for v in self.config["data"]["views"]]


def checkpoint_run_dir(checkpoint: str | os.PathLike) -> Path:
    """The training run's folder (``<run>/checkpoints/x.pt`` -> ``<run>``), else the checkpoint's folder."""
    parent = Path(checkpoint).parent
    return parent.parent if parent.name == "checkpoints" else parent


def finite_output(volume: torch.Tensor, checkpoint: str | os.PathLike, what: str) -> torch.Tensor:
    """``volume`` (a model's raw output) unchanged if every value is finite, else a ValueError naming
    ``checkpoint`` and ``what`` was predicted. Checked before clamping to [0, 1]: clamping keeps NaN (and turns
    inf into a plausible 1), and a damaged checkpoint can load and still answer NaN."""
    bad = int((~torch.isfinite(volume)).sum())
    if bad:
        raise ValueError(f"checkpoint {checkpoint}: the model's output for {what} holds {bad} NaN or infinite "
                         f"value(s) of {volume.numel()}; its weights are damaged or the input is far outside "
                         "what it was trained on")
    return volume


def load_trained_model(path: str | os.PathLike, device: torch.device | str = "cpu",
                       weights: str = "auto") -> TrainedModel:
    """Rebuild and load the model of checkpoint ``path``.

    Args:
        weights: ``auto`` (EMA if the checkpoint has it, else the raw weights), ``ema`` or ``model``.

    Raises ``FileNotFoundError`` / ``CheckpointError`` naming the file: not an x2ct checkpoint, a config that
    names no known model, or weights that do not fit the model the config describes (another model).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    path = Path(path)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    state = load_checkpoint(path, map_location="cpu")
    model_cfg = (state.get("config") or {}).get("model")
    if not isinstance(model_cfg, dict) or "_target_" not in model_cfg:
        raise CheckpointError(f"checkpoint {path}: its config has no model._target_; cannot rebuild the model")
    try:
        model = instantiate(with_current_lift_names(model_cfg))  # a config with former lift names too
    except InstantiationException as err:
        raise CheckpointError(f"checkpoint {path}: cannot build model {model_cfg['_target_']!r} from its saved "
                              f"config ({err}); was it written by another version of x2ct?") from err
    try:
        check_model(model, f"checkpoint {path}: model._target_={model_cfg['_target_']}")
    except TypeError as err:
        raise CheckpointError(str(err)) from err
    ema = state.get("ema")
    use_ema = ema is not None if weights == "auto" else weights == "ema"
    if use_ema and ema is None:
        raise CheckpointError(f"checkpoint {path} has no EMA weights (trainer.ema_decay was off); use weights=model")
    weights_state = ema["module"] if use_ema else state["model"]
    _load_weights(model, weights_state, path, model_cfg["_target_"])
    model.to(device).eval()
    extra = state.get("extra") or {}
    # a config saved with logger.enabled / adversarial.enabled reads as one saved with their switches
    return TrainedModel(model=model, config=with_current_keys(state["config"]),
                        input_spec=stored_input_spec(extra, path), path=path, weights="ema" if use_ema else "model",
                        epoch=int(state["epoch"]))


def stored_input_spec(extra: dict[str, Any], path: Path) -> InputSpec | None:
    """The checkpoint's input spec (``extra.input_spec``), None for a checkpoint written before it was stored; one
    that lacks a key is a ``CheckpointError`` naming the file."""
    stored = extra.get("input_spec")
    if stored is None:
        return None
    try:
        return InputSpec.from_dict(stored, where=f"checkpoint {path}")
    except InputSpecError as err:
        raise CheckpointError(str(err)) from err


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: Path, target: str) -> None:
    """``load_state_dict`` with an error that says which tensors do not fit, instead of torch's wall of text."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                   if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise CheckpointError(f"checkpoint {path}: its weights do not fit the model {target} built from its "
                              f"config: {'; '.join(parts)}. Is it a checkpoint of another model?")
    model.load_state_dict(weights)
