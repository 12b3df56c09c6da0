"""The parts of a training run that a checkpoint holds, listed once: ``TrainingState.parts``.

After torchtitan's ``CheckpointManager(states=...)``: ``state_dict`` saves every part under its name and
``load_state_dict`` restores every part by the same name, so a part added to the list is saved and restored alike.
Each part also says what a checkpoint without it means (a run resumed with EMA or fp16 switched on, or with
adversarial training added): an error unless it can start afresh.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from x2ct.engine import checkpoint as ckpt
from x2ct.engine.distributed import unwrap_model
from x2ct.engine.ema import ModelEMA


class Stateful(Protocol):
    """Anything a checkpoint can hold: its state as plain containers and tensors, and back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Part:
    """One part of the run under its checkpoint name; ``value`` None where this run has no such part.
    ``if_missing``: what to do when a checkpoint lacks it (given the file's path and the warnings' stacklevel),
    None to refuse the file."""

    name: str
    value: Stateful | None
    if_missing: Callable[[Path | None, int], None] | None = None


# why a file without a part cannot resume a run that has it: what to do instead
_WITHOUT = {"adversarial": "resume it with adversarial=none",
            "scheduler": "resume it with the scheduler it was saved with",
            "optimizer": "it holds weights only; start a new run from them instead"}


class _Weights:
    """The model's weights without the DDP / compile wrappers' prefixes (``module.``, ``_orig_mod.``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = unwrap_model(model)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)


@dataclass
class TrainingState:
    """The model (under any DDP / compile wrapper), its optimiser, schedule, gradient scaler, EMA average and the
    adversarial extension of one run; the optional ones None when the run has none."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Stateful | None
    scaler: torch.amp.GradScaler | None
    ema: ModelEMA | None
    adversarial: Stateful | None = None

    def parts(self) -> tuple[Part, ...]:
        """Every part, in the order it is restored (the EMA after the weights it may restart from)."""
        return (
            Part("model", _Weights(self.model)),
            Part("optimizer", self.optimizer),
            Part("scheduler", self.scheduler),
            Part("scaler", self.scaler, self._fresh_scaler),  # e.g. a bf16 run resumed in fp16
            Part("ema", self.ema, self._restart_ema),  # EMA switched on when resuming
            Part("adversarial", self.adversarial),
        )

    def state_dict(self) -> dict[str, dict[str, Any] | None]:
        """Every part's state by name, None for the parts this run has not."""
        return {part.name: None if part.value is None else part.value.state_dict() for part in self.parts()}

    def load_state_dict(self, state: dict[str, Any], *, path: Path | None = None, config: dict | None = None,
                        stacklevel: int = 2) -> None:
        """Restore every part this run has from a checkpoint's dict. Weights that do not fit the model are refused
        naming ``path`` and the ``model`` keys of ``config`` that differ from the file's; a part the file lacks is
        refused, or started afresh where its ``if_missing`` says how (warnings at ``stacklevel`` from the caller)."""
        ckpt.check_model_fits(state, unwrap_model(self.model), path, config)
        for part in self.parts():
            if part.value is None:
                continue
            saved = ckpt.saved_part(state, part.name)
            if saved is not None:
                part.value.load_state_dict(saved)
            elif part.if_missing is not None:
                part.if_missing(path, stacklevel + 1)
            else:
                raise ckpt.CheckpointError(f"checkpoint {path or '(unnamed)'} has no {part.name} state, but this "
                                           f"run has one: {_WITHOUT.get(part.name, 'resume it with its settings')}")

    def save(self, path: Path, *, epoch: int, step: int, best_metric: float | None, config: dict,
             wandb_run_id: str | None = None, extra: dict | None = None,
             rng_states: list[dict[str, Any]] | None = None, copies: list[str] | tuple[str, ...] = ()) -> Path:
        """Write every part and the run's progress to ``path`` (``checkpoint.save_checkpoint``)."""
        return ckpt.save_checkpoint(path, self.state_dict(), epoch=epoch, step=step, best_metric=best_metric,
                                    config=config, wandb_run_id=wandb_run_id, extra=extra, rng_states=rng_states,
                                    copies=copies)

    def load(self, state: dict[str, Any], *, rank: int = 0, path: Path | None = None,
             config: dict | None = None) -> None:
        """``load_state_dict``, then this rank's random streams. Call it once the run is built (DDP, compile and the
        EMA too): every rank reads the same file, so the weights agree without DDP's broadcast."""
        self.load_state_dict(state, path=path, config=config, stacklevel=3)
        ckpt.restore_rank_rng(state, rank, stacklevel=3)

    def _fresh_scaler(self, path: Path | None, stacklevel: int) -> None:
        warnings.warn(f"checkpoint {path or '(unnamed)'} has no GradScaler state; the scaler starts fresh",
                      stacklevel=stacklevel)

    def _restart_ema(self, path: Path | None, stacklevel: int) -> None:
        warnings.warn(f"checkpoint {path or '(unnamed)'} has no EMA state; the EMA restarts from the restored model",
                      stacklevel=stacklevel)
        self.ema.module.load_state_dict(unwrap_model(self.model).state_dict())
