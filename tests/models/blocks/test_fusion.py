import pytest
import torch

from x2ct.models.blocks.fusion import ViewFusion


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
    with pytest.raises(ValueError, match=r"unknown fusion mode 'max'"):
        ViewFusion(channels=3, num_views=2, mode="max")
