from __future__ import annotations

import math

import pytest
import torch

from x2ct.models.view_blocks.cone_lift import ConeBeamLift, voxel_centres
from x2ct.physics.geometry import ProjectionGeometry

N = 16
FOV = (128.0, 128.0, 128.0)  # 8 mm voxels
SID, SDD = 400.0, 600.0  # magnification 1.5
PIXEL_MM = 12.0


def cone(angles=(0.0, 90.0, 30.0), **kw) -> ProjectionGeometry:
    args = {"kind": "cone", "angles_deg": angles, "detector_shape": (N, N), "pixel_spacing_mm": (PIXEL_MM, PIXEL_MM),
            "source_to_isocenter_mm": SID, "source_to_detector_mm": SDD}
    args.update(kw)
    return ProjectionGeometry(**args)


def parallel(angles=(0.0, 90.0)) -> ProjectionGeometry:
    return ProjectionGeometry(kind="parallel", angles_deg=angles, detector_shape=(N, N), pixel_spacing_mm=(8.0, 8.0))


def delta_features(views: int, r: int, c: int, size: int = N) -> torch.Tensor:
    f = torch.zeros(1, views, 1, size, size)
    f[:, :, 0, r, c] = 1.0
    return f


def test_geometry_argument_may_be_a_dict_and_the_lift_has_no_parameters():
    lift = ConeBeamLift(cone().to_dict(), N, FOV)
    assert lift.geometry == cone()
    assert not list(lift.parameters())
    with pytest.raises(ValueError, match="fov_mm"):
        ConeBeamLift(cone(), N, (128.0, 128.0))
    with pytest.raises(ValueError, match="volume_size"):
        ConeBeamLift(cone(), (16, 16), FOV)


@pytest.mark.parametrize("offset", [(0.0, 0.0), (10.0, -7.0)])
def test_a_single_detector_pixel_lands_on_the_voxels_of_its_ray(offset):
    g = cone(detector_offset_mm=offset)
    r0, c0 = 6, 9
    out = ConeBeamLift(g, N, FOV)(delta_features(3, r0, c0))[0, :, 0].double()  # (V, D, H, W)

    centres = voxel_centres((N, N, N), FOV)
    proj = g.project(centres)  # (V, D, H, W, 2), the one source of truth
    dr, dc = (proj[..., 0] - r0).abs(), (proj[..., 1] - c0).abs()
    # the lifted value is the bilinear weight of the pixel at the voxel's projection ...
    expected = (1 - dr).clamp(min=0) * (1 - dc).clamp(min=0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # ... so it is non-zero exactly where the voxel centre projects within one pixel of (r0, c0)
    hit = (dr < 1) & (dc < 1)
    undecided = ((dr - 1).abs() < 1e-4) | ((dc - 1).abs() < 1e-4)
    assert torch.equal((out > 1e-6)[~undecided], hit[~undecided])
    assert all(int(hit[v].sum()) >= N for v in range(3))  # the ray crosses the whole volume in every view

    # those voxels hug the pixel's ray: within the pixel-diagonal footprint scaled back to the voxel's depth
    origins, directions = g.rays(dtype=torch.float64)
    e_s, _, _ = g.frames(torch.float64)
    for v in range(3):
        p = centres[out[v] > 1e-6]  # (K, 3)
        o, d = origins[v, r0, c0], directions[v, r0, c0]
        distance = torch.linalg.cross(p - o, d.expand_as(p)).norm(dim=-1) / d.norm()
        depth = SID - p @ e_s[v]
        assert bool((distance <= math.sqrt(2) * PIXEL_MM * depth / SDD + 1e-9).all())
        assert float(distance.max()) <= 8.0 * math.sqrt(3)  # about a voxel diagonal


def test_parallel_beam_pixel_lifts_to_a_straight_line_of_voxels_along_the_ray():
    # 8 mm pixels over 8 mm voxels: PA rays run along +H, left-lateral rays along -W
    r0, c0 = 3, 12
    out = ConeBeamLift(parallel(), N, FOV)(delta_features(2, r0, c0))[0, :, 0]
    d, w_or_h = N - 1 - r0, N - 1 - c0
    lit_pa = {tuple(i) for i in torch.nonzero(out[0] > 1e-4).tolist()}
    lit_lat = {tuple(i) for i in torch.nonzero(out[1] > 1e-4).tolist()}
    assert lit_pa == {(d, h, w_or_h) for h in range(N)}
    assert lit_lat == {(d, w_or_h, w) for w in range(N)}
    torch.testing.assert_close(out[0, d, :, w_or_h], torch.ones(N))
    torch.testing.assert_close(out[1, d, w_or_h, :], torch.ones(N))


def test_constant_features_lift_to_the_constant_wherever_the_view_sees_the_voxel():
    g = cone()
    lift = ConeBeamLift(g, N, FOV)
    proj = g.project(voxel_centres((N, N, N), FOV))
    inside = ((proj >= -0.5) & (proj <= N - 0.5)).all(dim=-1)  # (V, D, H, W)
    assert inside.any() and not inside[2].all()  # the 30 degree view misses the volume's corners
    for size in [(N, N), (4, 4), (8, 5)]:  # any feature resolution covers the whole detector
        feats = torch.full((2, 3, 2, *size), 2.5)
        out, mask = lift(feats, return_mask=True)
        assert out.shape == (2, 3, 2, N, N, N) and mask.shape == (2, 3, 1, N, N, N)
        torch.testing.assert_close(mask[0, :, 0], inside.float())
        torch.testing.assert_close(out, 2.5 * mask.expand_as(out))


def test_normalised_coordinates_use_the_detector_size_not_the_feature_size():
    # a linear ramp is reproduced exactly by bilinear sampling, so the lifted value *is* the sampling coordinate
    g = cone(angles=(0.0, 30.0), detector_offset_mm=(5.0, 3.0))
    size, fov = (8, 12, 10), (64.0, 96.0, 80.0)
    h, w = 4, 8
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    ys = (torch.arange(h) + 0.5) / h * 2 - 1
    feats = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)])  # (2, h, w)
    out, mask = ConeBeamLift(g, size, fov)(feats.expand(1, 2, 2, h, w).double(), return_mask=True)
    assert out.shape == (1, 2, 2, *size)
    proj = g.project(voxel_centres(size, fov))
    x_norm = ((proj[..., 1] + 0.5) / N * 2 - 1).clamp(-1 + 1 / w, 1 - 1 / w)  # edge band reads the edge pixel
    y_norm = ((proj[..., 0] + 0.5) / N * 2 - 1).clamp(-1 + 1 / h, 1 - 1 / h)
    seen = mask[0, :, 0].bool()
    assert seen.all()  # this small volume fits on the detector
    torch.testing.assert_close(out[0, :, 0], x_norm)
    torch.testing.assert_close(out[0, :, 1], y_norm)


