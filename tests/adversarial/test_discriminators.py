"""Tests for x2ct/adversarial/discriminators.py: shapes, patch size, conditioning, spectral norm, gradients."""

from __future__ import annotations

import pytest
import torch

from x2ct.adversarial.discriminators import (
    PatchDiscriminator,
    PatchGAN2D,
    PatchGAN3D,
    layers_for_receptive_field,
    patch_summary,
    receptive_field,
    resolve_patch_layers,
)


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
        PatchGAN2D(norm="layernorm")


@pytest.mark.parametrize(("num_layers", "size"), [(1, 32), (2, 64)])
def test_3d_receptive_field_measured_by_gradient(num_layers, size):
    # norm "none": instance norm's statistics couple every voxel to every logit
    torch.manual_seed(0)
    d = PatchGAN3D(base_channels=2, num_layers=num_layers, norm="none")
    x = torch.rand(1, 1, size, size, size, requires_grad=True)
    out = d(x)
    centre = [n // 2 for n in out.shape[2:]]
    out[0, 0, centre[0], centre[1], centre[2]].backward()
    seen = torch.nonzero(x.grad[0, 0])
    extent = (seen.max(dim=0).values - seen.min(dim=0).values + 1).tolist()
    assert (seen.min(dim=0).values > 0).all() and (seen.max(dim=0).values < size - 1).all()  # padding clips nothing
    assert extent == [receptive_field(num_layers)] * 3


@pytest.mark.parametrize(("field", "side", "layers"), [
    (0.5, 32, 1),    # 16 voxels: 1 layer (16); 2 layers' 34 > 16
    (0.5, 64, 1),    # 32 voxels: 34 > 32, so still 1 layer
    (0.5, 128, 2),   # 64 voxels: 34 <= 64 < 70
    (0.5, 256, 3),   # 128 voxels: 70 <= 128 < 142
    (1.0, 32, 1),    # the whole side: 16 <= 32 < 34
    (1.0, 64, 2),
    (1.0, 70, 3),    # exactly the 3-layer field
    (34, 32, 2),     # voxels, whatever the side
    (69, 256, 2),
    (70, 256, 3),
    (16, 8, 1),
])
def test_layers_for_receptive_field(field, side, layers):
    assert layers_for_receptive_field(field, side) == layers
    limit = field * side if isinstance(field, float) else field
    assert receptive_field(layers) <= limit < receptive_field(layers + 1)


def test_resolve_patch_layers_sets_num_layers_and_drops_receptive_field():
    spec = {"_target_": "x2ct.adversarial.discriminators.PatchGAN3D", "num_layers": None, "receptive_field": 0.5}
    assert resolve_patch_layers(spec, 128, "adversarial.discriminators.volume") == {
        "_target_": "x2ct.adversarial.discriminators.PatchGAN3D", "num_layers": 2}
    assert resolve_patch_layers({"num_layers": 3, "receptive_field": None}, 32, "d") == {"num_layers": 3}
    assert resolve_patch_layers({"base_channels": 4}, 32, "d") == {"base_channels": 4}  # the class default
    assert spec["receptive_field"] == 0.5  # the caller's config is left as it was


@pytest.mark.parametrize(("spec", "side", "message"), [
    ({"num_layers": 2, "receptive_field": 0.5}, 64,
     r"adversarial\.discriminators\.volume: num_layers=2 and receptive_field=0\.5 are both set"),
    ({"num_layers": None, "receptive_field": None}, 64,
     r"adversarial\.discriminators\.volume: num_layers and receptive_field are both null"),
    ({"num_layers": None, "receptive_field": 0.25}, 32,
     r"adversarial\.discriminators\.volume\.receptive_field=0\.25 allows 8 voxels of a 32-voxel side, less than the "
     r"16 of one layer"),
    ({"num_layers": None, "receptive_field": 15}, 64, r"adversarial\.discriminators\.volume\.receptive_field=15 "),
    *(({"num_layers": None, "receptive_field": bad}, 64,
       rf"adversarial\.discriminators\.volume\.receptive_field must be a fraction in \(0, 1\] of the side or a whole "
       rf"number of voxels >= 1, got {bad!r}") for bad in (0.0, -0.5, 1.5, 0, -3, True, "half")),
])
def test_resolve_patch_layers_refuses_bad_keys(spec, side, message):
    with pytest.raises(ValueError, match=message):
        resolve_patch_layers(spec, side, "adversarial.discriminators.volume")


@pytest.mark.parametrize(("num_layers", "size"), [(1, (32, 32, 32)), (2, (64, 64, 64)), (2, (24, 32, 40)),
                                                  (3, (32, 32, 32))])
def test_logit_shape_matches_the_forward_pass(num_layers, size):
    d = PatchGAN3D(base_channels=1, num_layers=num_layers)
    assert d.logit_shape(size) == tuple(d(torch.rand(1, 1, *size)).shape[2:])


def test_patch_summary_says_what_one_logit_sees():
    assert patch_summary(PatchGAN3D(base_channels=1, num_layers=1), (32, 32, 32)) == (
        "1 layer, receptive field 16 voxels of a 32^3 volume (14^3 logits)")
    assert patch_summary(PatchGAN3D(base_channels=1, num_layers=2), (64, 64, 64)) == (
        "2 layers, receptive field 34 voxels of a 64^3 volume (14^3 logits)")
    assert patch_summary(PatchGAN2D(base_channels=1, num_layers=1), (64, 48)) == (
        "1 layer, receptive field 16 pixels of 64x48 views (30x22 logits)")
