import pytest
import torch
import torch.nn.functional as F

from x2ct.models.blocks import swin
from x2ct.models.blocks.swin import (
    SwinStage3D,
    SwinTransformerBlock3D,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def _block(dim=8, heads=2, window=4, shift=False, seed=0) -> SwinTransformerBlock3D:
    torch.manual_seed(seed)
    block = SwinTransformerBlock3D(dim, heads, window_size=window, shift=shift).eval()
    with torch.no_grad():  # a bias far from zero so that a wrong index shows up in the values
        block.relative_position_bias.normal_()
    return block


def _changed(block, x, voxel) -> torch.Tensor:
    """(D, H, W) bool: which voxels' outputs change when ``voxel`` of the input is perturbed."""
    moved = x.clone()
    moved[(0, slice(None), *voxel)] += 3 * torch.randn(x.shape[1])  # not constant: LayerNorm would remove that
    with torch.no_grad():
        diff = (block(moved) - block(x)).abs().amax(dim=(0, 1))
    assert diff[voxel] > 1e-3  # the perturbed voxel itself always changes (residual)
    return diff > 1e-6


def _box(size, lo, hi) -> torch.Tensor:
    """(D, H, W) bool, True on [lo, hi) along every axis."""
    box = torch.zeros(size, dtype=torch.bool)
    box[lo:hi, lo:hi, lo:hi] = True
    return box


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size", [(8, 8, 8), (5, 6, 7), (3, 9, 2)])
def test_block_and_stage_keep_the_shape_for_divisible_and_other_sizes(shift, size):
    x = torch.randn(2, 8, *size)
    out = _block(shift=shift)(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert SwinStage3D(8, depth=2, num_heads=2)(x).shape == x.shape


def test_window_partition_round_trips_and_groups_neighbours():
    x = torch.arange(4 * 6 * 2, dtype=torch.float32).view(1, 4, 6, 2, 1)
    windows = window_partition(x, (2, 3, 2))
    assert windows.shape == (1, 4, 12, 1)
    torch.testing.assert_close(windows[0, 0, :, 0], x[0, :2, :3, :2, 0].flatten())
    torch.testing.assert_close(window_reverse(windows, (2, 3, 2), (4, 6, 2)), x)


def _reference_full_attention(block: SwinTransformerBlock3D, x: torch.Tensor) -> torch.Tensor:
    """Plain multi-head self-attention over all tokens of ``x`` (B, C, D, H, W), by hand, with the block's
    weights and its relative position bias (table for window w, offsets of the volume's own extent)."""
    b, c, d, h, w = x.shape
    heads, hd, win = block.num_heads, c // block.num_heads, block.window_size
    t = x.flatten(2).transpose(1, 2)  # (B, N, C), D/H/W raster order
    q, k, v = F.linear(F.layer_norm(t, (c,), block.norm1.weight, block.norm1.bias),
                       block.qkv.weight, block.qkv.bias).chunk(3, dim=-1)
    q, k, v = (z.view(b, -1, heads, hd).transpose(1, 2) for z in (q, k, v))  # (B, heads, N, hd)
    coords = torch.tensor([(i, j, m) for i in range(d) for j in range(h) for m in range(w)])
    rel = coords[:, None, :] - coords[None, :, :] + (win - 1)
    index = rel[..., 0] * (2 * win - 1) ** 2 + rel[..., 1] * (2 * win - 1) + rel[..., 2]
    bias = block.relative_position_bias[index].permute(2, 0, 1)  # (heads, N, N)
    attn = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5 + bias, dim=-1)
    t = t + F.linear((attn @ v).transpose(1, 2).reshape(b, -1, c), block.proj.weight, block.proj.bias)
    t = t + block.mlp(F.layer_norm(t, (c,), block.norm2.weight, block.norm2.bias))
    return t.transpose(1, 2).reshape(b, c, d, h, w)


@pytest.mark.parametrize("size", [(4, 4, 4), (3, 4, 2)])
def test_one_window_over_the_whole_volume_is_plain_multi_head_attention(size):
    block = _block()
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference_full_attention(block, x), atol=1e-5, rtol=1e-5)