def test_call_time_angles_override_the_construction_angles():
    torch.manual_seed(0)
    lift = ConeBeamLift(cone(angles=(0.0, 90.0)), N, FOV)
    feats = torch.rand(1, 2, 3, N, N)
    at_30 = ConeBeamLift(cone(angles=(30.0,)), N, FOV)(feats[:, :1])
    torch.testing.assert_close(lift(feats[:, :1], [30.0]), at_30)
    torch.testing.assert_close(lift(feats[:, :1], torch.tensor([30.0])), at_30)
    torch.testing.assert_close(lift(feats.expand(2, -1, -1, -1, -1), torch.tensor([[0.0, 90.0]] * 2)),
                               lift(feats.expand(2, -1, -1, -1, -1)))
    default, other = lift(feats), lift(feats, (0.0, 60.0))
    torch.testing.assert_close(default[:, 0], other[:, 0])
    assert not torch.allclose(default[:, 1], other[:, 1])
    with pytest.raises(ValueError, match="3 angles"):
        lift(feats, [0.0, 90.0, 30.0])
    with pytest.raises(ValueError, match="share their view angles"):
        lift(feats.expand(2, -1, -1, -1, -1), torch.tensor([[0.0, 90.0], [0.0, 60.0]]))


def test_gradient_flows_to_the_features():
    lift = ConeBeamLift(cone(angles=(0.0, 30.0), detector_shape=(6, 6), pixel_spacing_mm=(30.0, 30.0)), 4, FOV)
    feats = torch.rand(1, 2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: lift(f), (feats,))
    lift(feats).sum().backward()
    assert feats.grad.abs().sum() > 0 and torch.isfinite(feats.grad).all()


def test_sampling_grids_are_cached_per_angles_size_and_dtype():
    lift = ConeBeamLift(cone(), 8, FOV, cache_size=2)
    first = lift.sampling_grid((0.0, 90.0), (N, N), "cpu", torch.float32)
    assert lift.sampling_grid([0, 90], (N, N), "cpu", torch.float32) is first
    assert first[0].shape == (2, 1, 8**3, 2) and first[1].shape == (2, 1, 8, 8, 8)
    as_double = lift.sampling_grid((0.0, 90.0), (N, N), "cpu", torch.float64)
    assert as_double is not first and as_double[0].dtype == torch.float64
    lift.sampling_grid((0.0, 90.0), (8, 8), "cpu", torch.float32)  # a third entry evicts the oldest
    again = lift.sampling_grid((0.0, 90.0), (N, N), "cpu", torch.float32)
    assert again is not first and torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert len(lift._cache) == 2
    lift(torch.rand(1, 2, 1, 8, 8), (0.0, 90.0))
    lift(torch.rand(1, 2, 1, 8, 8), (0.0, 90.0))
    assert len(lift._cache) == 2


@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_opposite_parallel_views_agree_up_to_a_left_right_image_flip(angle):
    # the opposite view sees the same rays from behind: its image is the mirror image (columns reversed)
    torch.manual_seed(1)
    feats = torch.rand(1, 1, 2, N, N)
    lift = ConeBeamLift(parallel(angles=(angle,)), N, FOV)
    torch.testing.assert_close(lift(feats, [angle + 180.0]), lift(feats.flip(-1)), atol=1e-6, rtol=0)
    assert not torch.allclose(lift(feats, [angle + 180.0]), lift(feats))


def test_half_precision_features_are_sampled_on_an_accurate_grid():
    lift = ConeBeamLift(cone(), N, FOV)
    feats = torch.rand(1, 3, 2, N, N)
    out = lift(feats.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    # sampled in float32, rounded once: a bfloat16 grid would be off by up to a pixel on large detectors
    assert torch.equal(out, lift(feats.to(torch.bfloat16).float()).to(torch.bfloat16))
