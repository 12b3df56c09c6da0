import pytest
import torch

from x2ct.models.blocks.conv import ConvNormAct


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_norm_act_keeps_or_halves_the_size(dims):
    x = torch.rand(2, 3, *(8,) * dims)
    assert ConvNormAct(dims, 3, 5)(x).shape == (2, 5, *(8,) * dims)
    assert ConvNormAct(dims, 3, 5, stride=2)(x).shape == (2, 5, *(4,) * dims)


def test_conv_has_a_bias_only_without_norm():
    assert ConvNormAct(3, 2, 4, norm="instance").conv.bias is None
    assert ConvNormAct(3, 2, 4, norm="none").conv.bias is not None


def test_instance_norm_output_has_zero_mean_unit_variance_before_activation():
    block = ConvNormAct(2, 1, 4, norm="instance", act=None)
    y = block(torch.rand(3, 1, 16, 16))
    torch.testing.assert_close(y.mean(dim=(2, 3)), torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(2, 3), unbiased=False), torch.ones(3, 4), atol=1e-3, rtol=0)


def test_conv_rejects_even_kernels_and_other_dims():
    with pytest.raises(ValueError, match="odd"):
        ConvNormAct(2, 1, 1, kernel_size=4)
    with pytest.raises(ValueError, match="spatial_dims"):
        ConvNormAct(1, 1, 1)
