"""Kill-anywhere resume: a run SIGKILLed at each chosen point and resumed with ``resume=auto`` until it finishes
leaves the same run folder as an unbroken run (checkpoints, ``best.pt``, periodic files, ``metrics.jsonl``,
``test_metrics.json``, no temporary files).

The runs are subprocesses of ``tests/engine/killable_run.py`` (tiny, CPU, deterministic, one thread each): 4
epochs, validation every epoch, ``epoch_NNNN.pt`` every 2, EMA, the test split scored at the end. This run improves
its best validation PSNR at epochs 1, 3 and 4 (not 2), which the plan relies on and the test checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.killable_run import KILL_ENV
from tests.helpers import assert_same_state
from x2ct.engine.checkpoint import load_checkpoint
from x2ct.engine.metrics_log import read_metrics
from x2ct.folder_lock import LOCK_NAME

REPO = Path(__file__).resolve().parents[2]
RUN = ("trainer.max_epochs=4", "trainer.checkpoint_every_epochs=2", "trainer.val_every_epochs=1",
       "optimizer.lr=1e-3", "trainer.ema_decay=0.9", "test_after_training=true", "run_name=kill_anywhere",
       "resume=auto")  # also on the first start, so that every saved config is the same
# each attempt is killed at its point, counted within that process; the last one runs to the end
PLAN = (
    ("step:2", "mid-epoch 1, before the first checkpoint"),
    ("save:1", "inside torch.save of the first last.pt (a temporary file left, no checkpoint yet)"),
    ("before_copy:best.pt:1", "between the writes of last.pt and best.pt (epoch 1)"),
    ("step:2", "mid-epoch 2"),
    ("during_copy:epoch_0002.pt:1", "during the copy of last.pt to epoch_0002.pt"),
    ("save:1", "inside torch.save of last.pt of epoch 3 (epoch 2's intact)"),
    ("during_copy:best.pt:1", "during the copy of last.pt to best.pt (epoch 3)"),
    ("before_copy:epoch_0004.pt:1", "between the writes of best.pt and epoch_0004.pt (epoch 4)"),
    ("test_json:1", "after the test scores are logged, before test_metrics.json"),
    (None, "to the end"),
)
TIME_KEYS = {"time", "samples_per_s"}


def _train(run_dir: Path, data: Path, out: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "tests.engine.killable_run", str(run_dir), str(data), str(out),
                           *RUN], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in read_metrics(run_dir / "metrics.jsonl")]


def _test_metrics(run_dir: Path) -> dict:
    result = json.loads((run_dir / "test_metrics.json").read_text())
    return result | {"checkpoint": str(Path(result["checkpoint"]).relative_to(run_dir))}


@pytest.mark.slow
def test_a_run_killed_anywhere_and_resumed_equals_the_unbroken_run(tiny_dataset, tmp_path):
    started = time.perf_counter()
    unbroken = tmp_path / "unbroken"
    done = _train(unbroken, tiny_dataset, tmp_path, None)
    assert done.returncode == 0, done.stderr[-3000:]
    val = [r for r in read_metrics(unbroken / "metrics.jsonl") if r["split"] == "val"]
    improved = [r["epoch"] + 1 for i, r in enumerate(val) if i == 0 or r["psnr"] > val[i - 1]["best_psnr"]]
    assert improved[:2] == [1, 3], f"the kill plan needs best.pt written at epochs 1 and 3, not 2; got {improved}"

    killed = tmp_path / "killed"
    for attempt, (kill_at, moment) in enumerate(PLAN, start=1):
        result = _train(killed, tiny_dataset, tmp_path, kill_at)
        expected = 0 if kill_at is None else -signal.SIGKILL
        assert result.returncode == expected, (f"attempt {attempt} ({moment}): exit {result.returncode}, expected "
                                               f"{expected}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        # the killed attempt's lock on the folder is reported and taken over by the next (x2ct/folder_lock.py)
        took_over = f"run folder {killed}: taking over the lock left by pid " in result.stderr
        assert took_over == (attempt > 1), f"attempt {attempt} ({moment}):\n{result.stderr[-3000:]}"
    assert (killed / LOCK_NAME).read_text() == ""  # the last attempt ended cleanly and released it
    elapsed = time.perf_counter() - started

    files = sorted(p.name for p in (unbroken / "checkpoints").iterdir())
    assert files == ["best.pt", "epoch_0002.pt", "epoch_0004.pt", "last.pt"]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == files  # no temporary file either
    for name in files:
        a, b = load_checkpoint(unbroken / "checkpoints" / name), load_checkpoint(killed / "checkpoints" / name)
        for key in ("model", "optimizer", "ema", "scheduler", "rng_states"):
            assert_same_state(a[key], b[key], f"{name} {key}")
        assert (a["epoch"], a["step"], a["best_metric"], a["copies"]) == (b["epoch"], b["step"], b["best_metric"],
                                                                          b["copies"]), name
        assert a["checksum"] == b["checksum"], name  # the whole content, config included
    assert load_checkpoint(unbroken / "checkpoints" / "best.pt")["epoch"] + 1 == improved[-1]
    assert _records(killed) == _records(unbroken)
    assert _test_metrics(killed) == _test_metrics(unbroken)
    assert (killed / "config_resolved.yaml").read_text() == (unbroken / "config_resolved.yaml").read_text()
    print(f"unbroken run and {len(PLAN)} attempts: {elapsed:.0f} s")
