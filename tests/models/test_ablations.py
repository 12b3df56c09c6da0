"""Milestone 1's ablation switches: each part off builds, trains a step with every parameter in use,
removes exactly the parameters it documents, and replaces the part by the plain thing it claims to improve on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from x2ct.losses.reconstruction import ReconstructionLoss
from x2ct.models import HybridViT, count_parameters
from x2ct.models.blocks.dense import ResidualDenseBlock3D
from x2ct.models.blocks.hybrid import TransformerEnhancedBlock3D
from x2ct.models.blocks.residual import ResidualBlock

TINY = dict(view_size=32, volume_size=16, base_channels=4, depth=3, channel_multipliers=(1, 2, 4, 8), num_heads=2,
            transformer_levels=(1,), pyramid_channels=4, cross_view_grid=8, cross_view_heads=2)
# experiments/benchmark/milestone1.yaml's model at the benchmark's sizes (README milestone table: 2.68M)
BENCHMARK = dict(view_size=64, volume_size=32, base_channels=16, depth=3, channel_multipliers=(1, 2, 4, 8),
                 transformer_levels=(1,), num_heads=(2, 2, 4, 8), pyramid_channels=8, cross_view_grid=8)
SWITCHES = [{"swin": False}, {"cross_view": False}, {"dense_blocks": False}, {"attention_gates": False},
            {"deep_supervision": False}, {"pyramid_scales": 1}]


def tiny(**overrides) -> HybridViT:
    torch.manual_seed(0)
    return HybridViT(**{**TINY, **overrides})


def n_params(*modules: nn.Module) -> int:
    return sum(count_parameters(m) for m in modules)


def test_the_defaults_are_the_design_unchanged():
    assert count_parameters(HybridViT(**BENCHMARK)) == 2_676_150  # as every milestone-1 benchmark row reports


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_each_switch_trains_a_step_with_every_parameter_in_use(switch):
    model = tiny(**switch).train()
    weights = {"l1": 1.0, "ssim": 0.3, "edge": 0.2, "frequency": 0.3,
               "deep_supervision": 0.2 if model.deep_supervision else 0.0}
    loss_fn = ReconstructionLoss(weights, component_kwargs={"ssim": {"data_range": 1.0, "sigma": 1.5}})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, _ = loss_fn(model(torch.rand(2, 2, 1, 32, 32)), torch.rand(2, 1, 16, 16, 16))
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not unused  # DDP without find_unused_parameters: a switched-off part leaves no dead weights behind
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_swin_false_keeps_the_conv_branch_of_every_transformer_enhanced_block():
    full, ablated = tiny(), tiny(swin=False)
    blocks = [m for m in full.modules() if isinstance(m, TransformerEnhancedBlock3D)]
    assert len(blocks) == 3  # encoder and decoder at level 1, the bottleneck
    assert all(m.swin is None and m.project is None
               for m in ablated.modules() if isinstance(m, TransformerEnhancedBlock3D))
    # removed: the projection, the Swin stage and the Swin half of the 1x1x1 fuse convolution (out x out weights)
    removed = sum(n_params(m.project, m.swin) + m.fuse.conv.weight.shape[0] ** 2 for m in blocks)
    assert count_parameters(ablated) == count_parameters(full) - removed


def test_a_block_without_swin_equals_the_hybrid_block_whose_swin_half_is_zeroed():
    torch.manual_seed(0)
    hybrid = TransformerEnhancedBlock3D(8, 8, num_heads=2, window_size=4).eval()
    conv_only = TransformerEnhancedBlock3D(8, 8, num_heads=2, window_size=4, swin=False).eval()
    conv_only.local.load_state_dict(hybrid.local.state_dict())
    with torch.no_grad():
        conv_only.fuse.conv.weight.copy_(hybrid.fuse.conv.weight[:, :8])
        if hybrid.fuse.conv.bias is not None:
            conv_only.fuse.conv.bias.copy_(hybrid.fuse.conv.bias)
        hybrid.fuse.conv.weight[:, 8:] = 0
    conv_only.fuse.norm.load_state_dict(hybrid.fuse.norm.state_dict())
    x = torch.randn(2, 8, 8, 8, 8)
    torch.testing.assert_close(conv_only(x), hybrid(x))


def test_cross_view_false_keeps_each_views_features_to_itself():
    """With cross-view attention, changing the lateral view changes the PA view's features before the lift; without
    it, the PA view's features depend on the PA view only."""
    views = torch.rand(1, 2, 1, 32, 32)
    changed = views.clone()
    changed[:, 1] = torch.rand(1, 1, 32, 32)
    for cross_view, pa_changes in ((True, True), (False, False)):
        model = tiny(cross_view=cross_view).eval()
        seen: list[torch.Tensor] = []
        model.lift.register_forward_hook(lambda _m, args, _out, seen=seen: seen.append(args[0][:, 0].clone()))
        with torch.no_grad():
            model(views), model(changed)
        assert (not torch.allclose(seen[0], seen[1])) == pa_changes, cross_view
    full, ablated = tiny(), tiny(cross_view=False)
    assert ablated.cross_view is None
    assert count_parameters(ablated) == count_parameters(full) - count_parameters(full.cross_view)
    # a model for any number of views needs 2 per forward with cross-view attention, 1 without; a concat fusion
    # takes exactly its views either way
    assert tiny(fusion="mean").min_views == 2 and tiny(cross_view=False, fusion="mean").min_views == 1
    assert full.min_views == ablated.min_views == full.num_views == 2