def test_plain_windows_mix_window_mates_only():
    # not full attention: a token reaches exactly its own 4^3 window
    x = torch.randn(1, 8, 8, 8, 8)
    assert torch.equal(_changed(_block(), x, (0, 0, 0)), _box((8, 8, 8), 0, 4))


def test_shift_mask_keeps_regions_of_a_shifted_window_apart():
    # shift 2 on an 8^3 volume: windows {2..5} and {6, 7, 0, 1} per axis; the wrapped window joins opposite faces,
    # which the mask keeps apart, so voxel (0, 0, 0) only reaches the region {0, 1}^3 (not {6, 7} x ...)
    x = torch.randn(1, 8, 8, 8, 8)
    block = _block(shift=True)
    assert torch.equal(_changed(block, x, (0, 0, 0)), _box((8, 8, 8), 0, 2))
    # an interior voxel reaches its whole shifted window, across the plain windows' borders
    assert torch.equal(_changed(block, x, (3, 3, 3)), _box((8, 8, 8), 2, 6))


def test_shifted_window_mask_separates_wrapped_tokens_and_padding():
    # one axis of 6 tokens padded to 8, window 4, shift 2: rolled order holds original 2..7, 0, 1
    allowed = shifted_window_mask((1, 1, 6), (1, 1, 8), (1, 1, 4), (0, 0, 2))
    assert allowed.shape == (2, 4, 4)
    assert allowed[0].all()  # original 2, 3, 4, 5: one region
    # second window: original 6, 7 (padding, each alone), then 0, 1 (wrapped, together)
    expected = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed[1], expected)


