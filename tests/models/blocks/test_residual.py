import pytest
import torch

from x2ct.models.blocks.residual import ResidualBlock


@pytest.mark.parametrize("dims", [2, 3])
def test_residual_block_shapes_and_projection_shortcut(dims):
    x = torch.rand(2, 4, *(6,) * dims)
    same = ResidualBlock(dims, 4)
    assert isinstance(same.shortcut, torch.nn.Identity)
    assert same(x).shape == x.shape
    wider = ResidualBlock(dims, 4, 8)
    assert wider(x).shape == (2, 8, *(6,) * dims)


def test_residual_branch_adds_to_the_input():
    # with the residual branch's last norm zeroed the block reduces to act(x)
    block = ResidualBlock(3, 4, act="relu")
    with torch.no_grad():
        block.conv2.norm.weight.zero_()
        block.conv2.norm.bias.zero_()
    x = torch.randn(1, 4, 5, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_dropout_is_active_only_in_training():
    block = ResidualBlock(3, 4, dropout=0.5)
    x = torch.rand(2, 4, 4, 4, 4)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    torch.manual_seed(0)
    a = block(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, block(x))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        ResidualBlock(3, 4, dropout=1.0)
