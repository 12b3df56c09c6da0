"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

Every station writes through these helpers (datasets, NIfTI volumes, JSON metadata, later checkpoints), so an
interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An ``OSError`` without a file name (a full disk seen by a writer's ``write``) is raised again naming ``path``.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.npy``) so writers that infer the format from
    the name behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the final file the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename is None:  # a writer's write() failed (e.g. ENOSPC): say which file, for the one-line report
            raise type(err)(err.errno, err.strerror or str(err), str(path)) from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def copy_atomic(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy ``source``'s bytes onto ``path`` atomically (a kill mid-copy leaves ``path`` as it was)."""
    return write_atomic(path, lambda tmp: shutil.copyfile(source, tmp))


def temporary_files(folder: str | os.PathLike) -> list[Path]:
    """The temporary files ``atomic_path`` leaves in ``folder`` when its process is killed mid-write."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(".*.tmp*") if p.is_file()) if folder.is_dir() else []


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it onto ``path`` when complete.

    ``path`` must not exist yet; a leftover temporary directory from a crashed run is removed first.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; refusing to overwrite a complete directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
