import pytest
import torch

from x2ct.models.view_blocks.fusion import ViewFusion


def test_mean_fusion_averages_the_views_for_any_view_count():
    fuse = ViewFusion(channels=3, num_views=2, mode="mean")
    vols = torch.rand(2, 4, 3, 5, 5, 5)
    torch.testing.assert_close(fuse(vols), vols.mean(dim=1))
    assert not list(fuse.parameters())


def test_concat_fusion_mixes_channels_of_all_views():
    fuse = ViewFusion(channels=3, num_views=2, mode="concat", norm="none", act="relu")
    assert fuse.mix.conv.weight.shape == (3, 6, 1, 1, 1)
    vols = torch.rand(2, 2, 3, 5, 5, 5)
    assert fuse(vols).shape == (2, 3, 5, 5, 5)
    # a change in the second view alone changes the output
    changed = vols.clone()
    changed[:, 1] += 1.0
    assert not torch.allclose(fuse(vols), fuse(changed))


def test_concat_fusion_rejects_another_view_count_and_unknown_modes():
    with pytest.raises(ValueError, match=r"built for 2 views"):
        ViewFusion(channels=3, num_views=2)(torch.rand(1, 3, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"unknown fusion mode 'median'"):
        ViewFusion(channels=3, num_views=2, mode="median")


def randomised_attention(channels: int = 3) -> ViewFusion:
    """Attention fusion with non-zero scores (it starts as the mean)."""
    fuse = ViewFusion(channels=channels, num_views=2, mode="attention")
    torch.manual_seed(3)
    torch.nn.init.normal_(fuse.score.weight, std=2.0)
    torch.nn.init.normal_(fuse.score.bias)
    return fuse


def test_max_fusion_is_the_maximum_over_views():
    vols = torch.randn(2, 4, 3, 5, 5, 5)
    fuse = ViewFusion(channels=3, num_views=2, mode="max")
    assert torch.equal(fuse(vols), torch.max(vols, dim=1).values)
    assert not list(fuse.parameters())


def test_attention_fusion_is_a_softmax_weighted_sum_that_starts_as_the_mean():
    vols = torch.randn(2, 3, 3, 4, 4, 4)
    fresh = ViewFusion(channels=3, num_views=3, mode="attention")
    torch.testing.assert_close(fresh(vols), vols.mean(dim=1))
    fuse = randomised_attention()
    weights = fuse.attention_weights(vols)
    assert weights.shape == (2, 3, 1, 4, 4, 4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 1, 4, 4, 4))
    assert weights.std() > 0.1  # the views are weighted differently
    # reference: scores from the shared 1x1x1 conv, applied view by view
    scores = torch.stack([fuse.score(vols[:, i]) for i in range(3)], dim=1)
    torch.testing.assert_close(fuse(vols), (scores.softmax(dim=1) * vols).sum(dim=1))


