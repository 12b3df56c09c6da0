"""Run a benchmark's child command in a process group of its own, so that a time limit ends all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def run_in_own_group(cmd: list[str], timeout_s: float, cwd: Path, env: dict | None = None,
                     preexec_fn: Callable[[], None] | None = None) -> tuple[int | None, str, float]:
    """Run ``cmd`` in a new session; at ``timeout_s`` kill the whole group (torchrun's workers, inductor's compile
    workers), and after it ends kill any strays, so a hang cannot eat the budget. ``preexec_fn`` runs in the child
    before ``cmd`` (e.g. a memory cap). Returns (exit status, or None on timeout; stdout + stderr; seconds)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, preexec_fn=preexec_fn)
        try:
            returncode = proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            returncode = None
        try:  # the group is ours alone (a new session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.seek(0)
        output = log.read()
    return returncode, output, time.perf_counter() - start
