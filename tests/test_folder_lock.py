"""The folder lock against real processes: held, refused naming the owner, a dead owner's lock taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from x2ct import folder_lock
from x2ct.folder_lock import LOCK_NAME, FolderInUseError, hold_folder, is_held, read_owner

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from x2ct.folder_lock import hold_folder
hold_folder(sys.argv[1], "run folder")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds ``folder`` for ``seconds`` (then exits normally, releasing it)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def released():
    """Locks this test takes are released after it (the process lives on for the other tests)."""
    yield
    for lock in list(folder_lock._HELD.values()):
        lock.release()


def test_the_lock_names_its_owner_is_reentrant_and_is_emptied_on_release(tmp_path, released):
    folder = tmp_path / "run"
    lock = hold_folder(folder, "run folder")
    owner = json.loads((folder / LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] and owner["started"] and owner["command"]
    assert read_owner(folder) == owner and is_held(folder)
    assert hold_folder(folder, "run folder") is lock  # this process owns it already
    lock.release()
    assert (folder / LOCK_NAME).read_text() == "" and not is_held(folder)
    lock.release()  # idempotent
    again = hold_folder(folder, "run folder")
    assert again.notes == []  # an emptied lock file is a clean start, not a takeover


def test_a_live_owner_refuses_a_second_process_naming_it_and_a_killed_ones_lock_is_taken_over(
        tmp_path, released, capsys):
    folder = tmp_path / "run"
    holder = _holder(folder, 60)
    try:
        with pytest.raises(FolderInUseError, match=rf"run folder {folder} is in use by pid {holder.pid} on host "
                                                   rf".* since .*: -c {folder} 60"):
            hold_folder(folder, "run folder")
        record = read_owner(folder)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert read_owner(folder) == record and record["pid"] == holder.pid  # a SIGKILL skips the release
    lock = hold_folder(folder, "run folder")
    assert lock.notes == [f"run folder {folder}: taking over the lock left by pid {holder.pid} on host "
                          f"{record['host']} since {record['started']}: -c {folder} 60, which is no longer running"]
    assert lock.notes[0] in capsys.readouterr().err
    assert read_owner(folder)["pid"] == os.getpid()


def test_waiting_outlasts_an_owner_that_finishes(tmp_path, released, capsys):
    folder = tmp_path / "data"
    holder = _holder(folder, 1.5)
    started = time.monotonic()
    lock = hold_folder(folder, "data set", wait_s=60)
    assert time.monotonic() - started < 30 and holder.wait() == 0
    assert lock.notes == []  # the owner released it cleanly
    assert f"data set {folder}: waiting for pid {holder.pid}" in capsys.readouterr().err


def test_a_lock_from_another_host_is_refused_while_its_heartbeat_is_fresh_then_taken_over(tmp_path, released):
    folder = tmp_path / "run"
    folder.mkdir()
    record = {"host": "node17", "pid": 4242, "started": "2026-01-01T00:00:00+00:00", "command": "train.py"}
    (folder / LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(FolderInUseError, match=r"in use by pid 4242 on host node17 .*heartbeat is \d+ s old; a lock "
                                               r"from another host is taken over once 600 s old"):
        hold_folder(folder, "run folder")
    stale = time.time() - folder_lock.STALE_AFTER_S - 5
    os.utime(folder / LOCK_NAME, (stale, stale))
    lock = hold_folder(folder, "run folder", quiet=True)
    assert lock.notes == [f"run folder {folder}: taking over the lock left by pid 4242 on host node17 since "
                          "2026-01-01T00:00:00+00:00: train.py, which has not touched it for 605 s (taken over "
                          "after 600 s)"]


def test_a_torchrun_restart_takes_its_own_lock_back(tmp_path, released, monkeypatch):
    folder = tmp_path / "run"
    monkeypatch.setenv(folder_lock.TORCHRUN_JOB_ENV, "job-7")
    monkeypatch.setenv(folder_lock.TORCHRUN_RESTART_ENV, "0")
    first = hold_folder(folder, "run folder", quiet=True)
    assert first.owner["torchrun_job"] == "job-7" and first.owner["torchrun_restart"] == 0
    os.close(first.fd)  # what the kernel does when the attempt dies: the lock goes, the record stays
    first.fd = -1
    folder_lock._HELD.clear()
    monkeypatch.setenv(folder_lock.TORCHRUN_RESTART_ENV, "1")
    second = hold_folder(folder, "run folder", quiet=True)
    assert second.notes == [f"run folder {folder}: taking back the lock of an earlier attempt of this torchrun job "
                            f"(pid {os.getpid()} on host {first.owner['host']} since {first.owner['started']}: "
                            f"{first.owner['command']}; restart 1)"]


def test_an_unreadable_lock_file_is_reported_not_trusted(tmp_path, released):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text("{half a reco")
    lock = hold_folder(folder, "run folder", quiet=True)
    assert "unreadable lock file" in lock.notes[0]
