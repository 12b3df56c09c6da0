"""Resuming a run from its folder: which checkpoint, and a folder that agrees with it after any kill.

``last.pt`` is the commit point of a run folder (``x2ct.engine.checkpoint``): it is written first and names its
copies (``best.pt``, ``epoch_NNNN.pt``), written next as byte copies of it. Resuming therefore

- picks ``last.pt``, or when it is missing or damaged the newest intact checkpoint of the folder
  (``load_for_resume``, ``newest_intact``), saying which file was refused and why;
- restores the copies a kill between the writes lost, and never replaces a later state (``restore_copies``);
- removes the temporary files of interrupted writes (``remove_temporary_files``);
- keeps ``best.pt`` meaning the best weights validated in the folder (``best_of_folder``).

``resume_state`` is what the trainer calls with the ``resume`` config value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from x2ct.atomic_io import copy_atomic, temporary_files
from x2ct.engine.checkpoint import (
    CHECKPOINT_DIR,
    EPOCH_FILE,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
)


def checkpoint_files(run_dir: str | os.PathLike) -> list[Path]:
    """Every checkpoint of a run folder: ``last.pt``, the periodic files newest first, ``best.pt`` (those present;
    temporary files of interrupted writes are not checkpoints)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    periodic = [p for p in folder.glob("epoch_*.pt") if EPOCH_FILE.fullmatch(p.name)] if folder.is_dir() else []
    periodic.sort(key=lambda p: int(EPOCH_FILE.fullmatch(p.name).group(1)), reverse=True)
    ends = [checkpoint_path(run_dir, "last"), *periodic, checkpoint_path(run_dir, "best")]
    return [p for p in ends if p.is_file()]


