import pytest
import torch
import torch.nn.functional as F

from x2ct.models.blocks.resample import Downsample, Upsample, resize2d


@pytest.mark.parametrize("dims", [2, 3])
def test_down_and_up_sampling_halve_and_double(dims):
    x = torch.rand(2, 4, *(8,) * dims)
    down = Downsample(dims, 4, 8)(x)
    assert down.shape == (2, 8, *(4,) * dims)
    assert Upsample(dims, 8, 4)(down).shape == x.shape


def test_resize2d_averages_when_shrinking_and_interpolates_when_growing():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(resize2d(x, 8), F.avg_pool2d(x, 2))
    assert resize2d(x, 16) is x
    grown = resize2d(x, 32)
    assert grown.shape == (2, 3, 32, 32)
    torch.testing.assert_close(grown.mean(), x.mean(), atol=1e-2, rtol=0)
