"""x2ct/engine/step.py: one optimizer step without host-device synchronisation, skipping non-finite steps on the
device, and the on-device loss window."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from x2ct.engine.ema import ModelEMA
from x2ct.engine.precision import resolve_precision
from x2ct.engine.step import TrainStep
from x2ct.losses import ReconstructionLoss
from x2ct.models import Reconstruction, ReconstructionModel


class TinyVolumeModel(ReconstructionModel):
    """(B, V, 1, 8, 8) views -> (B, 1, 8, 8, 8): a linear lift, enough to have gradients."""

    num_views, volume_size = 2, 8

    def __init__(self) -> None:
        super().__init__()
        self.lift = nn.Linear(2 * 64, 512)

    def forward(self, views, angles_deg=None):
        return Reconstruction(self.lift(views.flatten(1)).view(-1, 1, 8, 8, 8))


def make_step(optimizer_factory, ema_decay=None):
    torch.manual_seed(0)
    model = TinyVolumeModel()
    optimizer = optimizer_factory(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = ModelEMA(model, ema_decay) if ema_decay else None
    step = TrainStep(model, model, ReconstructionLoss({"l1": 1.0}), optimizer, scheduler, None, ema,
                     torch.device("cpu"), resolve_precision("fp32", torch.device("cpu")), 1.0, world_size=1)
    return model, step


def batch(nan=False):
    target = torch.rand(2, 1, 8, 8, 8)
    if nan:
        target[0, 0, 0, 0, 0] = float("nan")
    return {"views": torch.rand(2, 2, 1, 8, 8), "ct": target, "angles_deg": torch.tensor([[0.0, 90.0]] * 2)}


@contextlib.contextmanager
def no_host_sync(monkeypatch):
    """Every way a tensor's value reaches Python raises: the step must never wait for the device."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("host-device synchronisation inside the training step")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__"):
            patch.setattr(torch.Tensor, name, refuse)
        yield


def fused_adamw(params):
    return torch.optim.AdamW(params, lr=1e-2, fused=True)


def test_the_step_never_reads_a_tensor_on_the_host(monkeypatch):
    model, step = make_step(fused_adamw, ema_decay=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    with no_host_sync(monkeypatch):
        step([batch(), batch()])  # an accumulation group of two micro-batches
        step([batch(nan=True)])   # a non-finite step: skipped on the device
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    values = step.read_window()  # the one read, at a logging step
    assert values["skipped_nonfinite"] == 1 and values["nonfinite_in_a_row"] == 1
    assert torch.isfinite(torch.tensor(values["loss"]))


@pytest.mark.parametrize("factory", [fused_adamw, lambda params: torch.optim.SGD(params, lr=0.1, fused=False)],
                         ids=["fused: skipped on the device", "not fused: the host decides"])
def test_a_nonfinite_step_changes_neither_weights_nor_ema(factory):
    model, step = make_step(factory, ema_decay=0.5)
    step([batch()])
    weights = [p.detach().clone() for p in model.parameters()]
    average = [p.detach().clone() for p in step.ema.module.parameters()]
    step([batch(nan=True)])
    for a, b in zip(weights, model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(average, step.ema.module.parameters(), strict=True):
        assert torch.equal(a, b)
    step([batch()])
    assert not torch.equal(weights[0], next(model.parameters()))
    assert step.read_window()["skipped_nonfinite"] == 1


def test_the_window_holds_means_over_micro_batches_and_resets():
    _, step = make_step(fused_adamw)
    step([batch(), batch()])
    step([batch()])
    values = step.read_window()
    assert set(values) >= {"loss", "loss_l1", "skipped_nonfinite", "grad_norm", "nonfinite_in_a_row"}
    assert values["loss"] == pytest.approx(values["loss_l1"])
    assert step.read_window().get("loss") is None  # reset