def test_padded_tokens_are_not_attended():
    # 6^3 with window 4 is padded to 8^3; the windows that hold real tokens [4, 6) must give the same result as
    # running on those tokens alone (one window, no padding)
    block = _block()
    x = torch.randn(1, 8, 6, 6, 6)
    with torch.no_grad():
        full = block(x)
        torch.testing.assert_close(full[..., 4:, 4:, 4:], block(x[..., 4:, 4:, 4:]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full[..., :4, 4:, :4], block(x[..., :4, 4:, :4]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [False, True])
def test_outputs_do_not_depend_on_the_pad_value(shift, monkeypatch):
    block = _block(shift=shift)
    x = torch.randn(1, 8, 6, 7, 5)
    with torch.no_grad():
        zero_padded = block(x)
        pad = swin.pad_to_multiple
        monkeypatch.setattr(swin, "pad_to_multiple", lambda t, window: pad(t, window, value=1e3))
        big_padded = block(x)
    assert torch.isfinite(big_padded).all()
    torch.testing.assert_close(big_padded, zero_padded, atol=1e-5, rtol=1e-5)


def test_thin_axes_are_covered_whole_and_not_shifted():
    # every axis <= window: one window, nothing to shift, so the shifted block equals the plain one
    plain, shifted = _block(), _block(shift=True)
    x = torch.randn(1, 8, 4, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(shifted(x), plain(x))


def test_relative_position_bias_table_has_one_row_per_3d_offset_and_is_used():
    block = _block(heads=2, window=3)
    assert block.relative_position_bias.shape == (5**3, 2)
    x = torch.randn(1, 8, 3, 3, 3)
    with torch.no_grad():
        before = block(x)
        block.relative_position_bias.add_(torch.randn_like(block.relative_position_bias))
        assert (block(x) - before).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(8, 8, 8), (5, 6, 7)])
def test_gradients_reach_every_parameter(size):
    stage = SwinStage3D(8, depth=2, num_heads=2, window_size=4)
    assert [b.shift for b in stage.blocks] == [False, True]
    stage(torch.randn(1, 8, *size)).square().sum().backward()
    for name, p in stage.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments_and_inputs_are_named():
    with pytest.raises(ValueError, match=r"dim=6 must be divisible by num_heads=4"):
        SwinTransformerBlock3D(6, 4)
    with pytest.raises(ValueError, match=r"expects \(B, 8, D, H, W\), got \(1, 4, 2, 2, 2\)"):
        SwinTransformerBlock3D(8, 2)(torch.randn(1, 4, 2, 2, 2))
    with pytest.raises(ValueError, match=r"SwinStage3D expects \(B, 8, D, H, W\)"):
        SwinStage3D(8, 2, 2)(torch.randn(1, 8, 4, 4))


def _outputs_and_grads(module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output and the gradients of the input and of every parameter for the loss ``sum(out * w)``."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = module(x)
    (out * torch.linspace(-1.0, 1.0, out.numel()).view(out.shape)).sum().backward()
    return [out.detach(), x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("size", [(8, 8, 8), (5, 6, 7), (3, 9, 2)])
def test_cached_masks_give_the_outputs_and_gradients_of_a_fresh_build(size, monkeypatch):
    torch.manual_seed(0)
    stage = SwinStage3D(8, depth=2, num_heads=2, window_size=4)
    with torch.no_grad():
        for block in stage.blocks:
            block.relative_position_bias.normal_()
    x = torch.randn(2, 8, *size)
    swin.clear_window_caches()
    first = _outputs_and_grads(stage, x)   # fills the caches
    cached = _outputs_and_grads(stage, x)  # served from them
    monkeypatch.setattr(swin, "window_mask_bias", swin._build_window_mask_bias)
    monkeypatch.setattr(swin, "window_position_index",
                        lambda window, window_size, device: swin.relative_position_index(window, window_size))
    fresh = _outputs_and_grads(stage, x)
    for a, b, c in zip(first, cached, fresh, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_masks_are_built_once_per_shape(monkeypatch):
    built = []
    build = swin.shifted_window_mask

    def counting(*args, **kwargs):
        built.append(args[:4])
        return build(*args, **kwargs)

    monkeypatch.setattr(swin, "shifted_window_mask", counting)
    swin.clear_window_caches()
    stage = SwinStage3D(8, depth=2, num_heads=2, window_size=4)
    for _ in range(3):  # the plain block masks the padding, the shifted one padding and wrap: two masks
        stage(torch.randn(1, 8, 5, 6, 7)).sum().backward()
    assert len(built) == 2
    stage(torch.randn(2, 8, 5, 6, 7))  # another batch size: the same windows
    assert len(built) == 2
    stage(torch.randn(1, 8, 6, 6, 6))  # another shape: its own two
    assert len(built) == 4


def test_cached_mask_is_per_device_and_dtype():
    swin.clear_window_caches()
    args = ((5, 6, 7), (8, 8, 8), (4, 4, 4), (2, 2, 2))
    cpu = swin.window_mask_bias(*args, torch.float32, torch.device("cpu"))
    meta = swin.window_mask_bias(*args, torch.float32, torch.device("meta"))
    half = swin.window_mask_bias(*args, torch.bfloat16, torch.device("cpu"))
    assert cpu.device.type == "cpu" and meta.device.type == "meta" and half.dtype == torch.bfloat16
    assert cpu.shape == (8, 1, 64, 64) and torch.equal(half.float(), cpu)
    assert swin.window_mask_bias(*args, torch.float32, torch.device("cpu")) is cpu
    assert not any(name.startswith("_cached") or "mask" in name for name, _ in
                   SwinTransformerBlock3D(8, 2, shift=True).state_dict().items())


def test_masks_first_built_under_inference_mode_serve_training():
    swin.clear_window_caches()
    stage = SwinStage3D(8, depth=2, num_heads=2, window_size=4)
    x = torch.randn(1, 8, 5, 3, 7)  # a thin axis: a smaller window and its own position index
    with torch.inference_mode():
        stage(x)
    stage(x).sum().backward()
    assert all(p.grad is not None for p in stage.parameters())


@pytest.mark.slow
def test_compiled_stage_matches_eager_without_graph_breaks():
    # under compile the masks are traced into the graph (fullgraph: a graph break would raise)
    torch.manual_seed(0)
    stage = SwinStage3D(8, depth=2, num_heads=2, window_size=4)
    x = torch.randn(1, 8, 5, 6, 7)
    torch._dynamo.reset()
    compiled = torch.compile(stage, backend="aot_eager", fullgraph=True)
    for a, b in zip(_outputs_and_grads(compiled, x), _outputs_and_grads(stage, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
