"""x2ct/engine/ema.py: the EMA recursion against its closed form, buffers, wrappers, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from x2ct.engine.ema import ModelEMA


class OneWeight(nn.Module):
    """One parameter and one buffer: the smallest model the EMA math can be checked on."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))
        self.register_buffer("seen", torch.tensor([0.0]))


def test_average_matches_closed_form():
    decay = 0.9
    model = OneWeight(1.0)
    ema = ModelEMA(model, decay)
    values = [2.0, -1.0, 4.0]
    expected = 1.0
    for v in values:
        with torch.no_grad():
            model.w.fill_(v)
            model.seen.fill_(v * 10)
        ema.update(model)
        expected = decay * expected + (1 - decay) * v
    assert ema.module.w.item() == pytest.approx(expected, rel=1e-6)
    # closed form: d^n w0 + (1-d) sum_k d^(n-1-k) v_k
    n = len(values)
    closed = decay**n * 1.0 + (1 - decay) * sum(decay ** (n - 1 - k) * v for k, v in enumerate(values))
    assert ema.module.w.item() == pytest.approx(closed, rel=1e-6)
    assert ema.module.seen.item() == 40.0  # buffers are copied, not averaged
    assert ema.updates == n
    assert model.w.item() == 4.0  # the trained model is untouched


def test_copy_is_independent_eval_and_frozen():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    ema = ModelEMA(model, 0.99)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert ema.module[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_decay_zero_copies_and_one_freezes():
    model = OneWeight(1.0)
    copy_ema, frozen = ModelEMA(model, 0.0), ModelEMA(model, 1.0)
    with torch.no_grad():
        model.w.fill_(5.0)
    copy_ema.update(model)
    frozen.update(model)
    assert copy_ema.module.w.item() == 5.0 and frozen.module.w.item() == 1.0
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, 1.5)


def test_update_through_compile_wrapper():
    model = OneWeight(0.0)
    ema = ModelEMA(torch.compile(model), 0.5)
    with torch.no_grad():
        model.w.fill_(2.0)
    ema.update(torch.compile(model))
    assert ema.module.w.item() == 1.0
    assert list(ema.state_dict()["module"]) == ["w", "seen"]


def test_state_dict_round_trip_keeps_configured_decay(tmp_path):
    model = OneWeight(1.0)
    ema = ModelEMA(model, 0.9)
    with torch.no_grad():
        model.w.fill_(3.0)
    ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    fresh = ModelEMA(OneWeight(0.0), 0.5)
    fresh.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert fresh.module.w.item() == pytest.approx(ema.module.w.item())
    assert fresh.updates == 1 and fresh.decay == 0.5


def test_mismatched_model_names_the_parameter():
    ema = ModelEMA(OneWeight(1.0), 0.9)
    with pytest.raises(KeyError, match="'w'"):
        ema.update(nn.Linear(1, 1))
