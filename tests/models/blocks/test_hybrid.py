import pytest
import torch

from x2ct.models.blocks.hybrid import TransformerEnhancedBlock3D


@pytest.mark.parametrize(("cin", "cout"), [(4, 8), (8, 8)])
@pytest.mark.parametrize("size", [(8, 8, 8), (5, 6, 7)])
def test_shapes_and_shortcut(cin, cout, size):
    block = TransformerEnhancedBlock3D(cin, cout, num_heads=2)
    assert isinstance(block.shortcut, torch.nn.Identity) == (cin == cout)
    out = block(torch.randn(2, cin, *size))
    assert out.shape == (2, cout, *size) and torch.isfinite(out).all()


def _far_change(block: TransformerEnhancedBlock3D) -> float:
    """How much voxel (7, 7, 7)'s output moves when voxel (0, 0, 0) of an 8^3 input changes."""
    torch.manual_seed(1)
    x = torch.randn(1, 4, 8, 8, 8)
    moved = x.clone()
    moved[0, :, 0, 0, 0] += 3 * torch.randn(4)
    with torch.no_grad():
        return (block(moved) - block(x))[0, :, 7, 7, 7].abs().max().item()


def test_the_global_branch_reaches_beyond_the_convolution():
    # norm="none": an instance norm would couple all voxels through its statistics and hide what the branches do.
    # One 8^3 window: (0, 0, 0) and (7, 7, 7) are far outside each other's 3x3x3 neighbourhood.
    torch.manual_seed(0)
    block = TransformerEnhancedBlock3D(4, 8, num_heads=2, window_size=8, depth=1, norm="none").eval()
    assert _far_change(block) > 1e-4
    # control: without the global branch's input the far voxel is unaffected
    with torch.no_grad():
        block.project.weight.zero_()
    assert _far_change(block) == 0.0


def test_gradients_reach_every_parameter():
    block = TransformerEnhancedBlock3D(4, 8, num_heads=2, window_size=4, depth=2)
    block(torch.randn(2, 4, 5, 6, 7)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
