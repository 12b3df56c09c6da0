import pytest
import torch

from x2ct.models.blocks.dense import MIN_GROWTH, ResidualDenseBlock3D


def _impulse_response(block: torch.nn.Module, size: int = 13) -> torch.Tensor:
    """|block(x + e_centre) - block(x)| summed over channels, (size, size, size), in float64."""
    torch.manual_seed(0)
    x = torch.randn(1, block.channels, size, size, size, dtype=torch.float64)
    bumped = x.clone()
    bumped[0, :, size // 2, size // 2, size // 2] += 1.0
    with torch.no_grad():
        return (block(bumped) - block(x)).abs().sum(dim=1)[0]


def _changed_radius(response: torch.Tensor) -> int:
    """Chebyshev radius (about the centre) of the voxels whose output changed."""
    centre = response.shape[0] // 2
    idx = (response > 1e-12).nonzero() - centre
    return int(idx.abs().max())


def test_shapes_and_dense_input_widths():
    block = ResidualDenseBlock3D(channels=6, growth=4, layers=4)
    assert [layer.conv.in_channels for layer in block.layers] == [6, 10, 14, 18]
    assert all(layer.conv.out_channels == 4 for layer in block.layers)
    assert (block.fuse.in_channels, block.fuse.out_channels) == (22, 6)
    x = torch.randn(2, 6, 5, 4, 6)
    assert block(x).shape == x.shape
    assert ResidualDenseBlock3D(64).growth == 32
    assert ResidualDenseBlock3D(4).growth == MIN_GROWTH


@pytest.mark.parametrize("layers", [2, 4])
def test_receptive_field_is_2_layers_plus_1_wide(layers):
    torch.manual_seed(0)
    block = ResidualDenseBlock3D(channels=3, growth=3, layers=layers, norm="none").double()
    response = _impulse_response(block)
    assert _changed_radius(response) == layers
    c, r = response.shape[0] // 2, layers
    assert (response[c - r:c + r + 1, c - r:c + r + 1, c - r:c + r + 1] > 1e-12).all()


def test_fusion_reads_the_input_and_every_layer_output():
    # keeping only the fusion weights that read one slice of cat[x, y_1, ..., y_L] shows which features it reads:
    # x alone is a point (radius 0), y_k has radius k
    channels, growth, layers = 3, 2, 3
    torch.manual_seed(0)
    block = ResidualDenseBlock3D(channels, growth=growth, layers=layers, norm="none").double()
    full = block.fuse.weight.detach().clone()
    slices = [slice(0, channels)] + [slice(channels + k * growth, channels + (k + 1) * growth) for k in range(layers)]
    for k, part in enumerate(slices):
        with torch.no_grad():
            block.fuse.weight.zero_()
            block.fuse.weight[:, part] = full[:, part]
        assert _changed_radius(_impulse_response(block, size=9)) == k, f"slice {k}"


def test_zero_fusion_is_the_identity_and_residual_scale_scales_the_branch():
    block = ResidualDenseBlock3D(4, growth=3)
    x = torch.randn(1, 4, 5, 5, 5)
    branch = block(x) - x
    block.residual_scale = 0.2
    torch.testing.assert_close(block(x) - x, 0.2 * branch)
    with torch.no_grad():
        block.fuse.weight.zero_()
        block.fuse.bias.zero_()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_gradients_reach_every_parameter():
    block = ResidualDenseBlock3D(4, growth=3, layers=3)
    x = torch.randn(2, 4, 5, 5, 5, requires_grad=True)
    block(x).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"expected \(B, 4, D, H, W\), got \(1, 3, 5, 5, 5\)"):
        ResidualDenseBlock3D(4)(torch.randn(1, 3, 5, 5, 5))
    with pytest.raises(ValueError, match=r"growth=8, layers=0"):
        ResidualDenseBlock3D(4, layers=0)
