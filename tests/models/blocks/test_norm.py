import pytest
import torch
from torch import nn

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.norm import make_norm


def test_make_norm_builds_the_named_layer():
    assert isinstance(make_norm("instance", 4, 3), nn.InstanceNorm3d)
    assert make_norm("instance", 4, 3).affine
    assert isinstance(make_norm("batch", 4, 2), nn.BatchNorm2d)
    assert isinstance(make_norm("none", 4, 2), nn.Identity)
    # 12 channels cannot be split in 8 groups: the largest divisor not above 8 is 4
    assert make_norm("group", 12, 3).num_groups == 4
    assert make_norm("group", 32, 3).num_groups == 8


def test_unknown_names_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown norm 'layernorm'.*instance"):
        make_norm("layernorm", 4, 3)
    with pytest.raises(ValueError, match=r"unknown activation 'tanh'.*leaky_relu"):
        make_activation("tanh")


def test_leaky_relu_slope():
    torch.testing.assert_close(make_activation("leaky_relu")(torch.tensor([-1.0, 2.0])), torch.tensor([-0.2, 2.0]))


def test_layer_norm_normalises_each_voxel_over_its_channels_alone():
    """Against torch's LayerNorm on channels-last features; a patch of the input gives the same patch out."""
    norm = make_norm("layer", 6, 3)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 4, 3) * 3 + 1
    reference = nn.LayerNorm(6, eps=1e-6)
    reference.load_state_dict({"weight": norm.weight, "bias": norm.bias})
    expected = reference(x.movedim(1, -1)).movedim(-1, 1)
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm(x[..., 1:3, :2, 1:]), expected[..., 1:3, :2, 1:])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_instance_group_is_instance_norm_in_values_gradients_and_state_dict(spatial_dims):
    instance, grouped = make_norm("instance", 6, spatial_dims), make_norm("instance_group", 6, spatial_dims)
    assert isinstance(grouped, nn.GroupNorm) and grouped.num_groups == 6
    assert (grouped.eps, grouped.affine) == (instance.eps, instance.affine)
    with torch.no_grad():
        instance.weight.normal_()
        instance.bias.normal_()
    grouped.load_state_dict(instance.state_dict())  # same names and shapes: checkpoints load either way
    assert list(grouped.state_dict()) == list(instance.state_dict())
    x = (torch.randn(2, 6, *(5, 4, 3)[:spatial_dims]) * 3 + 1).requires_grad_()
    weights = torch.randn(x.shape)
    outs, grads = [], []
    for norm in (instance, grouped):
        out = norm(x)
        outs.append(out)
        grads.append(torch.autograd.grad((out * weights).sum(), [x, norm.weight, norm.bias]))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_instance_group_keeps_channels_last_3d_on_the_cpu():
    x = torch.randn(2, 6, 5, 4, 3).contiguous(memory_format=torch.channels_last_3d)
    assert make_norm("instance_group", 6, 3)(x).is_contiguous(memory_format=torch.channels_last_3d)
