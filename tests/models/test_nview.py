"""Milestone 4's N-view model: any number of views in any order with their angles, and the geometric lift in every
model variant (hybrid, baseline, cascade)."""

from __future__ import annotations

import pytest
import torch

from x2ct.models import HybridViT
from x2ct.models.baseline_unet import BaselineUNet
from x2ct.models.multires import MultiResCascade
from x2ct.models.view_blocks.angle_embedding import ViewAngleEmbedding
from x2ct.physics.geometry import ProjectionGeometry

GEOMETRY = ProjectionGeometry(kind="cone", angles_deg=(0.0, 45.0, 90.0, 135.0), detector_shape=(32, 32),
                              pixel_spacing_mm=(16.0, 16.0), source_to_isocenter_mm=1000.0,
                              source_to_detector_mm=1500.0).to_dict()
FOV = [352.0, 352.0, 352.0]
ANGLES = [0.0, 45.0, 90.0, 135.0]
TINY = dict(num_views=4, view_size=32, volume_size=16, base_channels=4, depth=3, channel_multipliers=(1, 2, 4, 8),
            num_heads=2, transformer_levels=(1,), pyramid_channels=4, cross_view_grid=8, cross_view_heads=2,
            view_angles_deg=ANGLES, geometry=GEOMETRY, volume_fov_mm=FOV)


def nview(**overrides) -> HybridViT:
    torch.manual_seed(0)
    return HybridViT(**{**TINY, "lift": "geometric", "fusion": "attention", "view_angle_embedding": True,
                        **overrides}).eval()


@pytest.mark.parametrize("fusion", ["attention", "mean", "max"])
@pytest.mark.parametrize("lift", ["geometric", "learned"])
def test_permuting_views_with_their_angles_leaves_the_output_unchanged(fusion, lift):
    model = nview(fusion=fusion, lift=lift)
    # the attention fusion starts as the mean: give its scores weight so the test sees a real attention
    if fusion == "attention":
        torch.nn.init.normal_(model.fuse.score.weight, std=0.5)
    views, angles = torch.rand(2, 4, 1, 32, 32), torch.tensor(ANGLES)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = model(views, angles).volume
        permuted = model(views[:, order], angles[order]).volume
        # the same images at the wrong angles are another input: the angle travels with the view
        mislabelled = model(views[:, order], angles).volume
    torch.testing.assert_close(permuted, out, atol=1e-5, rtol=1e-5)
    assert (mislabelled - out).abs().max() > 1e-3


def test_one_model_takes_any_subset_of_views_and_the_angle_embedding_matters():
    model = nview()
    views = torch.rand(1, 4, 1, 32, 32)
    with torch.no_grad():
        for subset in ([0, 2], [1, 2, 3], [0, 1, 2, 3]):
            out = model(views[:, subset], torch.tensor(ANGLES)[subset]).volume
            assert out.shape == (1, 1, 16, 16, 16) and torch.isfinite(out).all()
        # two views at other angles than the constructor's: both the lift and the embedding follow the angles
        a = model(views[:, :2], torch.tensor([0.0, 90.0])).volume
        b = model(views[:, :2], torch.tensor([0.0, 30.0])).volume
    assert (a - b).abs().max() > 1e-3
    emb = ViewAngleEmbedding(8)
    assert not torch.allclose(emb(torch.tensor([0.0])), emb(torch.tensor([90.0])))
    torch.testing.assert_close(emb(torch.tensor([10.0])), emb(torch.tensor([370.0])), atol=1e-5, rtol=0)


def test_views_whose_count_the_model_cannot_take_are_refused():
    with pytest.raises(ValueError, match="one angle per view"):
        nview()(torch.rand(1, 3, 1, 32, 32), torch.tensor([0.0, 90.0]))
    concat = nview(fusion="concat")
    with pytest.raises(ValueError, match="expects views"):
        concat(torch.rand(1, 2, 1, 32, 32), torch.tensor([0.0, 90.0]))
    with pytest.raises(ValueError, match="share their view angles"):
        nview()(torch.rand(2, 2, 1, 32, 32), torch.tensor([[0.0, 90.0], [0.0, 45.0]]))
    with pytest.raises(ValueError, match="needs the imaging geometry"):
        HybridViT(**{**TINY, "lift": "geometric", "geometry": None})


def test_baseline_and_cascade_take_the_geometric_lift_and_angles():
    torch.manual_seed(0)
    baseline = BaselineUNet(num_views=2, view_size=32, volume_size=16, base_channels=4, depth=2,
                            view_angles_deg=[0.0, 90.0], lift="geometric", geometry=GEOMETRY, volume_fov_mm=FOV)
    out = baseline(torch.rand(2, 2, 1, 32, 32), torch.tensor([[0.0, 90.0]] * 2)).volume
    out.mean().backward()
    assert out.shape == (2, 1, 16, 16, 16)
    assert all(p.grad is not None for p in baseline.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match=r"BaselineUNet: lift='parallel' is not one of learned \| geometric"):
        BaselineUNet(num_views=2, view_size=32, volume_size=16, depth=2, lift="parallel")

    cascade = MultiResCascade(num_views=2, view_size=32, volume_size=16, view_angles_deg=[0.0, 90.0],
                              stage_sizes=[8, 16], refiner_channels=4,
                              coarse_kwargs=dict(base_channels=4, depth=1, channel_multipliers=(1, 2),
                                                 transformer_levels=(), num_heads=2, pyramid_channels=4,
                                                 cross_view_grid=4, cross_view_heads=2),
                              lift="geometric", geometry=GEOMETRY, volume_fov_mm=FOV)
    assert cascade.coarse.lift.mode == "geometric" and cascade.refiners[0].lift.mode == "geometric"
    out = cascade(torch.rand(1, 2, 1, 32, 32), torch.tensor([[0.0, 45.0]]))
    assert out.volume.shape == (1, 1, 16, 16, 16)