def test_cross_view_false_refuses_the_view_angle_embedding_it_would_ignore():
    with pytest.raises(ValueError, match="view_angle_embedding=true needs cross_view=true"):
        tiny(cross_view=False, view_angle_embedding=True)


def test_dense_blocks_false_puts_plain_residual_blocks_of_the_same_width():
    full, ablated = tiny(), tiny(dense_blocks=False)
    for stack in ("encoder", "decoder"):
        for level, (dense, plain) in enumerate(zip(getattr(full, stack), getattr(ablated, stack), strict=True)):
            if level == 1:  # the transformer level
                assert isinstance(plain, TransformerEnhancedBlock3D)
                continue
            assert isinstance(dense, ResidualDenseBlock3D) and isinstance(plain, ResidualBlock)
            assert plain.conv1.conv.in_channels == plain.conv2.conv.out_channels == dense.channels
    dense = [m for m in full.modules() if isinstance(m, ResidualDenseBlock3D)]
    plain = [m for m in ablated.modules() if isinstance(m, ResidualBlock) and m.conv1.conv.weight.ndim == 5]
    assert len(dense) == len(plain) == 4
    assert count_parameters(ablated) == count_parameters(full) - n_params(*dense) + n_params(*plain)


def test_attention_gates_false_passes_the_encoder_features_to_the_decoder_unchanged():
    model = tiny(attention_gates=False).eval()
    assert model.gates is None
    skips, merged = [], []
    model.encoder[0].register_forward_hook(lambda _m, _a, out: skips.append(out))
    model.merge[0].register_forward_hook(lambda _m, args, _out: merged.append(args[0]))
    with torch.no_grad():
        model(torch.rand(1, 2, 1, 32, 32))
    skip_channels = skips[0].shape[1]
    torch.testing.assert_close(merged[0][:, skip_channels:], skips[0], rtol=0, atol=0)  # cat([up, skip])
    full = tiny()
    assert count_parameters(model) == count_parameters(full) - count_parameters(full.gates)


def test_deep_supervision_false_drops_the_coarse_heads_only():
    full, ablated = tiny(), tiny(deep_supervision=False)
    assert len(full.aux_heads) == 2 and len(ablated.aux_heads) == 0
    assert count_parameters(ablated) == count_parameters(full) - count_parameters(full.aux_heads)
    assert ablated.train()(torch.rand(1, 2, 1, 32, 32)).deep_supervision == []


def test_pyramid_scales_1_is_the_single_scale_xray_encoder():
    full, ablated = tiny(), tiny(pyramid_scales=1)
    assert ablated.pyramid.out_channels == [4] and len(ablated.pyramid.stages) == 0
    # removed: the coarser stages, laterals, up-paths and smoothers, and their input channels to the 1x1 merge
    # (4 output channels of merge_scales per pyramid channel)
    coarse = [full.pyramid.stages, full.pyramid.up, *full.pyramid.lateral[1:], *full.pyramid.smooth[1:]]
    merge_inputs = sum(full.pyramid.out_channels[1:]) * full.merge_scales.conv.out_channels
    assert count_parameters(ablated) == count_parameters(full) - n_params(*coarse) - merge_inputs