def remove_temporary_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that a kill during a checkpoint write leaves in ``run_dir/checkpoints``; returns
    them. Call it only from the one process that writes the folder, before it writes."""
    removed = temporary_files(Path(run_dir) / CHECKPOINT_DIR)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@dataclass
class Resumed:
    """The state a run resumes from, the file it was read from, and what was refused on the way (to print)."""

    path: Path
    state: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def load_for_resume(run_dir: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Resumed | None:
    """``last.pt`` of a run folder; if it is damaged or missing, the newest intact of its other checkpoints.

    Returns None when the folder holds no checkpoint (a fresh start). Raises ``CheckpointError`` naming every file
    tried and why it was refused when none is intact.
    """
    last = checkpoint_path(run_dir, "last")
    files = checkpoint_files(run_dir)
    if not files:
        return None
    refused: list[tuple[Path, str]] = []
    if last.is_file():
        try:
            return Resumed(last, load_checkpoint(last, map_location))
        except CheckpointError as err:
            refused.append((last, str(err)))
    else:
        refused.append((last, f"checkpoint {last} is missing"))
    found = newest_intact(files, map_location, refused, skip=last)
    if found is None:
        tried = "; ".join(why for _, why in refused)
        raise CheckpointError(f"run folder {run_dir} has no intact checkpoint to resume from: {tried}")
    notes = [why for _, why in refused]
    notes.append(f"resuming from {found.path.name} instead (epoch {found.state['epoch'] + 1}, step "
                 f"{found.state['step']}): the newest intact checkpoint of the folder")
    found.notes = notes
    return found


def newest_intact(files: Sequence[Path], map_location: str | torch.device | None = "cpu",
                  refused: list[tuple[Path, str]] | None = None, skip: Path | None = None) -> Resumed | None:
    """The intact checkpoint with the highest (epoch, step) among ``files`` (ordered as ``checkpoint_files``) but
    ``skip``; damaged files are appended to ``refused`` with the error (which names the file).

    Loads ``last.pt``, the periodic files newest first until one is intact, and ``best.pt``: at most three intact
    loads, whatever the number of periodic files. On a tie the earlier file in ``files`` wins.
    """
    refused = [] if refused is None else refused
    best: Resumed | None = None
    periodic_found = False
    for path in files:
        is_periodic = EPOCH_FILE.fullmatch(path.name) is not None
        if path == skip or (is_periodic and periodic_found):
            continue
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as err:
            refused.append((path, str(err)))
            continue
        periodic_found |= is_periodic
        if best is None or (state["epoch"], state["step"]) > (best.state["epoch"], best.state["step"]):
            best = Resumed(path, state)
    return best


def restore_copies(path: Path, state: dict[str, Any]) -> list[str]:
    """Make the run folder of ``path`` agree with ``state`` (read from ``path``): the copies it names and, when
    ``path`` is not ``last.pt`` (a fallback), ``last.pt`` are rewritten as byte copies of ``path`` where missing or
    stale; returns one line per file restored or kept.

    A file is restored when it is missing, damaged or holds an earlier state (a kill between the writes of
    ``last.pt`` and its copies). It is kept when it holds an intact later state (``resume=`` naming an older
    checkpoint of the folder): a resume never replaces a later state, and ``best.pt`` stays the best weights
    validated in the folder.
    """
    lines = []
    names = list(state.get("copies") or [])
    if path.name != "last.pt":
        names.insert(0, "last.pt")
    for name in names:
        target = path.parent / name
        if target == path or _same_bytes(path, target):
            continue
        why = "it was missing"
        if target.exists():
            try:
                other = load_checkpoint(target, map_location="cpu")
            except CheckpointError as err:
                why = f"it was damaged ({err})"
            else:
                if (other["epoch"], other["step"]) > (state["epoch"], state["step"]):
                    lines.append(f"kept {target} (epoch {other['epoch'] + 1}, step {other['step']}): it is later "
                                 f"than {path.name}")
                    continue
                why = f"it held epoch {other['epoch'] + 1}, step {other['step']}"
        copy_atomic(path, target)
        lines.append(f"restored {target} as a copy of {path.name} (epoch {state['epoch'] + 1}, step "
                     f"{state['step']}): {why}")
    return lines


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 24) -> bool:
    if not b.is_file() or a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while block := fa.read(chunk):
            if block != fb.read(chunk):
                return False
    return True


def resume_state(resume: str | None, run_dir: Path, device: torch.device, is_main: bool) -> Resumed | None:
    """The checkpoint ``resume`` asks for, loaded: none for a fresh start (refused when the folder has checkpoints);
    ``auto`` this folder's, a run folder its newest intact checkpoint (``last.pt`` unless damaged); a file itself.

    When the checkpoint is this folder's, rank 0 restores the files (``best.pt``, ``epoch_NNNN.pt``, after a fallback
    ``last.pt``) that should hold its state but lost it to a kill between writes or to damage (``restore_copies``),
    and prints what it refused, restored and kept.
    """
    if resume in (None, ""):
        existing = checkpoint_files(run_dir)
        if existing:
            raise FileExistsError(f"run folder {run_dir} already has checkpoints ({existing[0]}); pass resume=auto "
                                  "to continue it, or choose another run_name")
        return None
    path = Path(resume)
    if resume == "auto":
        resumed = load_for_resume(run_dir, device)
    elif path.is_dir():
        resumed = load_for_resume(path, device)
        if resumed is None:
            raise FileNotFoundError(f"resume={resume}: no checkpoints in {path / CHECKPOINT_DIR}")
    elif not path.exists():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file or run folder")
    else:
        resumed = _load_named_checkpoint(path, device)
    if resumed is not None and is_main:
        if resumed.path.parent.resolve() == (run_dir / CHECKPOINT_DIR).resolve():
            resumed.notes += restore_copies(resumed.path, resumed.state)
        for note in resumed.notes:
            print(note, flush=True)
    return resumed


def _load_named_checkpoint(path: Path, device: torch.device) -> Resumed:
    """``resume=<file>``: that file, or an error naming it and the newest intact checkpoint beside it."""
    try:
        return Resumed(path, load_checkpoint(path, map_location=device))
    except CheckpointError as err:
        folder = path.parent
        others = checkpoint_files(folder.parent) if folder.name == CHECKPOINT_DIR else []
        refused: list[tuple[Path, str]] = []
        alternative = newest_intact(others, "cpu", refused, skip=path)
        hint = (f"the newest intact checkpoint beside it is {alternative.path} (epoch "
                f"{alternative.state['epoch'] + 1}, step {alternative.state['step']}): pass resume={alternative.path}"
                if alternative is not None else f"no other intact checkpoint in {folder}"
                + (f" (refused: {', '.join(p.name for p, _ in refused)})" if refused else ""))
        raise CheckpointError(f"{err}. {hint[0].upper()}{hint[1:]}") from err


def best_of_folder(run_dir: Path, resumed: Resumed, best: float, device: torch.device, is_main: bool) -> float:
    """After ``resume=`` named an older checkpoint of this folder, ``best.pt`` may hold a later, better state: it stays
    the best weights validated in this folder, and its score is the one to beat. (A fallback never gets here with a
    later ``best.pt``: it would have resumed from it.) Returns the best score to continue with; every rank reads
    it, so all agree."""
    best_path = checkpoint_path(run_dir, "best")
    last = checkpoint_path(run_dir, "last")
    if resumed.path.resolve() in (last.resolve(), best_path.resolve()) or not best_path.is_file():
        return best
    try:
        saved = load_checkpoint(best_path, map_location=device)["best_metric"]
    except CheckpointError as err:
        if is_main:
            print(f"warning: {err}; it is rewritten at the next validation that beats {best:.2f} dB", flush=True)
        return best
    if saved is None or not saved > best:
        return best
    if is_main:
        print(f"keeping {best_path} (val PSNR {saved:.2f} dB, later than {resumed.path.name}): later epochs must "
              "beat it to replace it", flush=True)
    return saved
