"""x2ct/engine/progress.py: plain log lines without a TTY, a live bar with one, silence when disabled."""

from __future__ import annotations

import io

import pytest
import torch

from x2ct.progress import Progress, format_postfix


def test_plain_lines_every_log_every_steps_without_carriage_returns():
    stream = io.StringIO()
    with Progress(10, "train epoch 1", log_every=4, stream=stream) as bar:
        for step in range(10):
            bar.update(1, loss=torch.tensor(1.0 / (step + 1)), lr=0.001)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3  # at 4, at 8, and the final 10 at close
    assert lines[0].startswith("train epoch 1: 4/10 (40%)")
    assert lines[-1].startswith("train epoch 1: 10/10 (100%)")
    assert lines[-1].endswith("loss=0.1 lr=0.001")  # the latest metrics


def test_no_extra_final_line_when_already_logged():
    stream = io.StringIO()
    with Progress(None, "eval", log_every=2, stream=stream) as bar:
        bar.update(2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval: 2 ")  # unknown total: no percentage


def test_tty_shows_a_bar_with_live_metrics():
    stream = io.StringIO()
    with Progress(5, "train", stream=stream, tty=True) as bar:
        for _ in range(5):
            bar.update(1, loss=0.25)
    text = stream.getvalue()
    assert "\r" in text and "5/5" in text and "loss=0.25" in text


def test_disabled_writes_nothing():
    stream = io.StringIO()
    with Progress(5, "train", enabled=False, log_every=1, stream=stream) as bar:
        bar.update(5, loss=1.0)
    assert stream.getvalue() == "" and bar.count == 0


def test_format_postfix_and_bad_log_every():
    assert format_postfix({"loss": 0.0123456, "step": 7, "psnr": torch.tensor(27.123456)}) == \
        "loss=0.01235 step=7 psnr=27.12"
    with pytest.raises(ValueError, match="log_every"):
        Progress(1, "x", log_every=0)
