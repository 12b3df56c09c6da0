"""One run, one folder: a second process meeting a run or sweep folder that another owns is refused at start,
naming the owner, and writes nothing there; a dead owner's lock is taken over (after a SIGKILL, a torchrun
restart). The processes are real: train.py, torchrun, and a holder process from tests/test_folder_lock.py."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.killable_run import KILL_ENV, KILL_RANK_ENV
from tests.engine.test_train import tiny_cfg, tiny_train_overrides
from tests.helpers import assert_same_state
from tests.test_folder_lock import _holder
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.trainer import train
from x2ct.folder_lock import LOCK_NAME, FolderInUseError, read_owner

REPO = Path(__file__).resolve().parents[2]
TIME_KEYS = {"time", "samples_per_s"}


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    env.pop("X2CT_RUN_STAMP", None)
    env.pop(KILL_ENV, None)
    return env


def _train_cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *tiny_train_overrides(data, out, *extra)]


def _records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in read_metrics(run_dir / "metrics.jsonl")]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("train.py")]


def _assert_same_run(a: Path, b: Path) -> None:
    """The same training: equal records (but wall times) and bit-equal final weights, optimiser and EMA."""
    assert _records(a) == _records(b)
    left, right = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (a, b))
    for key in ("model", "optimizer", "ema"):
        if left.get(key) is not None or right.get(key) is not None:
            assert_same_state(left[key], right[key], f"last.pt {key}")


def test_train_refuses_a_folder_another_process_holds_and_writes_nothing_there(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    holder = _holder(run_dir, 120)
    try:
        with pytest.raises(FolderInUseError, match=rf"run folder {run_dir} is in use by pid {holder.pid} on host "):
            train(tiny_cfg(tiny_dataset, tmp_path), run_dir=run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]
        assert read_owner(run_dir)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_processes_started_together_one_trains_as_if_alone_the_other_is_refused(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    run_dir = out / "runs" / "same"
    processes = {seed: subprocess.Popen(_train_cli(tiny_dataset, out, "run_name=same", f"seed={seed}"), cwd=REPO,
                                        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in (1, 2)}  # started together: whichever locks the folder first trains
    results = {seed: (*p.communicate(timeout=600), p.returncode) for seed, p in processes.items()}
    codes = {seed: code for seed, (_, _, code) in results.items()}
    assert sorted(codes.values()) == [0, 1], {s: r[1][-2000:] for s, r in results.items()}
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser = 3 - winner
    lines = _error_lines(results[loser][1])
    assert len(lines) == 1 and re.fullmatch(
        rf"train\.py: error: run folder {re.escape(str(run_dir))} is in use by pid {processes[winner].pid} on host "
        rf"{re.escape(socket.gethostname())} since \S+: train\.py .*seed={winner}; wait for it to end or choose "
        rf"another folder \(its lock: {re.escape(str(run_dir / LOCK_NAME))}\)", lines[0]), lines
    assert "Traceback" not in results[loser][1]

    alone = tmp_path / "alone"
    lone = subprocess.run(_train_cli(tiny_dataset, alone, "run_name=same", f"seed={winner}"), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert lone.returncode == 0, lone.stderr[-2000:]
    _assert_same_run(run_dir, alone / "runs" / "same")
    assert f"seed: {winner}\n" in (run_dir / "config_resolved.yaml").read_text()
    assert (run_dir / LOCK_NAME).read_text() == ""  # released at the end


@pytest.mark.slow
def test_a_sweep_launched_into_a_sweep_folder_in_use_is_refused_before_any_job(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    sweep = out / "multiruns" / "sw"
    holder = _holder(sweep, 300)
    try:
        result = subprocess.run([*_train_cli(tiny_dataset, out, "run_name=sw", "seed=1,2"), "-m"], cwd=REPO,
                                env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1, result.stderr[-2000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"train.py: error: sweep folder {sweep} is in use by pid "
                                                   f"{holder.pid} on host "), result.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir()) == [LOCK_NAME]  # no job folder, no .hydra


def _torchrun(*args: str, restarts: int = 0, env: dict | None = None, timeout: int = 600
              ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           f"--max-restarts={restarts}", *args], cwd=REPO, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_two_torchrun_ranks_meeting_a_folder_in_use_exit_1_with_one_line(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    run_dir = out / "runs" / "r"
    holder = _holder(run_dir, 300)
    try:
        result = _torchrun(str(REPO / "train.py"), *tiny_train_overrides(tiny_dataset, out, "run_name=r"))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"train.py (rank 0): error: run folder {run_dir} is in use by "
                                                   f"pid {holder.pid} on host "), result.stderr[-3000:]
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]
    assert "x2ct/" not in result.stderr  # no traceback frame of ours


@pytest.mark.slow
@pytest.mark.parametrize("killed_rank", [0, 1])
def test_a_torchrun_restart_after_a_killed_rank_ends_as_the_unbroken_run(killed_rank, tiny_dataset, tmp_path):
    """2 ranks, EMA, a checkpoint every epoch (one step each on the tiny set); one rank SIGKILLed at the start of
    epoch 2's step; torchrun (--max-restarts=1) restarts the group, which resumes from epoch 1's checkpoint
    (resume=auto). Rank 0 killed: its lock record stays and the restarted group takes it back, saying so; rank 1
    killed: rank 0 fails on the broken connection and releases the lock on its way out."""
    run = ("trainer.max_epochs=3", "trainer.ema_decay=0.9", "run_name=restart", "resume=auto")

    def launch(run_dir: Path, env: dict, restarts: int) -> subprocess.CompletedProcess:
        return _torchrun("-m", "tests.engine.killable_run", str(run_dir), str(tiny_dataset), str(tmp_path), *run,
                         restarts=restarts, env=env)

    unbroken = launch(tmp_path / "unbroken", _env(), 0)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    restarted = launch(tmp_path / "restarted", {**_env(), KILL_ENV: "step:2", KILL_RANK_ENV: str(killed_rank)}, 1)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert re.search(rf"exitcode\s*: -9 \(pid: \d+\)|local_rank: {killed_rank} .*exitcode: -9|exitcode: -9\) "
                     rf"local_rank: {killed_rank}", restarted.stderr), restarted.stderr[-3000:]  # the kill happened
    note = f"run folder {tmp_path / 'restarted'}: taking back the lock of an earlier attempt of this torchrun job"
    assert (note in restarted.stderr) == (killed_rank == 0), restarted.stderr[-3000:]
    _assert_same_run(tmp_path / "unbroken", tmp_path / "restarted")
    assert (tmp_path / "restarted" / LOCK_NAME).read_text() == ""
