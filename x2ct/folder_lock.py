"""One folder, one owner: an exclusive lock on a run, sweep, output or data-set folder for a process's lifetime.

Two processes started together with the same ``run_name`` both find an empty folder; without a lock both train
and leave one folder that mixes them. ``hold_folder`` makes the first one the owner and refuses the second at
start, naming the owner.

How: ``<folder>/.x2ct-lock`` is opened (created if missing) and locked with ``flock(LOCK_EX | LOCK_NB)``. The
kernel grants that lock to one open file at a time and drops it when its process dies, however it dies, so a
SIGKILLed owner never blocks the next run. The file holds the owner (host, pid, start time, command, torchrun
job id) while it is held and is emptied on a clean release; it is never deleted, because a process that opened a
file about to be unlinked would lock a file nobody else sees. So:

- the lock is free and the file empty: a clean start;
- the lock is free but the file names an owner: that process ended without releasing it (killed, crashed, a
  torchrun restart): reported, then taken over;
- the lock is held by another process on this host: refused, naming it;
- the file names a live owner on another host (a shared file system, where ``flock`` may not reach across
  machines): its heartbeat (the file's modification time, touched every ``HEARTBEAT_S``) decides; refused while
  younger than ``STALE_AFTER_S``, then reported and taken over.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = ".x2ct-lock"
# the owner touches its lock file this often; another host's lock older than STALE_AFTER_S is a dead owner's
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
# torchrun gives every attempt of one job (every --max-restarts restart) this id
TORCHRUN_JOB_ENV = "TORCHELASTIC_RUN_ID"
TORCHRUN_RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"


class FolderInUseError(RuntimeError):
    """Another live process owns the folder; the message names the folder and the owner."""


@dataclass
class FolderLock:
    """A held lock: ``notes`` says what was found (e.g. a dead owner's lock taken over)."""

    folder: Path
    what: str
    fd: int
    owner: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def release(self) -> None:
        """Empty the lock file and unlock it (idempotent). A kill skips this; the next owner then reports it."""
        if self.fd < 0:
            return
        self._stop.set()
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass  # the folder's disk went away: the kernel still drops the lock below
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1
        _HELD.pop(_key(self.folder), None)


_HELD: dict[str, FolderLock] = {}  # folders this process holds, by resolved path
_HELD_GUARD = threading.Lock()


def hold_folder(folder: str | os.PathLike, what: str, *, wait_s: float = 0.0, quiet: bool = False) -> FolderLock:
    """Own ``folder`` (created if missing) until ``release`` or the end of the process; re-entrant per process.

    Args:
        folder: the run, sweep, output or data-set folder.
        what: how the refusal names the folder's use, e.g. ``"run folder"``.
        wait_s: how long to wait for a live owner to finish before refusing (0: refuse at once); a data set being
            prepared by another process is worth waiting for, a run folder is not.
        quiet: do not print the notes (the caller reports them).

    Raises:
        FolderInUseError: another live process owns it (after ``wait_s``).
    """
    folder = Path(folder)
    key = _key(folder)
    with _HELD_GUARD:
        if key in _HELD:
            return _HELD[key]
        folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                previous = read_owner(folder)
                if time.monotonic() >= deadline:
                    raise FolderInUseError(_in_use(folder, what, previous)) from None
                if not waited and not quiet:
                    print(f"{what} {folder}: waiting for {describe_owner(previous)} to finish", file=sys.stderr,
                          flush=True)
                waited = True
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            previous = _read_fd(fd)
            notes: list[str] = []
            if previous:
                age = time.time() - os.fstat(fd).st_mtime
                host = previous.get("host")  # unknown (an unreadable record): nobody here holds it, take it
                if host and host != socket.gethostname() and age < STALE_AFTER_S:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                    raise FolderInUseError(
                        _in_use(folder, what, previous) + f" (its heartbeat is {age:.0f} s old; a lock from another "
                        f"host is taken over once {STALE_AFTER_S:.0f} s old)")
                notes.append(_takeover_note(folder, what, previous, age))
            owner = current_owner()
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner, indent=1) + "\n").encode(), 0)
            os.fsync(fd)
            lock = FolderLock(folder, what, fd, owner, notes)
            _HELD[key] = lock
            break
    _start_heartbeat(lock)
    if not quiet:
        for note in notes:
            print(note, file=sys.stderr, flush=True)
    return lock


def is_held(folder: str | os.PathLike) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return _key(Path(folder)) in _HELD


def read_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner recorded in ``folder``'s lock file; None when there is none (or it is being written)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
    except OSError:
        return None
    return _parse(text)


def current_owner() -> dict[str, Any]:
    """What a lock file records about this process."""
    owner = {"host": socket.gethostname(), "pid": os.getpid(),
             "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "command": " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])}
    if os.environ.get(TORCHRUN_JOB_ENV):
        owner["torchrun_job"] = os.environ[TORCHRUN_JOB_ENV]
        owner["torchrun_restart"] = int(os.environ.get(TORCHRUN_RESTART_ENV, "0"))
    return owner


def describe_owner(owner: dict[str, Any] | None) -> str:
    """``pid 123 on host h since 2026-...: train.py run_name=x`` (or what is known of it)."""
    if not owner:
        return "another process (its lock file is being written)"
    return (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} since {owner.get('started', '?')}: "
            f"{owner.get('command', '?')}")


def _in_use(folder: Path, what: str, owner: dict[str, Any] | None) -> str:
    return (f"{what} {folder} is in use by {describe_owner(owner)}; wait for it to end or choose another folder "
            f"(its lock: {folder / LOCK_NAME})")


def _takeover_note(folder: Path, what: str, previous: dict[str, Any], age_s: float) -> str:
    same_job = (previous.get("torchrun_job") is not None
                and previous.get("torchrun_job") == os.environ.get(TORCHRUN_JOB_ENV))
    if same_job:
        return (f"{what} {folder}: taking back the lock of an earlier attempt of this torchrun job "
                f"({describe_owner(previous)}; restart {os.environ.get(TORCHRUN_RESTART_ENV, '?')})")
    if previous.get("host") in (None, socket.gethostname()):
        why = "is no longer running"
    else:
        why = f"has not touched it for {age_s:.0f} s (taken over after {STALE_AFTER_S:.0f} s)"
    return f"{what} {folder}: taking over the lock left by {describe_owner(previous)}, which {why}"


def _start_heartbeat(lock: FolderLock) -> None:
    """Touch the lock file every ``HEARTBEAT_S`` while held, so another host can tell a live owner from a dead one."""

    def beat() -> None:
        while not lock._stop.wait(HEARTBEAT_S):
            try:
                os.utime(lock.fd)
            except OSError:
                return

    threading.Thread(target=beat, name=f"x2ct-lock-heartbeat {lock.folder}", daemon=True).start()


def _read_fd(fd: int) -> dict[str, Any] | None:
    size = os.fstat(fd).st_size
    return _parse(os.pread(fd, size, 0).decode(errors="replace")) if size else None


def _parse(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return {"command": "unreadable lock file"}
    return owner if isinstance(owner, dict) else {"command": "unreadable lock file"}


def _key(folder: Path) -> str:
    return str(folder.resolve())


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()
