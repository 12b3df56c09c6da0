import pytest
import torch
from torch import nn

from x2ct.losses import (
    LOSS_COMPONENTS,
    LossComponent,
    ReconstructionLoss,
    build_loss_component,
    register_loss_component,
)
from x2ct.losses.l1 import L1Loss
from x2ct.models import Reconstruction


@pytest.fixture
def scratch_registry():
    saved = dict(LOSS_COMPONENTS)
    yield LOSS_COMPONENTS
    LOSS_COMPONENTS.clear()
    LOSS_COMPONENTS.update(saved)


def test_l1_is_registered_on_import():
    assert isinstance(build_loss_component("l1"), L1Loss)


def test_a_registered_component_is_usable_by_name_with_its_arguments(scratch_registry):
    @register_loss_component("scaled_l2")
    class ScaledL2(LossComponent):
        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, pred, target):
            return self.scale * (pred - target).square().mean()

    loss = ReconstructionLoss({"scaled_l2": 2.0}, component_kwargs={"scaled_l2": {"scale": 3.0}})
    total, parts = loss(Reconstruction(torch.zeros(4)), torch.ones(4))
    assert parts["scaled_l2"].item() == pytest.approx(3.0)
    assert total.item() == pytest.approx(6.0)


def test_registering_a_taken_name_fails(scratch_registry):
    with pytest.raises(ValueError, match=r"'l1' is already registered by L1Loss"):
        register_loss_component("l1")(type("OtherL1", (LossComponent,), {}))


def test_a_component_that_declares_no_inputs_is_refused_naming_the_base(scratch_registry):
    with pytest.raises(TypeError, match=r"'plain': Plain must subclass x2ct\.losses\.LossComponent"):
        register_loss_component("plain")(type("Plain", (nn.Module,), {}))
    assert "plain" not in LOSS_COMPONENTS


def test_unknown_component_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown loss component 'ssmi'; known components: \[.*'l1'"):
        build_loss_component("ssmi")
