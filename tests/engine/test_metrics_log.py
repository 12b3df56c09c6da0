"""x2ct/engine/metrics_log.py: JSON lines, float conversion, truncated last line, resume repair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from x2ct.engine.metrics_log import MetricsLog, read_metrics


def test_records_round_trip_as_floats(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.log(step=1, epoch=0, split="train", loss=torch.tensor(0.5), lr=np.float32(0.001))
        log.log(step=2, epoch=0, split="val", psnr=27, bad=float("nan"))
    records = read_metrics(path)
    assert [(r["step"], r["epoch"], r["split"]) for r in records] == [(1, 0, "train"), (2, 0, "val")]
    assert records[0]["loss"] == 0.5 and isinstance(records[0]["lr"], float)
    assert records[0]["lr"] == pytest.approx(0.001)
    assert isinstance(records[1]["psnr"], float) and math.isnan(records[1]["bad"])
    assert path.read_text().count("\n") == 2


def test_each_line_is_on_disk_before_close(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.log(step=0, epoch=0, split="train", loss=1.0)
    assert read_metrics(path)[0]["loss"] == 1.0  # flushed without close
    log.close()


def test_truncated_last_line_is_skipped_and_cut_on_reopen(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.log(step=0, epoch=0, split="train", loss=1.0)
    with open(path, "a") as f:
        f.write('{"step": 1, "epoch": 0, "spl')  # a crash mid-write
    assert [r["step"] for r in read_metrics(path)] == [0]
    with MetricsLog(path) as log:  # resume appends after the last complete line
        log.log(step=1, epoch=0, split="train", loss=0.5)
    assert [r["step"] for r in read_metrics(path)] == [0, 1]


def test_truncate_after_step_drops_records_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        for step in range(5):
            log.log(step=step, epoch=0, split="train", loss=float(step))
    with MetricsLog(path, truncate_after_step=2) as log:
        log.log(step=3, epoch=0, split="train", loss=30.0)
    records = read_metrics(path)
    assert [r["step"] for r in records] == [0, 1, 2, 3] and records[-1]["loss"] == 30.0


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        read_metrics(tmp_path / "missing.jsonl")


def test_bad_values_and_reserved_names_are_refused(tmp_path):
    with MetricsLog(tmp_path / "m.jsonl") as log:
        with pytest.raises(TypeError, match="'loss'"):
            log.log(step=0, epoch=0, split="train", loss="high")
        with pytest.raises(ValueError, match="time"):
            log.log(step=0, epoch=0, split="train", time=1.0)
        with pytest.raises(TypeError, match="'v'"):
            log.log(step=0, epoch=0, split="train", v=torch.ones(2))
    assert read_metrics(tmp_path / "m.jsonl") == []


def test_a_fresh_log_starts_empty_and_a_resumed_one_drops_the_splits_logged_after_checkpoints(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        for step in range(3):
            log.log(step=step, epoch=0, split="train", loss=float(step))
        log.log(step=2, epoch=0, split="test", psnr=20.0)  # logged after the last checkpoint (step 2)
    with MetricsLog(path, truncate_after_step=2, drop_splits=("test",)) as log:
        log.log(step=2, epoch=0, split="test", psnr=21.0)
    assert [(r["step"], r["split"]) for r in read_metrics(path)] == [(0, "train"), (1, "train"), (2, "train"),
                                                                      (2, "test")]
    assert read_metrics(path)[-1]["psnr"] == 21.0
    with MetricsLog(path, fresh=True) as log:  # a fresh start after a kill before the first checkpoint
        log.log(step=0, epoch=0, split="train", loss=9.0)
    assert [r["loss"] for r in read_metrics(path)] == [9.0]
