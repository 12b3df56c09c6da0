"""Simulated OS refusals, in-process: a read-only folder, a full disk, an unreadable file.

The tests run as root in CI and here, and root ignores permission bits (chmod 0o500 refuses nothing), so the
refusals are made where Python asks the OS: ``open`` (pathlib goes through ``io.open``), ``os.open`` (tempfile)
and ``os.mkdir``; each raises the ``OSError`` the OS would, naming the path. Writers that bypass Python's file
functions (``torch.save`` to a path name writes from C++) are not refused.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def refuse_writes(monkeypatch, folder: str | os.PathLike, code: int = errno.EACCES) -> None:
    """Refuse, with ``code`` (EACCES: a read-only folder, ENOSPC: a full disk), every file or folder creation
    and every write below ``folder``; reading goes on."""
    folder = Path(folder).absolute()
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def below(path) -> bool:
        try:
            path = Path(os.fspath(path)).absolute()
        except TypeError:  # a file descriptor
            return False
        return path != folder and path.is_relative_to(folder)

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and below(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and below(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        target = Path(os.fspath(path))
        # as the OS: a missing parent or an existing name is reported as such before permission or space
        if below(path) and target.parent.exists() and not target.exists():
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)


def refuse_reading(monkeypatch, file: str | os.PathLike) -> None:
    """Refuse to open ``file`` (EACCES), as a file of another user without read permission."""
    file = Path(file).absolute()
    real_open = builtins.open

    def open_(path, mode="r", *args, **kwargs):
        if not isinstance(path, int) and Path(os.fspath(path)).absolute() == file:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def refuse_listing(monkeypatch, folder: str | os.PathLike) -> None:
    """Refuse to list ``folder`` (EACCES), as a folder of another user without read permission."""
    folder = Path(folder).absolute()
    real_listdir, real_scandir = os.listdir, os.scandir

    def guard(real):
        def listing(path="."):
            if not isinstance(path, int) and Path(os.fspath(path)).absolute() == folder:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real(path)
        return listing

    monkeypatch.setattr(os, "listdir", guard(real_listdir))
    monkeypatch.setattr(os, "scandir", guard(real_scandir))


def fill_disk_on_rename(monkeypatch, folder: str | os.PathLike) -> None:
    """A disk that fills up during the run: the atomic writers' final ``os.replace`` into ``folder`` (or below)
    fails with ENOSPC naming the file it was finishing. Everything before that (and the output check) works."""
    folder = Path(folder).absolute()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(os.fspath(dst)).absolute().is_relative_to(folder):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
