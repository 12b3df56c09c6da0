import pytest
import torch

from x2ct.models.blocks.pyramid import MultiScaleFeaturePyramid


@pytest.mark.parametrize(("num_scales", "size"), [(4, 64), (3, 32)])
def test_shapes_and_out_channels(num_scales, size):
    pyramid = MultiScaleFeaturePyramid(in_channels=2, base_channels=4, num_scales=num_scales)
    widths = [4 * 2**i for i in range(num_scales)]
    assert pyramid.out_channels == widths
    outputs = pyramid(torch.randn(2, 2, size, size // 2))
    assert [tuple(o.shape) for o in outputs] == [(2, w, size // 2**i, size // 2 ** (i + 1))
                                                 for i, w in enumerate(widths)]


def test_one_width_for_all_levels():
    pyramid = MultiScaleFeaturePyramid(base_channels=4, num_scales=3, out_channels=6)
    assert pyramid.out_channels == [6, 6, 6]
    assert [o.shape[1] for o in pyramid(torch.randn(1, 1, 16, 16))] == [6, 6, 6]


def test_top_down_path_carries_context_to_the_finest_level():
    # norm="none": instance-norm statistics would spread any change everywhere and prove nothing
    torch.manual_seed(0)
    pyramid = MultiScaleFeaturePyramid(base_channels=4, num_scales=4, norm="none").double()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    bumped = x.clone()
    bumped[..., :2, :2] += 1.0  # top-left corner
    with torch.no_grad():
        finest_change = (pyramid(bumped)[0] - pyramid(x)[0]).abs()[0].sum(0)
        stem_change = (pyramid.stem(bumped) - pyramid.stem(x)).abs()[0].sum(0)
    assert finest_change[-1, -1] > 1e-10  # the opposite corner sees it
    assert stem_change[-1, -1] == 0  # the bottom-up finest level alone does not
    assert stem_change[8:, 8:].abs().max() == 0


def test_rejects_sizes_not_divisible_by_the_coarsest_stride():
    pyramid = MultiScaleFeaturePyramid(base_channels=4, num_scales=3)
    with pytest.raises(ValueError, match=r"input size 30x30 must be divisible by 4"):
        pyramid(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match=r"expected \(B, 1, H, W\)"):
        pyramid(torch.randn(1, 3, 32, 32))


def test_gradients_reach_every_parameter():
    pyramid = MultiScaleFeaturePyramid(base_channels=4, num_scales=3)
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    sum(o.square().sum() for o in pyramid(x)).backward()
    for name, p in pyramid.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
