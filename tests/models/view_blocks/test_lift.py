import pytest
import torch

from x2ct.models.view_blocks.lift import ChannelsToDepth, ViewLift, copy_along_rays, view_to_volume
from x2ct.ops.patches import crop_patches
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import render_drr

N = 8


def delta_image(r: int, c: int, n: int = N) -> torch.Tensor:
    img = torch.zeros(1, 1, n, n)
    img[0, 0, r, c] = 1.0
    return img


def lit_voxels(volume: torch.Tensor) -> set[tuple[int, int, int]]:
    return {tuple(i) for i in torch.nonzero(volume[0, 0] > 0.5).tolist()}


def test_pa_pixel_lands_on_its_ray_along_h():
    # PA: rows run head->feet (decreasing D), columns patient right->left (decreasing W), the ray runs along H
    r, c = 1, 2
    vol = view_to_volume(copy_along_rays(delta_image(r, c), N), 0.0)
    assert lit_voxels(vol) == {(N - 1 - r, h, N - 1 - c) for h in range(N)}


def test_lateral_pixel_lands_on_its_ray_along_w():
    # left lateral: rows decreasing D, columns anterior->posterior (decreasing H), the ray runs along W
    r, c = 1, 2
    vol = view_to_volume(copy_along_rays(delta_image(r, c), N), 90.0)
    assert lit_voxels(vol) == {(N - 1 - r, N - 1 - c, w) for w in range(N)}


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0, 45.0])
def test_first_ray_sample_sits_on_the_source_side(angle):
    # view-block index T = 0 is the source end of every ray; the source direction comes from the physics geometry
    block = torch.zeros(1, 1, N, N, N)
    block[:, :, 0] = 1.0
    vol = view_to_volume(block, angle)[0, 0]
    _, h, w = torch.meshgrid(*(torch.arange(N, dtype=torch.float32) - (N - 1) / 2,) * 3, indexing="ij")
    centroid_xy = torch.stack([(vol * w).sum(), (vol * h).sum()]) / vol.sum()  # RAS x = W, y = H
    e_s, _, _ = ProjectionGeometry(kind="parallel", angles_deg=(angle,), detector_shape=(N, N),
                                   pixel_spacing_mm=(1.0, 1.0)).frames()
    assert torch.dot(centroid_xy, e_s[0, :2]) > 0.4 * N


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0, 45.0, 30.0])
def test_backprojection_of_a_rendered_point_passes_through_the_point(angle):
    # render a one-voxel volume with the real projector, lift the image back: the brightest ray hits that voxel
    n, point = 16, (11, 4, 2)
    vol = torch.zeros(1, 1, n, n, n, dtype=torch.float64)
    vol[(0, 0, *point)] = 1.0
    geom = ProjectionGeometry(kind="parallel", angles_deg=(angle,), detector_shape=(n, n), pixel_spacing_mm=(1, 1))
    img = render_drr(vol, (1.0, 1.0, 1.0), geom)[:, :1].float()  # (1, 1, n, n)
    back = view_to_volume(copy_along_rays(img, n), angle)[0, 0]
    assert back[point] == pytest.approx(back.max().item(), rel=1e-6)
    assert back[point] > 0.5 * img.max()


def test_pa_and_lateral_backprojections_meet_only_at_the_point():
    n, point = 16, (3, 12, 6)
    vol = torch.zeros(1, 1, n, n, n, dtype=torch.float64)
    vol[(0, 0, *point)] = 1.0
    geom = ProjectionGeometry(kind="parallel", angles_deg=(0.0, 90.0), detector_shape=(n, n), pixel_spacing_mm=(1, 1))
    img = render_drr(vol, (1.0, 1.0, 1.0), geom).float()
    both = sum(view_to_volume(copy_along_rays(img[:, i : i + 1], n), a) for i, a in enumerate((0.0, 90.0)))[0, 0]
    assert lit_voxels((both > 1.5).float()[None, None]) == {point}


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0, -90.0, 450.0])
def test_general_rotation_matches_the_exact_quarter_turns(angle):
    block = torch.rand(2, 3, N, 5, N, generator=torch.Generator().manual_seed(0))
    exact = view_to_volume(block, angle)
    rotated = view_to_volume(block, angle, exact_quarter_turns=False)
    assert exact.shape == (2, 3, 5, N, N)
    torch.testing.assert_close(rotated, exact, atol=1e-5, rtol=0)


def test_view_to_volume_rejects_a_block_with_unequal_ray_and_column_counts():
    with pytest.raises(ValueError, match=r"T == K"):
        view_to_volume(torch.zeros(1, 1, 4, 8, 8), 0.0)


def test_channels_to_depth_orders_channel_groups_along_the_ray():
    lift = ChannelsToDepth(in_channels=2, out_channels=3, depth=4, norm="none")
    assert lift(torch.rand(5, 2, 6, 6)).shape == (5, 3, 4, 6, 6)
    # channel c * depth + t of the 1x1 convolution becomes feature c at ray position t
    with torch.no_grad():
        lift.conv.weight.zero_()
        lift.conv.bias.zero_()
        lift.conv.bias[1 * 4 + 2] = 1.0
    out = lift(torch.zeros(1, 2, 6, 6))
    assert torch.nonzero(out[0].amax(dim=(2, 3))).tolist() == [[1, 2]]


