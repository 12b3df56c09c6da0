import pytest
import torch
import torch.nn.functional as F

from x2ct.models.view_blocks.cross_view import CrossViewAttention


def _block(dim=8, heads=2, seed=0) -> CrossViewAttention:
    torch.manual_seed(seed)
    return CrossViewAttention(dim, heads).eval()


def _reference(block: CrossViewAttention, x: torch.Tensor) -> torch.Tensor:
    """Each view by hand, one at a time: softmax(Q K^T / sqrt(d)) V with K, V from the other views only."""
    b, v, n, c = x.shape
    heads, hd = block.num_heads, c // block.num_heads
    h = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias)
    outs = []
    for i in range(v):
        rest = torch.cat([h[:, j] for j in range(v) if j != i], dim=1)  # (B, (V-1)*N, C)
        q = block.q(h[:, i]).view(b, n, heads, hd).transpose(1, 2)
        k = block.k(rest).view(b, -1, heads, hd).transpose(1, 2)
        val = block.v(rest).view(b, -1, heads, hd).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
        y = x[:, i] + block.proj((attn @ val).transpose(1, 2).reshape(b, n, c))
        outs.append(y + block.mlp(F.layer_norm(y, (c,), block.norm2.weight, block.norm2.bias)))
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("views", [2, 3, 8])
def test_shapes_and_values_match_per_view_cross_attention(views):
    block = _block()
    x = torch.randn(2, views, 5, 8)
    with torch.no_grad():
        out = block(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, _reference(block, x), atol=1e-5, rtol=1e-5)


def test_permuting_the_views_permutes_the_outputs():
    block = _block()
    x = torch.randn(2, 5, 6, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(block(x[:, perm]), block(x)[:, perm], atol=1e-6, rtol=1e-6)


def test_information_flows_across_views():
    block = _block()
    x = torch.randn(1, 2, 6, 8)
    changed = x.clone()
    changed[:, 1] = torch.randn(6, 8)
    with torch.no_grad():
        assert (block(changed)[:, 0] - block(x)[:, 0]).abs().max() > 1e-3


def test_a_view_does_not_attend_to_itself():
    # with the FFN and the other view fixed, a view's attention output must not depend on its own keys/values:
    # zero its query weights (uniform attention over the keys) and change it; the attention branch stays put
    block = _block()
    with torch.no_grad():
        block.q.weight.zero_()
        block.q.bias.zero_()
        block.mlp[-2].weight.zero_()
        block.mlp[-2].bias.zero_()
        x = torch.randn(1, 2, 6, 8)
        changed = x.clone()
        changed[:, 0] += torch.randn(6, 8)
        torch.testing.assert_close(block(changed)[:, 0] - changed[:, 0], block(x)[:, 0] - x[:, 0])


def test_with_the_attention_projection_zeroed_the_block_is_a_per_token_ffn():
    block = _block()
    with torch.no_grad():
        block.proj.weight.zero_()
        block.proj.bias.zero_()
        x = torch.randn(2, 3, 5, 8)
        torch.testing.assert_close(block(x), x + block.mlp(block.norm2(x)))


def test_position_embedding_steers_attention_and_broadcasts_over_the_batch():
    block = _block()
    x = torch.randn(2, 3, 5, 8)
    pos = torch.randn(3, 5, 8)
    with torch.no_grad():
        with_pos = block(x, pos)
        torch.testing.assert_close(with_pos, block(x, pos.expand(2, -1, -1, -1)))
        assert (with_pos - block(x)).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"pos must be \(B, V, N, dim\)"):
        block(x, torch.randn(5, 8))


def test_forward_maps_flattens_pixels_to_tokens_and_back():
    block = _block()
    maps = torch.randn(2, 2, 8, 3, 4)
    tokens = maps.flatten(3).transpose(2, 3)  # (B, V, H*W, C)
    with torch.no_grad():
        out = block.forward_maps(maps)
        assert out.shape == maps.shape
        torch.testing.assert_close(out.flatten(3).transpose(2, 3), block(tokens))


def test_gradients_reach_every_parameter():
    block = CrossViewAttention(8, 2)
    block(torch.randn(2, 2, 5, 8), torch.randn(2, 5, 8)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_one_view_and_bad_shapes_are_rejected_with_the_shape():
    block = _block()
    with pytest.raises(ValueError, match=r"needs at least 2 views .* \(1, 1, 5, 8\) \(V=1\)"):
        block(torch.randn(1, 1, 5, 8))
    with pytest.raises(ValueError, match=r"expects tokens \(B, V, N, 8\), got \(1, 2, 5, 4\)"):
        block(torch.randn(1, 2, 5, 4))
    with pytest.raises(ValueError, match=r"dim=6 must be divisible by num_heads=4"):
        CrossViewAttention(6, 4)
