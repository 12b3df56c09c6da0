"""Where a number came from: the code's commit, the machine, the threads and whether other work shared the
machine, recorded beside every run, benchmark and comparison.

A published figure regenerates only from a results file that says which code made it and on what. Every result
JSON (run_info.json, ``benchmarks/*.py``'s files, ``python -m x2ct.compare``'s comparison.json) carries the keys
of ``record()`` at its top level: ``code``, ``machine``, ``threads``, ``shared``. Whether the machine was shared is
not something a process can see reliably (a sibling job may start a minute later), so the caller states it:
``X2CT_SHARED_MACHINE=1`` (other work ran on the machine meanwhile) or ``=0`` (nothing else ran); unset, the
record says ``"shared": null`` and a ``provenance_note`` asks for it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "X2CT_SHARED_MACHINE"
RECORD_KEYS = ("code", "machine", "threads", "shared")  # what every result JSON carries at its top level
NOTE_KEY = "provenance_note"  # why a record field is null (unknown), where one is
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def code_version(repo: str | os.PathLike = REPO) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout holding x2ct: ``dirty`` when tracked files differ from the
    commit; both None outside a git checkout (an installed wheel)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return name


def cpus_usable() -> int | None:
    """CPUs this process may run on (``taskset`` pins lower it below ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def machine() -> dict[str, Any]:
    """The machine a number was measured on: CPU model, CPU count and the CPUs this process may use, OS, Python
    and torch versions, GPU if any."""
    import torch

    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": cpus_usable(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def shared_machine(environ: Mapping[str, str] = os.environ) -> bool | None:
    """The caller's statement in ``X2CT_SHARED_MACHINE``: True (1, true, yes), False (0, false, no), None unset."""
    value = environ.get(SHARED_ENV, "").strip().lower()
    if not value:
        return None
    if value in _TRUE + _FALSE:
        return value in _TRUE
    raise ValueError(f"{SHARED_ENV}={environ[SHARED_ENV]!r}: expected 1 or 0 (true / false, yes / no): whether "
                     "other work ran on this machine while it measured")


def record(threads: int | None = None, shared: bool | None = None,
           environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The provenance of a result file, to spread into its top level: ``{"code", "machine", "threads", "shared"}``
    plus ``provenance_note`` when ``shared`` is unknown.

    ``threads``: torch's intra-op threads of the measuring process (default ``torch.get_num_threads()`` of this
    one; pass the children's count where subprocesses measure). ``shared``: default ``X2CT_SHARED_MACHINE``."""
    import torch

    shared = shared_machine(environ) if shared is None else shared
    out = {"code": code_version(), "machine": machine(),
           "threads": torch.get_num_threads() if threads is None else int(threads), "shared": shared}
    if shared is None:
        out[NOTE_KEY] = f"shared not stated: set {SHARED_ENV}=1 (other work ran meanwhile) or 0 when measuring"
    return out


def describe(result: Mapping[str, Any]) -> str:
    """One line naming a result file's provenance, for the Markdown beside it."""
    code, host = result.get("code") or {}, result.get("machine") or {}
    commit = f"{code['commit'][:10]}{' (dirty)' if code.get('dirty') else ''}" if code.get("commit") else "unknown"
    shared = {True: "shared with other work", False: "not shared", None: "shared: not stated"}[result.get("shared")]
    threads = result.get("threads")
    return (f"commit {commit}; {host.get('gpu') or host.get('cpu_model') or 'machine unknown'}, "
            f"{host.get('cpu_count', '?')} CPUs ({host.get('cpus_usable', '?')} usable), torch "
            f"{host.get('torch', '?')}, {threads if threads is not None else '?'} thread(s); machine {shared}")
