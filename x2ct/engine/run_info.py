"""``run_info.json``: what a run is and how it went, in one small file that run comparison reads.

``{"model", "parameters", "device", "precision", "world_size", "mean_volume_patients", "code", "machine",
"threads", "shared", "started", "finished", "wall_time_s", "status", "sessions"}``. ``code`` to ``shared``: the
commit that ran and where (`x2ct.provenance.record`; a resumed run records its last session's);
``mean_volume_patients``: how many training CTs the mean-volume reference averages. ``started`` / ``finished`` are
Unix times; ``wall_time_s`` sums the sessions of a run (a resumed run adds one session per restart, the time between
them not counted); ``status`` is ``running``, ``finished`` or ``failed``. Written atomically by rank 0 at the start
and the end of every session.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from x2ct.atomic_io import write_json_atomic

RUN_INFO = "run_info.json"


class RunInfo:
    """Records one training session of a run in ``run_dir/run_info.json`` (continuing a resumed run's record)."""

    def __init__(self, run_dir: str | os.PathLike, **facts: Any) -> None:
        self.path = Path(run_dir) / RUN_INFO
        previous = _read(self.path)
        self.session_start = time.time()
        self.previous_wall = float(previous.get("wall_time_s") or 0.0)
        self.record = {**previous, **facts, "started": previous.get("started", self.session_start),
                       "finished": None, "status": "running", "sessions": int(previous.get("sessions", 0)) + 1,
                       "wall_time_s": self.previous_wall}
        write_json_atomic(self.path, self.record)

    def close(self, status: str) -> dict:
        """Mark the session ``finished`` or ``failed``; returns the record written."""
        now = time.time()
        self.record.update(status=status, finished=now, wall_time_s=self.previous_wall + now - self.session_start)
        write_json_atomic(self.path, self.record)
        return self.record


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """The run's record, or ``{}`` when it has none (runs made before run_info.json existed)."""
    return _read(Path(run_dir) / RUN_INFO)


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as err:
        raise ValueError(f"{path}: unreadable run record ({err})") from err
