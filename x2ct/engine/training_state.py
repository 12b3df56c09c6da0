"""The parts of a training run that a checkpoint holds, named once: saving and resuming walk the same list.

After torchtitan's ``CheckpointManager(states=...)``: the run hands one object to the checkpoint writer and the same
object to the reader, so a part added to the run is saved and restored alike or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from x2ct.engine import checkpoint as ckpt
from x2ct.engine.ema import ModelEMA


class Stateful(Protocol):
    """Anything a checkpoint can hold: its state as plain containers and tensors, and back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class TrainingState:
    """The model (under any DDP / compile wrapper), its optimiser, schedule, gradient scaler, EMA average and the
    adversarial extension of one run; the optional ones None when the run has none.

    In the file the adversarial part sits under ``extra["adversarial"]`` (``x2ct.engine.checkpoint``'s format).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Stateful | None
    scaler: torch.amp.GradScaler | None
    ema: ModelEMA | None
    adversarial: Stateful | None = None

    def save(self, path: Path, *, epoch: int, step: int, best_metric: float | None, config: dict,
             wandb_run_id: str | None, extra: dict, rng_states: list[dict[str, Any]],
             copies: list[str]) -> Path:
        """Write every part and the run's progress to ``path`` (``checkpoint.save_checkpoint``)."""
        if self.adversarial is not None:
            extra = extra | {"adversarial": self.adversarial.state_dict()}
        return ckpt.save_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                    scaler=self.scaler, ema=self.ema, epoch=epoch, step=step,
                                    best_metric=best_metric, config=config, wandb_run_id=wandb_run_id, extra=extra,
                                    rng_states=rng_states, copies=copies)

    def load(self, state: dict[str, Any], *, rank: int, path: Path, config: dict) -> None:
        """Restore every part from ``load_checkpoint``'s dict, and this rank's random streams. Call it once the
        run is built (DDP, compile and the EMA too): every rank reads the same file, so the weights agree without
        DDP's broadcast. A part the run has and the file lacks is an error or a warning as
        ``checkpoint.restore_training_state`` says; discriminators the file lacks are an error."""
        ckpt.restore_training_state(state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                    scaler=self.scaler, ema=self.ema, rank=rank, path=path, config=config)
        if self.adversarial is not None:
            saved = (state.get("extra") or {}).get("adversarial")
            if saved is None:
                raise ckpt.CheckpointError(f"checkpoint {path} has no discriminator state, but "
                                           "adversarial=default; resume it with adversarial=none")
            self.adversarial.load_state_dict(saved)
