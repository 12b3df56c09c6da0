"""Tests for x2ct/adversarial/discriminators.py: shapes, patch size, conditioning, spectral norm, gradients."""

from __future__ import annotations

import pytest
import torch

from x2ct.adversarial.discriminators import PatchDiscriminator, PatchGAN2D, PatchGAN3D, receptive_field


def test_receptive_field_matches_pix2pix():
    assert receptive_field(3) == 70  # the "70 x 70 PatchGAN" of Isola et al.
    assert receptive_field(1) == 16
    assert receptive_field(2) == 34


@pytest.mark.parametrize(("num_layers", "size", "expected"), [(2, 32, 6), (3, 32, 2)])
def test_3d_output_shape(num_layers, size, expected):
    d = PatchGAN3D(base_channels=4, num_layers=num_layers)
    assert d(torch.rand(2, 1, size, size, size)).shape == (2, 1, expected, expected, expected)


def test_2d_output_shape_for_stacked_views():
    d = PatchGAN2D(base_channels=4)
    views = torch.rand(2 * 3, 1, 64, 48)  # (B * V, 1, rows, cols)
    assert d(views).shape == (6, 1, 6, 4)


def test_one_logit_sees_exactly_a_receptive_field_sized_patch():
    # without norm layers (whose statistics are global) a logit depends only on its patch of the input
    torch.manual_seed(0)
    d = PatchGAN2D(base_channels=4, num_layers=2, norm="none")
    x = torch.rand(1, 1, 64, 64, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert rows.max() - rows.min() + 1 == d.receptive_field == 34
    assert cols.max() - cols.min() + 1 == 34


def test_condition_changes_the_output_and_is_checked():
    torch.manual_seed(0)
    d = PatchGAN3D(condition_channels=2, base_channels=4, num_layers=2)
    x = torch.rand(1, 1, 16, 16, 16)
    a, b = torch.rand(1, 2, 16, 16, 16), torch.rand(1, 2, 16, 16, 16)
    assert not torch.allclose(d(x, a), d(x, b))
    with pytest.raises(ValueError, match="condition_channels=2"):
        d(x)
    with pytest.raises(ValueError, match="does not match"):
        d(x, torch.rand(1, 2, 8, 16, 16))
    with pytest.raises(ValueError, match="condition_channels=0"):
        PatchGAN3D(base_channels=4)(x, a)
    with pytest.raises(ValueError, match="5-D input"):
        d(torch.rand(1, 16, 16, 16), a)


def test_spectral_norm_bounds_every_conv_weight():
    torch.manual_seed(0)
    d = PatchGAN3D(base_channels=4, num_layers=2, norm="none", spectral_norm=True)
    x = torch.rand(1, 1, 16, 16, 16)
    for _ in range(5):  # power iterations run in training-mode forward passes
        d(x)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 4
    for conv in convs:
        assert hasattr(conv, "parametrizations")
        sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(conv.weight.shape[0], -1), ord=2)
        assert sigma.item() == pytest.approx(1.0, rel=0.05)


def test_without_spectral_norm_weights_are_plain():
    d = PatchGAN2D(base_channels=4, num_layers=2, norm="none")
    assert not any(hasattr(m, "parametrizations") for m in d.modules())


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_gradients_reach_all_parameters_and_the_input(norm):
    torch.manual_seed(0)
    d = PatchGAN3D(condition_channels=1, base_channels=4, num_layers=2, norm=norm, spectral_norm=norm == "none")
    x = torch.rand(2, 1, 16, 16, 16, requires_grad=True)
    cond = torch.rand(2, 1, 16, 16, 16, requires_grad=True)
    d(x, cond).square().mean().backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0 and cond.grad.abs().sum() > 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="spatial_dims"):
        PatchDiscriminator(spatial_dims=1)
    with pytest.raises(ValueError, match="num_layers"):
        PatchGAN2D(num_layers=0)
    with pytest.raises(ValueError, match="unknown norm"):
        PatchGAN2D(norm="layer")
