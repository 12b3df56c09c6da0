"""Tests for x2ct/adversarial/objectives.py: closed forms, optima, R1 on a linear D, the weight schedule."""

from __future__ import annotations

import math

import pytest
import torch

from x2ct.adversarial.objectives import (
    ADVERSARIAL_OBJECTIVES,
    adversarial_weight,
    discriminator_loss,
    generator_loss,
    r1_penalty,
)

REAL = torch.tensor([2.0, 0.0, -1.0])
FAKE = torch.tensor([1.0, -2.0, 0.5])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(("kind", "d_expected", "g_expected"), [
    # D: 0.5 * (mean((r - 1)^2) + mean(f^2)); G: 0.5 * mean((f - 1)^2)
    ("lsgan", 0.5 * ((1 + 1 + 4) / 3 + (1 + 4 + 0.25) / 3), 0.5 * (0 + 9 + 0.25) / 3),
    # D: mean(relu(1 - r)) + mean(relu(1 + f)); G: -mean(f)
    ("hinge", (0 + 1 + 2) / 3 + (2 + 0 + 1.5) / 3, -(1 - 2 + 0.5) / 3),
    # D: mean(softplus(-r)) + mean(softplus(f)); G: mean(softplus(-f))
    ("non_saturating", sum(softplus(-r) for r in (2.0, 0.0, -1.0)) / 3 + sum(softplus(f) for f in (1.0, -2.0, 0.5)) / 3,
     sum(softplus(-f) for f in (1.0, -2.0, 0.5)) / 3),
])
def test_closed_form_values(kind, d_expected, g_expected):
    assert discriminator_loss(kind, REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert generator_loss(kind, FAKE).item() == pytest.approx(g_expected, rel=1e-6)


def test_lsgan_optimum_is_zero():
    real, fake = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert discriminator_loss("lsgan", real, fake).item() == 0.0
    assert generator_loss("lsgan", torch.ones(4)).item() == 0.0
    assert discriminator_loss("lsgan", real, fake + 0.1).item() > 0.0


def test_hinge_is_zero_beyond_the_margin_and_positive_inside():
    assert discriminator_loss("hinge", torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0])).item() == 0.0
    assert discriminator_loss("hinge", torch.tensor([0.9, 3.0]), torch.tensor([-1.0, -5.0])).item() > 0.0


def test_non_saturating_is_cross_entropy_and_vanishes_for_confident_d():
    real, fake = torch.tensor([0.3]), torch.tensor([-0.7])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, torch.ones(1)) + bce(fake, torch.zeros(1))
    assert discriminator_loss("non_saturating", real, fake).item() == pytest.approx(expected.item(), rel=1e-6)
    assert discriminator_loss("non_saturating", torch.tensor([30.0]), torch.tensor([-30.0])).item() < 1e-10


def test_lists_of_logits_are_averaged():
    reals, fakes = [REAL, torch.ones(2, 1, 2, 2)], [FAKE, torch.zeros(2, 1, 2, 2)]
    for kind in ADVERSARIAL_OBJECTIVES:
        per_scale_d = [discriminator_loss(kind, r, f) for r, f in zip(reals, fakes, strict=True)]
        per_scale_g = [generator_loss(kind, f) for f in fakes]
        assert discriminator_loss(kind, reals, fakes).item() == pytest.approx(sum(per_scale_d).item() / 2)
        assert generator_loss(kind, fakes).item() == pytest.approx(sum(per_scale_g).item() / 2)


def test_generator_gradient_pushes_fake_logits_up():
    for kind in ADVERSARIAL_OBJECTIVES:
        fake = torch.tensor([-0.5, 0.2], requires_grad=True)
        generator_loss(kind, fake).backward()
        assert (fake.grad < 0).all(), kind


def test_r1_is_squared_norm_of_w_for_a_linear_discriminator():
    torch.manual_seed(0)
    w = torch.randn(1, 2, 3, 4, requires_grad=True)
    x = torch.randn(5, 2, 3, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(dim=1)  # D(x) = <w, x>, one logit per sample
    penalty = r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-6)
    # create_graph: the penalty back-propagates into D's parameters, d||w||^2/dw = 2w
    penalty.backward()
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_r1_with_several_logit_maps_adds_their_gradients():
    w1, w2 = torch.randn(1, 6), torch.randn(1, 6)
    x = torch.randn(3, 6, requires_grad=True)
    penalty = r1_penalty([(x * w1).sum(1), (x * w2).sum(1)], x)
    assert penalty.item() == pytest.approx((w1 + w2).pow(2).sum().item(), rel=1e-5)


def test_r1_needs_inputs_that_require_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(2, requires_grad=True), torch.zeros(2, 3))


@pytest.mark.parametrize(("epoch", "expected"), [(0, 0.0), (2, 0.0), (3, 0.025), (4, 0.05), (6, 0.1), (7, 0.1),
                                                 (50, 0.1)])
def test_weight_schedule_off_then_linear_ramp(epoch, expected):
    # off for epochs 0-2, ramps over 4 epochs (3: 1/4, 4: 2/4, 5: 3/4, 6: full)
    assert adversarial_weight(epoch, start_epoch=3, ramp_epochs=4, weight=0.1) == pytest.approx(expected)


def test_weight_schedule_without_ramp_switches_on_at_start():
    assert adversarial_weight(1, start_epoch=2, ramp_epochs=0, weight=0.5) == 0.0
    assert adversarial_weight(2, start_epoch=2, ramp_epochs=0, weight=0.5) == 0.5


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'wgan'.*lsgan.*hinge.*non_saturating"):
        discriminator_loss("wgan", REAL, FAKE)
    with pytest.raises(ValueError, match="wgan"):
        generator_loss("wgan", FAKE)
    with pytest.raises(ValueError, match="2 real logit tensors but 1 fake"):
        discriminator_loss("hinge", [REAL, REAL], [FAKE])
    with pytest.raises(ValueError, match="empty"):
        generator_loss("hinge", [])
    with pytest.raises(ValueError, match="ramp_epochs"):
        adversarial_weight(0, start_epoch=0, ramp_epochs=-1, weight=1.0)
    with pytest.raises(ValueError, match="weight"):
        adversarial_weight(0, start_epoch=0, ramp_epochs=1, weight=-1.0)
