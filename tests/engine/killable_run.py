"""A tiny training run that SIGKILLs itself at a chosen point: the subprocess of ``test_kill_anywhere``.

``python -m tests.engine.killable_run RUN_DIR DATA_ROOT OUT_DIR [OVERRIDES...]`` trains ``tiny_cfg(DATA_ROOT,
OUT_DIR, *OVERRIDES)`` into RUN_DIR. With ``X2CT_KILL_AT=<point>:<n>`` the process kills itself (no cleanup, no
``finally``) the n-th time it reaches ``<point>``:

- ``step``: the start of an optimizer step (mid-epoch unless it is an epoch's first);
- ``save``: inside ``torch.save`` of ``last.pt``, half its bytes written to the temporary file;
- ``before_copy:<name>`` / ``during_copy:<name>``: the byte copy of ``last.pt`` to ``<name>`` (``best.pt``,
  ``epoch_0002.pt``), before its first byte / with half of them written;
- ``test_json``: after the test scores are logged, before ``test_metrics.json`` is written.

Under torchrun, ``X2CT_KILL_RANK=<r>`` limits the kill to that rank, and only the first attempt dies (a restart,
``TORCHELASTIC_RESTART_COUNT`` > 0, runs to the end).

The hooks are monkeypatched in here, so the library carries no test hook.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import torch

KILL_ENV = "X2CT_KILL_AT"
KILL_RANK_ENV = "X2CT_KILL_RANK"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _nth(n: int) -> Callable[[], bool]:
    """A counter that answers True on its n-th call."""
    calls = [0]

    def hit() -> bool:
        calls[0] += 1
        return calls[0] == n

    return hit


def install(spec: str) -> None:
    """Patch the library so that this process dies at ``spec`` (see the module docstring)."""
    from x2ct.atomic_io import atomic_path
    from x2ct.engine import checkpoint, trainer
    from x2ct.engine.step import TrainStep

    point, *name, count = spec.split(":")
    hit = _nth(int(count))
    if point == "step":
        step = TrainStep.__call__

        def killing_step(self, *args, **kwargs):
            if hit():
                _die()
            return step(self, *args, **kwargs)

        TrainStep.__call__ = killing_step
    elif point == "save":
        save = torch.save

        def killing_save(obj, f, *args, **kwargs):
            if hit():
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                half = buffer.getvalue()[: buffer.tell() // 2]
                if hasattr(f, "write"):  # checkpoints are saved through a file object
                    f.write(half)
                    f.flush()
                else:
                    Path(f).write_bytes(half)
                _die()
            return save(obj, f, *args, **kwargs)

        torch.save = killing_save
    elif point in ("before_copy", "during_copy"):
        copy = checkpoint.copy_atomic

        def killing_copy(source, path):
            if Path(path).name == name[0] and hit():
                if point == "during_copy":
                    with atomic_path(path) as tmp:
                        data = Path(source).read_bytes()
                        tmp.write_bytes(data[: len(data) // 2])
                        _die()
                _die()
            return copy(source, path)

        checkpoint.copy_atomic = killing_copy
    elif point == "test_json":
        write = trainer.write_json_atomic

        def killing_write(path, obj):
            if Path(path).name == "test_metrics.json" and hit():
                _die()
            return write(path, obj)

        trainer.write_json_atomic = killing_write
    else:
        raise ValueError(f"{KILL_ENV}={spec!r}: unknown point {point!r}")


def main(argv: list[str]) -> None:
    from tests.engine.test_train import tiny_cfg
    from x2ct.engine.trainer import train

    run_dir, data_root, out_dir, *overrides = argv
    rank_matches = os.environ.get(KILL_RANK_ENV) in (None, os.environ.get("RANK"))
    first_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0
    if os.environ.get(KILL_ENV) and rank_matches and first_attempt:
        install(os.environ[KILL_ENV])
    train(tiny_cfg(data_root, out_dir, *overrides), run_dir=run_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
