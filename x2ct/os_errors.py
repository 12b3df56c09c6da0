"""OS errors as the entrypoints report them: one line naming the path, exit 1, no traceback.

A full disk, a read-only folder or an output path under a file is the user's to fix, not a bug: a traceback hides
the one thing they need (which path, and why). The entrypoints also check their output folder before long work,
so such a problem shows in the first second rather than after an hour of training or inference.

Imports nothing of x2ct, so every entrypoint and station can use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# errors that can only mean the write itself failed (whatever the file)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# torch re-raises a DataLoader worker's OSError as the same type with the worker's traceback as its only argument
_WORKER_HEADER = re.compile(r"Caught \w+ in (?P<where>.+?)\.?$")
_ERRNO_LINE = re.compile(r"\w+: \[Errno (?P<errno>\d+)\] (?P<reason>.+?)(?:: '(?P<path>.+)')?$")


def check_writable_dir(path: str | os.PathLike) -> None:
    """Check that folder ``path`` can be created (if missing) and written: make it, write and remove a small file,
    and remove the folders made for the check, so that a run that fails later on bad input leaves nothing behind.

    Raises ``NotADirectoryError`` naming the file that stands where a folder should be, and ``PermissionError``
    (or any other ``OSError``: a read-only or full disk) naming ``path`` or the folder it could not create. A disk
    that fills up later is not caught here, only one that is full already.
    """
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder", str(path))
    made = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)  # its own errors name the folder it could not create
        try:
            fd, probe = tempfile.mkstemp(prefix=".x2ct_write_check_", dir=path)
            try:
                os.write(fd, b"x")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as err:  # name the folder, not the probe's random name
            raise type(err)(err.errno, err.strerror, str(path)) from err
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # never made, or another process writes there now: leave it
                pass


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """``path`` or its nearest existing ancestor when that is not a folder (so ``path`` cannot be one), else None."""
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def os_error_message(err: OSError, where: str | os.PathLike | None = None) -> str:
    """One line saying what could not be done to which path, and why.

    ``where`` (the output folder) is named when the OS gave no path: a write to an open file that fails on a full
    disk says only "No space left on device".
    """
    reason = err.strerror
    if not reason:  # raised with a message of its own (e.g. FileNotFoundError("resume=...: no such file"))
        return _from_worker(str(err), where) or _one_line(str(err))
    path, other = err.filename, err.filename2
    if path is None:
        if where is None:
            return _one_line(reason)
        return _one_line(f"cannot write under {where}: {reason}" if err.errno in _WRITE_ERRNOS
                         else f"{reason} (under {where})")
    if other is not None:
        return _one_line(f"cannot move {path} to {other}: {reason}")
    if err.errno == errno.ENOTDIR:
        blocker = _quiet_file_in_the_way(path)
        if blocker == Path(path):
            return _one_line(f"{path} is a file, not a folder")
        if blocker is not None:
            return _one_line(f"{path}: {blocker} is a file, not a folder")
    if err.errno == errno.EEXIST:
        return _one_line(f"cannot create {path}: something of that name is in the way")
    if err.errno in _WRITE_ERRNOS:
        return _one_line(f"cannot write {path}: {reason}")
    return _one_line(f"{path}: {reason}")


def report_os_error(prog: str, err: OSError, where: str | os.PathLike | None = None) -> None:
    """Print ``prog: error: <message>`` on stderr; under torchrun ``prog (rank N): error: ...``."""
    report_error(prog, os_error_message(err, where))


def report_error(prog: str, message: str) -> None:
    """Print ``prog: error: message`` on stderr, tagged with the rank under torchrun."""
    print(f"{prog}{_rank_tag()}: error: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exit_on_os_error(prog: str, where: str | os.PathLike | None = None, exit_code: int = 1) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into one line on stderr and ``SystemExit(exit_code)``.

    ``SystemExit`` passes through Hydra's error report (which prints a traceback for anything else), and torchrun
    sees the rank fail. Errors the caller handles itself (a missing input named in its own words) never get here.
    """
    try:
        yield
    except OSError as err:
        report_os_error(prog, err, where)
        raise SystemExit(exit_code) from None


def _rank_tag() -> str:
    """`` (rank N)`` under torchrun, where every rank may print: the environment torchrun gives each process."""
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        return f" (rank {os.environ.get('RANK', '?')})"
    return ""


def _from_worker(text: str, where: str | os.PathLike | None) -> str | None:
    """The message of an OSError re-raised from a DataLoader worker, without the worker's traceback."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    header = _WORKER_HEADER.match(lines[0]) if lines else None
    if header is None or not any(line.startswith("Original Traceback") for line in lines):
        return None
    original = _ERRNO_LINE.match(lines[-1])
    if original is None:
        return f"{lines[-1]} (in {header['where']})"
    code, reason, path = int(original["errno"]), original["reason"], original["path"]
    return f"{os_error_message(OSError(code, reason, path), where)} (in {header['where']})"


def _quiet_file_in_the_way(path: str | os.PathLike) -> Path | None:
    try:
        return file_in_the_way(path)
    except OSError:  # an ancestor we may not even look into: say what the OS said
        return None


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
