"""Append-only JSON-lines metrics file: the run's own record, independent of W&B.

One line per ``log`` call, e.g. ``{"step": 120, "epoch": 3, "split": "val", "time": 1716..., "psnr": 27.1}``.
Each line is flushed and fsynced, so after a crash at most the line being written is lost; ``read_metrics``
skips such a truncated last line. Only one process may write a file: under DDP the caller creates a
``MetricsLog`` on rank 0 only.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from x2ct.atomic_io import write_text_atomic

RESERVED_KEYS = ("step", "epoch", "split", "time")


def _to_float(name: str, value: Any) -> float:
    try:
        return float(value.item() if hasattr(value, "item") else value)  # tensors / NumPy scalars
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"metric {name!r} = {value!r} cannot be converted to a float") from err


class MetricsLog:
    """Appends metric records to ``path`` (created with its folder if needed).

    Args:
        path: the ``.jsonl`` file; an existing file is appended to (resume). A truncated last line left by a
            crash is cut off first, so new records start on a fresh line.
        truncate_after_step: on resume, drop existing records with ``step`` greater than this (those logged
            after the checkpoint being resumed from), so steps are not recorded twice.
        drop_splits: on resume, also drop every existing record of these splits (logged after the last
            checkpoint whatever their step, e.g. the test scores, which the resumed run logs again).
        fresh: start the file empty (a fresh run in a folder where an attempt was killed before its first
            checkpoint: its records would otherwise be followed by the same steps again).
    """

    def __init__(self, path: str | os.PathLike, truncate_after_step: int | None = None,
                 drop_splits: Sequence[str] = (), fresh: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            write_text_atomic(self.path, "")
        elif self.path.exists():
            self._repair(truncate_after_step, tuple(drop_splits))
        self._file = open(self.path, "a", encoding="utf-8")  # kept open for the whole run

    def _repair(self, truncate_after_step: int | None, drop_splits: tuple[str, ...]) -> None:
        text = self.path.read_text(encoding="utf-8")
        complete = text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]
        if truncate_after_step is not None or drop_splits:
            last = math.inf if truncate_after_step is None else truncate_after_step
            kept = [rec for rec in read_metrics(self.path) if rec["step"] <= last and rec["split"] not in drop_splits]
            complete = "".join(json.dumps(rec) + "\n" for rec in kept)
        if complete != text:
            write_text_atomic(self.path, complete)

    def log(self, *, step: int, epoch: int, split: str, **values: Any) -> dict[str, Any]:
        """Append one record; ``values`` (floats, 0-d tensors, NumPy scalars) are stored as floats.

        Returns the record written. NaN/Inf are written as Python's ``json`` does (``NaN``, ``Infinity``), which
        ``json.loads`` and ``read_metrics`` read back.
        """
        clash = [k for k in values if k in RESERVED_KEYS]
        if clash:
            raise ValueError(f"metric names {clash} clash with the record's own keys {RESERVED_KEYS}")
        record = {"step": int(step), "epoch": int(epoch), "split": str(split), "time": time.time()}
        record.update({name: _to_float(name, value) for name, value in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics file in order; a truncated final line (crash mid-write) is skipped.

    A malformed line anywhere else raises ``ValueError`` naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist")
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the line being written when the process died
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON ({err})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is a {type(record).__name__}, expected a JSON object")
        records.append(record)
    return records
