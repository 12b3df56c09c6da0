"""x2ct/engine/schedule.py: learning rates at known steps and a state_dict round trip."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from x2ct.engine.schedule import cosine_with_warmup, warmup_cosine_factor

BASE_LR = 0.1


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_learning_rate_at_known_steps():
    warmup, total, floor = 4, 14, 0.1
    opt = _optimizer()
    lrs = _lrs(cosine_with_warmup(opt, warmup, total, floor), opt, 20)
    # warmup: (s + 1) / warmup of the base
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    # cosine half-way (step 9 = warmup + 5 of 10 decay steps): floor + (1 - floor) / 2
    assert lrs[9] == pytest.approx(BASE_LR * (floor + (1 - floor) * 0.5))
    assert lrs[6] == pytest.approx(BASE_LR * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.2))))
    assert lrs[14:] == pytest.approx([BASE_LR * floor] * 6)  # at and after total_steps: the floor
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))  # never rises after warmup


def test_no_warmup_starts_at_base_lr():
    assert warmup_cosine_factor(0, 0, 10, 0.0) == 1.0
    assert warmup_cosine_factor(10, 0, 10, 0.0) == pytest.approx(0.0)
    assert warmup_cosine_factor(5, 10, 10, 0.2) == pytest.approx(0.6)  # all warmup: ends at the base lr
    assert warmup_cosine_factor(10, 10, 10, 0.2) == pytest.approx(0.2)


def test_state_dict_round_trip_resumes_the_curve(tmp_path):
    warmup, total = 3, 12
    opt = _optimizer()
    sched = cosine_with_warmup(opt, warmup, total, 0.05)
    _lrs(sched, opt, 5)
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.pt")
    expected = _lrs(sched, opt, 8)

    state = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2 = _optimizer()
    sched2 = cosine_with_warmup(opt2, warmup, total, 0.05)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert sched2.last_epoch == 5
    assert _lrs(sched2, opt2, 8) == pytest.approx(expected)


@pytest.mark.parametrize(("warmup", "total", "floor", "match"), [
    (0, 0, 0.0, "total_steps"), (11, 10, 0.0, "warmup_steps"), (-1, 10, 0.0, "warmup_steps"),
    (0, 10, 1.5, "min_lr_ratio"),
])
def test_bad_arguments_are_refused(warmup, total, floor, match):
    with pytest.raises(ValueError, match=match):
        cosine_with_warmup(_optimizer(), warmup, total, floor)