def test_view_lift_places_every_view_by_its_own_angle():
    feats = torch.rand(2, 3, 4, N, N)
    out = ViewLift((0.0, 90.0, 30.0), "parallel", in_channels=4, grid_size=N)(feats)
    assert out.shape == (2, 3, 4, N, N, N)
    torch.testing.assert_close(out[:, 1], view_to_volume(copy_along_rays(feats[:, 1], N), 90.0))
    torch.testing.assert_close(out[:, 2], view_to_volume(copy_along_rays(feats[:, 2], N), 30.0))
    learned = ViewLift((0.0, 90.0, 30.0), "learned", in_channels=4, grid_size=N, out_channels=5)
    assert learned(feats).shape == (2, 3, 5, N, N, N)


def test_view_lift_rejects_a_wrong_number_of_views_or_size():
    lift = ViewLift((0.0, 90.0), "parallel", in_channels=4, grid_size=N)
    with pytest.raises(ValueError, match=r"one view per angle"):
        lift(torch.rand(1, 3, 4, N, N))
    with pytest.raises(ValueError, match=r"\(B, 2, C, 8, 8\)"):
        lift(torch.rand(1, 2, 4, N, N + 1))
    with pytest.raises(ValueError, match=r"ViewLift: mode='splat' is not one of geometric \| parallel \| learned"):
        ViewLift((0.0,), "splat", in_channels=4, grid_size=N)
    with pytest.raises(ValueError, match=r"ViewLift: mode=channels_to_depth is an old name: use mode=learned"):
        ViewLift((0.0,), "channels_to_depth", in_channels=4, grid_size=N)
    with pytest.raises(ValueError, match=r"keeps the channels"):
        ViewLift((0.0,), "parallel", in_channels=4, grid_size=N, out_channels=8)


def coordinate_ramps(n: int) -> torch.Tensor:
    """A ``(1, 3, n, n, n)`` view block whose channels are its own T, R and K coordinates (0 at the block's edge,
    1 at the far one): a misplaced sampling grid shows in the values, by the shift times ``1 / n`` per voxel."""
    axis = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    t, r, k = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([t, r, k])[None]


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("angle", [30.0, 100.0])
def test_a_bfloat16_block_is_rotated_on_the_float32_grid_under_autocast(n, angle):
    # under bf16 autocast a bf16 grid was off by up to 0.3 (64) / 0.5 (128) / 1.0 (256) voxels; only the values
    # may be rounded now, once, to bfloat16 (relative 2^-9; the ramps' smallest values are 1 / 2n)
    block = coordinate_ramps(n).to(torch.bfloat16)
    reference = view_to_volume(block.float(), angle)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lifted = view_to_volume(block, angle)
    torch.testing.assert_close(lifted.float(), reference, rtol=2.0**-8, atol=1e-6)
    assert lifted.dtype == torch.bfloat16


def test_a_bfloat16_view_lift_matches_the_float32_lift_under_autocast():
    n = 64
    features = coordinate_ramps(n)[:, None, 1:, 0].repeat(1, 2, 1, 1, 1)  # (1, 2, 2, n, n): R and K ramps per view
    lift = ViewLift([30.0, 120.0], "parallel", 2, n)
    reference = lift(features.to(torch.bfloat16).float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lifted = lift(features.to(torch.bfloat16))
    torch.testing.assert_close(lifted.float(), reference, rtol=2.0**-8, atol=1e-6)


@pytest.mark.parametrize("mode", ["parallel", "geometric"])
@pytest.mark.parametrize("angles", [(0.0, 90.0), (0.0, 33.0, 90.0, 181.0, 270.0)])
def test_a_patch_lift_equals_the_whole_lift_cropped_without_building_the_whole_grid(mode, angles):
    """The cascade lifts view features only at a training patch's (or inference tile's) voxels; each
    sample has its own patch. The geometric lift's detector misses some voxels (mask 0 there, cropped alike)."""
    n, size = 12, (8, 9, 7)
    geometry = ProjectionGeometry(kind="cone", angles_deg=angles, detector_shape=(10, 10), pixel_spacing_mm=(8.0, 8.0),
                                  source_to_isocenter_mm=300.0, source_to_detector_mm=450.0)
    lift = ViewLift(angles, mode, 3, n, geometry=geometry, fov_mm=(96.0, 96.0, 96.0))
    features = torch.randn(2, len(angles), 3, n, n, generator=torch.Generator().manual_seed(0))
    origins = torch.tensor([[0, 3, 5], [4, 0, 4]])
    whole, whole_mask = lift(features, return_mask=True)
    patch, mask = lift(features, return_mask=True, region=(origins, size))

    def crop(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([crop_patches(x[:, i], origins, size) for i in range(len(angles))], dim=1)

    assert patch.shape == (2, len(angles), 3, *size)
    torch.testing.assert_close(patch, crop(whole), atol=1e-5, rtol=0)
    if mode == "geometric":
        assert torch.equal(mask, crop(whole_mask.contiguous())) and 0 < mask.mean() < 1
    else:
        assert mask is None and whole_mask is None


def test_the_learned_lift_has_no_patch_form():
    lift = ViewLift((0.0, 90.0), "learned", 3, 8)
    with pytest.raises(ValueError, match="no patch-local form"):
        lift(torch.randn(1, 2, 3, 8, 8), region=(torch.zeros(1, 3, dtype=torch.long), (4, 4, 4)))
