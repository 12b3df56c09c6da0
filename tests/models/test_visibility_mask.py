"""Every model that lifts with the true cone-beam geometry hands the lift's visibility mask to every view
fusion, so a voxel that a view's detector does not see is not averaged (or mixed) as if that view saw zero."""

from __future__ import annotations

import pytest
import torch

from x2ct.models import model_from_name
from x2ct.models.multires import MultiResCascade
from x2ct.models.view_blocks.fusion import ViewFusion
from x2ct.physics.geometry import ProjectionGeometry

# a detector too small for the volume: the corners of the 16^3 grid project outside it
GEOMETRY = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(12, 12), pixel_spacing_mm=(8.0, 8.0),
                              source_to_isocenter_mm=300.0, source_to_detector_mm=450.0).to_dict()
GEOMETRIC = dict(num_views=2, view_size=16, view_angles_deg=(0.0, 90.0), lift="geometric", geometry=GEOMETRY,
                 volume_fov_mm=(128.0, 128.0, 128.0))
TINY_HYBRID = dict(base_channels=4, depth=2, channel_multipliers=(1, 2, 4), transformer_levels=(1,), num_heads=2,
                   pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)

MODELS = {
    "baseline, concat fusion": ("baseline_unet", dict(volume_size=16, base_channels=4, depth=2, encoder_blocks=1,
                                                      bottleneck_blocks=1)),
    "baseline, mean fusion": ("baseline_unet", dict(volume_size=16, base_channels=4, depth=2, encoder_blocks=1,
                                                    bottleneck_blocks=1, fusion="mean")),
    "hybrid, concat fusion": ("hybrid_vit", dict(volume_size=16, **TINY_HYBRID)),
    "hybrid, attention fusion": ("hybrid_vit", dict(volume_size=16, fusion="attention", **TINY_HYBRID)),
    "cascade": (MultiResCascade, dict(volume_size=16, stage_sizes=(8, 16), refiner_channels=4,
                                      coarse_kwargs=TINY_HYBRID)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_fusion_after_a_geometric_lift_gets_the_visibility_mask(name):
    kind, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = kind(**GEOMETRIC, **kwargs) if callable(kind) else model_from_name(kind, **GEOMETRIC, **kwargs)
    calls: list[torch.Tensor | None] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: calls.append(args[1] if len(args) > 1 else None))
             for m in model.modules() if isinstance(m, ViewFusion)]
    model(torch.rand(2, 2, 1, 16, 16))
    for hook in hooks:
        hook.remove()
    assert calls, "no view fusion ran"
    assert all(mask is not None for mask in calls), f"{sum(m is None for m in calls)} of {len(calls)} fusions unmasked"
    assert any(0 < float(mask.mean()) < 1 for mask in calls)  # the geometry does hide some voxels from a view