@pytest.mark.parametrize("mode", ["mean", "max", "attention"])
def test_view_agnostic_fusion_ignores_the_order_of_views_and_accepts_any_count(mode):
    fuse = randomised_attention() if mode == "attention" else ViewFusion(channels=3, num_views=2, mode=mode)
    for views in (2, 8):
        vols = torch.randn(2, views, 3, 4, 4, 4)
        mask = (torch.rand(2, views, 1, 4, 4, 4) > 0.3).float()
        perm = torch.randperm(views)
        assert fuse(vols).shape == (2, 3, 4, 4, 4)
        torch.testing.assert_close(fuse(vols[:, perm]), fuse(vols), atol=1e-6, rtol=0)
        torch.testing.assert_close(fuse(vols[:, perm], mask[:, perm]), fuse(vols, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["mean", "max", "attention"])
def test_masked_out_views_have_no_influence(mode):
    fuse = randomised_attention() if mode == "attention" else ViewFusion(channels=3, num_views=2, mode=mode)
    vols = torch.randn(1, 3, 3, 4, 4, 4)
    mask = torch.ones(1, 3, 1, 4, 4, 4)
    mask[:, 2] = 0.0  # the third view sees nothing
    mask[:, 0, :, 0] = 0.0  # the first view misses the first slice
    out = fuse(vols, mask)
    wild = vols.clone()
    wild[:, 2] = float("inf")
    wild[:, 0, :, 0] = 1e6
    torch.testing.assert_close(fuse(wild, mask), out)
    # equal to fusing the views that see each voxel
    torch.testing.assert_close(out, fuse(vols[:, :2], mask[:, :2]))
    torch.testing.assert_close(out[..., 0, :, :], fuse(vols[:, 1:2])[..., 0, :, :])
    # a voxel that no view sees gets 0
    mask[:, :, :, 1, 2, 3] = 0.0
    assert torch.equal(fuse(vols, mask)[:, :, 1, 2, 3], torch.zeros(1, 3))
    if mode == "attention":
        weights = fuse.attention_weights(vols, mask)
        assert torch.equal(weights[:, 2], torch.zeros(1, 1, 4, 4, 4))
        assert torch.equal(weights[..., 1, 2, 3], torch.zeros(1, 3, 1))
        seen = mask.sum(dim=1) > 0
        torch.testing.assert_close(weights.sum(dim=1)[seen], torch.ones(int(seen.sum())))


def test_mask_errors_name_the_expected_shape_and_concat_refuses_one():
    vols = torch.randn(1, 2, 3, 4, 4, 4)
    with pytest.raises(ValueError, match=r"mask must have shape .*\(1, 2, 1, 4, 4, 4\)"):
        ViewFusion(channels=3, num_views=2, mode="mean")(vols, torch.ones(1, 2, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="masked=False got a mask"):
        ViewFusion(channels=3, num_views=2, mode="concat", norm="none")(vols, torch.ones(1, 2, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="masked=True got no mask"):
        ViewFusion(channels=3, num_views=2, mode="concat", norm="none", masked=True)(vols)


def test_masked_concat_fusion_mixes_each_views_mask_beside_its_channels():
    """The geometric lift's mask reaches a concat fusion as one more channel per view: the mix's
    weights on a view's mask channel are what changes where that view does not see the voxel."""
    fuse = ViewFusion(channels=3, num_views=2, mode="concat", norm="none", act="relu", masked=True)
    assert fuse.mix.conv.in_channels == 2 * (3 + 1)
    vols = torch.rand(1, 2, 3, 4, 4, 4)
    mask = torch.ones(1, 2, 1, 4, 4, 4)
    mask[:, 1, :, 0] = 0.0
    weight = fuse.mix.conv.weight[..., 0, 0, 0]  # (C, V * (C + 1)): view 0's channels, its mask, view 1's, ...
    expected = torch.relu(torch.einsum("oi,bidhw->bodhw", weight, torch.cat([vols, mask], 2).flatten(1, 2))
                          + fuse.mix.conv.bias[:, None, None, None])
    torch.testing.assert_close(fuse(vols, mask), expected)
    assert not torch.allclose(fuse(vols, mask)[..., 0, :, :], fuse(vols, torch.ones_like(mask))[..., 0, :, :])


@pytest.mark.parametrize("mode", ["mean", "max", "attention"])
def test_voxels_no_view_sees_put_no_nan_into_gradients(mode):
    """Masked views may hold anything (here inf and NaN, as an fp16 overflow would leave), and a voxel may be seen
    by no view at all (a softmax over only -inf is NaN): every parameter and input gradient must stay finite,
    the attention score's weight gradient included (0 * inf would make it NaN)."""
    fuse = randomised_attention() if mode == "attention" else ViewFusion(channels=3, num_views=2, mode=mode)
    mask = (torch.rand(2, 3, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    mask[:, :, :, 0] = 0.0  # no view sees the first slice
    wild = torch.randn(2, 3, 3, 4, 4, 4)
    wild = torch.where(mask > 0, wild, torch.tensor([float("inf"), float("nan")]).repeat(64)[:64].view(4, 4, 4))
    vols = wild.requires_grad_()
    fuse(vols, mask).square().sum().backward()
    grads = [vols.grad] + [p.grad for p in fuse.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert vols.grad[..., 0, :, :].abs().max() == 0  # and unseen voxels send nothing back


def test_attention_fusion_trains_from_its_zero_start():
    fuse = ViewFusion(channels=3, num_views=2, mode="attention")
    vols = torch.randn(1, 2, 3, 4, 4, 4)
    fuse(vols).pow(2).sum().backward()
    assert fuse.score.weight.grad.abs().sum() > 0
