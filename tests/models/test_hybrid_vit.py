"""The milestone-1 hybrid CNN-ViT: shapes, deep supervision scales, gradients everywhere, checkpointing, size."""

from __future__ import annotations

import pytest
import torch

from x2ct.models import HybridViT, Reconstruction, count_parameters

TINY = dict(view_size=32, volume_size=16, base_channels=4, depth=3, channel_multipliers=(1, 2, 4, 8), num_heads=2,
            transformer_levels=(1,), pyramid_channels=4, cross_view_grid=8, cross_view_heads=2)


def tiny(**overrides) -> HybridViT:
    torch.manual_seed(0)
    return HybridViT(**{**TINY, **overrides})


def test_training_output_has_the_volume_and_deep_supervision_at_each_coarser_scale():
    model = tiny()
    out = model(torch.rand(2, 2, 1, 32, 32))
    assert out.volume.shape == (2, 1, 16, 16, 16)
    assert [tuple(a.shape) for a in out.deep_supervision] == [(2, 1, 8, 8, 8), (2, 1, 4, 4, 4)]  # finest first
    assert HybridViT(**{**TINY, "depth": 4, "volume_size": 32, "view_size": 32, "channel_multipliers": (1, 2, 2, 4, 4),
                        "transformer_levels": (2,)})(torch.rand(1, 2, 1, 32, 32)).deep_supervision[-1].shape == \
        (1, 1, 4, 4, 4)  # depth 4: three auxiliary scales (16, 8, 4) and the output: 4 scales


def test_without_deep_supervision_every_parameter_still_gets_a_gradient():
    model = tiny(deep_supervision=False)
    out = model(torch.rand(1, 2, 1, 32, 32))
    assert isinstance(out, Reconstruction) and out.deep_supervision == [] and not out.is_patch
    out.volume.mean().backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no find_unused_parameters


def test_eval_returns_the_volume_clipped_to_the_unit_range():
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 2, 1, 32, 32) * 5)
    assert isinstance(out, Reconstruction) and out.volume.shape == (1, 1, 16, 16, 16) and out.deep_supervision == []
    assert out.volume.min() >= 0 and out.volume.max() <= 1


def test_gradients_reach_every_parameter():
    model = tiny()
    out = model(torch.rand(2, 2, 1, 32, 32))
    loss = out.volume.square().mean() + sum(a.square().mean() for a in out.deep_supervision)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_activation_checkpointing_changes_memory_not_results():
    views = torch.rand(2, 2, 1, 32, 32)
    results = []
    for checkpointing in (False, True):
        model = tiny(checkpointing=checkpointing)
        out = model(views)
        (out.volume.mean() + sum(a.mean() for a in out.deep_supervision)).backward()
        results.append((out.volume.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], msg=name)


def test_cross_view_attention_mixes_the_views():
    """The lateral view changes what the model makes of the frontal one before lifting (not only after fusion)."""
    model = tiny(fusion="mean").eval()
    views = torch.rand(1, 2, 1, 32, 32)
    other = views.clone()
    other[:, 1] = torch.rand(1, 1, 32, 32)
    captured = []
    model.lift.register_forward_hook(lambda module, args, out: captured.append(out[0][:, 0].detach()))
    with torch.no_grad():
        model(views), model(other)
    assert not torch.allclose(captured[0], captured[1])  # view 0's lifted features depend on view 1


def test_default_size_is_the_documented_84_million():
    assert count_parameters(HybridViT()) == 84_071_048


def test_bad_shapes_and_settings_are_named():
    with pytest.raises(ValueError, match=r"expects views \(B, 2, 1, 32, 32\)"):
        tiny()(torch.rand(1, 2, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth"):
        tiny(volume_size=20)
    with pytest.raises(ValueError, match="channel_multipliers needs depth \\+ 1 = 4 values"):
        tiny(channel_multipliers=(1, 2))
    with pytest.raises(ValueError, match="view_angles_deg has 1 angles"):
        tiny(view_angles_deg=(0.0,))
