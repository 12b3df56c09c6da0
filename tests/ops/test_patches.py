"""Patch machinery of the cascade's fine stages: tiled inference equals a whole forward, crops and contexts align."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from x2ct.ops.patches import (
    blend_weights,
    crop_context,
    crop_patches,
    patch_coordinates,
    sample_patch_origins,
    sliding_window_inference,
    sliding_window_regions,
    window_starts,
)

NON_DIVISIBLE = [((11, 9, 13), (4, 5, 6)), ((10, 10, 10), (4, 4, 4)), ((7, 16, 5), (7, 6, 3))]


def pointwise_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 3, 1), nn.Tanh(), nn.Conv3d(3, 2, 1))


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
@pytest.mark.parametrize(("volume_shape", "patch_size"), NON_DIVISIBLE)
def test_patch_inference_of_a_pointwise_model_equals_the_whole_volume_forward(volume_shape, patch_size, overlap,
                                                                               blend):
    model, x = pointwise_model(), torch.randn(2, 2, *volume_shape)
    with torch.no_grad():
        tiled = sliding_window_inference(lambda r: model(x[(..., *r)]), volume_shape, patch_size, overlap, blend)
        whole = model(x)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_a_single_patch_the_size_of_the_volume_equals_the_whole_forward_of_any_model(blend):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 3, padding=1))
    x = torch.randn(1, 1, 6, 7, 5)
    with torch.no_grad():
        tiled = sliding_window_inference(lambda r: model(x[(..., *r)]), (6, 7, 5), (6, 7, 5), 0.5, blend)
        whole = model(x)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_a_caller_that_crops_a_halo_gets_exact_convolutions_at_every_tile_border():
    """The caller crops its own inputs: with a halo of the receptive radius a 3x3x3 conv tiles exactly."""
    torch.manual_seed(0)
    model = nn.Conv3d(1, 2, 3, padding=1)
    radius, shape = 1, (9, 10, 11)
    x = torch.randn(1, 1, *shape)
    padded = F.pad(x, [radius] * 6)  # the conv's own zero padding at the volume border, not at tile borders

    def predict(region):
        halo = tuple(slice(s.start, s.stop + 2 * radius) for s in region)  # region shifted by +radius in `padded`
        out = model(padded[(..., *halo)])
        return out[(..., *[slice(radius, -radius)] * 3)]

    with torch.no_grad():
        tiled = sliding_window_inference(predict, shape, (4, 4, 4), overlap=0.25)
        without_halo = sliding_window_inference(lambda r: model(x[(..., *r)]), shape, (4, 4, 4), overlap=0.25)
        whole = model(x)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    assert (without_halo - whole).abs().max() > 1e-3  # tile borders see zero padding: the halo is what fixes it


@pytest.mark.parametrize(("volume_shape", "patch_size"), NON_DIVISIBLE)
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.9])
def test_every_voxel_is_covered_and_windows_stay_inside_the_volume(volume_shape, patch_size, overlap):
    count = torch.zeros(volume_shape)
    for region in sliding_window_regions(volume_shape, patch_size, overlap):
        assert all(0 <= s.start and s.stop <= n and s.stop - s.start == p
                   for s, n, p in zip(region, volume_shape, patch_size, strict=True))
        count[region] += 1
    assert count.min() >= 1
    ones = sliding_window_inference(lambda r: torch.ones(1, 1, *patch_size), volume_shape, patch_size, overlap)
    assert torch.isfinite(ones).all() and torch.allclose(ones, torch.ones_like(ones))


def test_window_starts_use_the_stride_and_snap_the_last_window_to_the_border():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert window_starts(10, 4, 0.0) == [0, 4, 6]
    assert window_starts(10, 10, 0.3) == [0]
    assert window_starts(30, 10, 0.3) == [0, 7, 14, 20]
    assert window_starts(20, 10, 0.8) == [0, 2, 4, 6, 8, 10]  # 10 * (1 - 0.8) = 1.999... in floating point: still 2
    with pytest.raises(ValueError, match="overlap"):
        window_starts(10, 4, 1.0)
    with pytest.raises(ValueError, match="patch 12"):
        window_starts(10, 12, 0.5)


def test_constant_blend_of_overlapping_constant_predictions_is_that_constant():
    calls = []

    def predict(region):
        calls.append(region)
        return torch.full((2, 3, 4, 4, 4), 0.37, dtype=torch.float64)

    out = sliding_window_inference(predict, (9, 6, 7), (4, 4, 4), overlap=0.5, blend="constant")
    assert out.shape == (2, 3, 9, 6, 7) and out.dtype == torch.float64  # batch, channels, dtype from the first call
    assert len(calls) > 8  # the tiles do overlap
    torch.testing.assert_close(out, torch.full_like(out, 0.37), atol=1e-12, rtol=0)


def test_gaussian_blend_favours_the_patch_centre_and_rejects_bad_predictions():
    w = blend_weights((8, 9, 8))
    assert w.shape == (8, 9, 8) and w.max() == pytest.approx(1.0) and w.min() > 0
    assert w[3, 4, 3] > w[0, 4, 3] > w[0, 0, 0]
    sigma = 9 / 8  # nnU-Net's sigma = patch / 8 on the odd axis, whose centre voxel has weight 1 along it
    assert (w[:, 5, :] / w[:, 4, :]).mean().item() == pytest.approx(torch.exp(torch.tensor(-0.5 / sigma**2)).item())
    assert torch.equal(blend_weights((3, 4, 5), "constant"), torch.ones(3, 4, 5))
    with pytest.raises(ValueError, match="blend"):
        blend_weights((3, 3, 3), "linear")
    with pytest.raises(ValueError, match=r"expected \(1, 1, 4, 4, 4\)"):
        sliding_window_inference(lambda r: torch.zeros(1, 1, 4, 4, 3), (8, 8, 8), (4, 4, 4))


def test_sampled_origins_cover_the_valid_range_and_are_reproducible():
    shape, patch = (10, 7, 12), (4, 7, 5)
    origins = sample_patch_origins(shape, patch, 2000, torch.Generator().manual_seed(3))
    assert origins.shape == (2000, 3) and origins.dtype == torch.long
    assert origins.min(0).values.tolist() == [0, 0, 0]
    assert origins.max(0).values.tolist() == [6, 0, 7]  # every origin up to volume - patch is drawn, none beyond
    again = sample_patch_origins(shape, patch, 2000, torch.Generator().manual_seed(3))
    assert torch.equal(origins, again)
    assert not torch.equal(origins, sample_patch_origins(shape, patch, 2000, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match=r"patch_size \(4, 8, 5\)"):
        sample_patch_origins(shape, (4, 8, 5), 1)


def test_crop_patches_matches_slicing_per_sample_and_checks_bounds():
    volume = torch.randn(3, 2, 8, 9, 10, requires_grad=True)
    origins = torch.tensor([[0, 0, 0], [4, 5, 6], [2, 1, 3]])
    patches = crop_patches(volume, origins, (4, 4, 4))
    assert patches.shape == (3, 2, 4, 4, 4)
    for b, (d, h, w) in enumerate(origins.tolist()):
        assert torch.equal(patches[b], volume[b, :, d:d + 4, h:h + 4, w:w + 4])
    shared = crop_patches(volume, torch.tensor([1, 2, 3]), (4, 5, 6))
    assert torch.equal(shared, volume[:, :, 1:5, 2:7, 3:9])
    patches.sum().backward()
    assert volume.grad.sum().item() == pytest.approx(3 * 2 * 64)  # the patches do not overlap within a sample
    with pytest.raises(ValueError, match="origins must lie in"):
        crop_patches(volume, torch.tensor([[0, 0, 0], [5, 0, 0], [0, 0, 0]]), (4, 4, 4))
    with pytest.raises(ValueError, match=r"\(B=3, 3\)"):
        crop_patches(volume, torch.zeros(2, 3, dtype=torch.long), (4, 4, 4))


@pytest.mark.parametrize("scale", [2, 4, (2, 4, 2)])
def test_crop_context_of_a_coarse_ramp_is_the_fine_ramp_inside_the_volume(scale):
    """Coarse voxel j holds the fine coordinate of its centre, (j + 0.5) * s - 0.5: upsampled, fine voxel i reads i."""
    scales = (scale,) * 3 if isinstance(scale, int) else scale
    coarse_shape, patch = (5, 4, 6), (6, 7, 5)
    fine_shape = tuple(n * s for n, s in zip(coarse_shape, scales, strict=True))
    ramps = [(torch.arange(n, dtype=torch.float64) + 0.5) * s - 0.5 for n, s in zip(coarse_shape, scales, strict=True)]
    coarse = torch.stack(torch.meshgrid(*ramps, indexing="ij"))[None].expand(2, 3, *coarse_shape)  # channel k: axis k
    origins = sample_patch_origins(fine_shape, patch, 2, torch.Generator().manual_seed(0))
    origins[0] = torch.tensor([0, 0, 0])  # one patch at the corner, where the clamp to the border voxels shows
    context = crop_context(coarse, origins, patch, scale)
    assert context.shape == (2, 3, *patch)
    for b in range(2):
        for k in range(3):
            fine = (origins[b, k] + torch.arange(patch[k])).double()  # fine index of the patch voxels along axis k
            view = [1, 1, 1]
            view[k] = patch[k]
            expected = fine.view(view).expand(patch)
            interior = (fine >= (scales[k] - 1) / 2) & (fine <= fine_shape[k] - 1 - (scales[k] - 1) / 2)
            mask = interior.view(view).expand(patch)
            torch.testing.assert_close(context[b, k][mask], expected[mask], atol=1e-9, rtol=0)
    upsampled = F.interpolate(coarse, scale_factor=scales, mode="trilinear", align_corners=False)
    torch.testing.assert_close(context, crop_patches(upsampled, origins, patch), atol=1e-9, rtol=0)  # borders too
    assert origins[0].tolist() == [0, 0, 0] and context[0, 0, 0, 0, 0] == coarse[0, 0, 0, 0, 0]  # clamped corner


def test_crop_context_rejects_a_patch_outside_the_fine_volume():
    coarse = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="must lie inside the fine volume"):
        crop_context(coarse, torch.tensor([5, 0, 0]), (4, 4, 4), 2)


def test_patch_coordinates_are_the_grid_sample_grid_of_the_patch():
    volume = torch.randn(2, 1, 6, 7, 8, dtype=torch.float64)
    origins = torch.tensor([[0, 0, 0], [2, 3, 1]])
    coords = patch_coordinates(origins, (4, 4, 7), (6, 7, 8))
    assert coords.shape == (2, 3, 4, 4, 7) and coords.min() > -1 and coords.max() < 1
    sampled = F.grid_sample(volume, coords.double().flip(1).permute(0, 2, 3, 4, 1), align_corners=False)
    torch.testing.assert_close(sampled, crop_patches(volume, origins, (4, 4, 7)), atol=1e-6, rtol=0)
    whole = patch_coordinates(torch.tensor([0, 0, 0]), (6, 7, 8), (6, 7, 8))
    assert whole.shape == (1, 3, 6, 7, 8)
    for k, n in enumerate((6, 7, 8)):  # symmetric about the centre: first and last voxel centres at -+(1 - 1/n)
        assert whole[0, k].min().item() == pytest.approx(-1 + 1 / n) and whole[0, k].max().item() == pytest.approx(
            1 - 1 / n)
    assert whole[0, 0, :2, 0, 0].tolist() == pytest.approx([-5 / 6, -3 / 6])  # 2 * (i + 0.5) / 6 - 1


def test_tiles_predicted_in_bfloat16_are_blended_in_float32():
    # under bf16 autocast a model returns bf16 tiles; weights and sums stay float32, so the blend is exactly the
    # float32 blend of those tiles (accumulating in bf16 drifted by several bf16 steps where tiles overlap)
    volume = torch.rand(1, 2, 24, 20, 28, generator=torch.Generator().manual_seed(0)) + 0.5
    shape, patch = (24, 20, 28), (10, 8, 12)

    def predict(region):
        return volume[(..., *region)].to(torch.bfloat16)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        blended = sliding_window_inference(predict, shape, patch, overlap=0.6)
    reference = sliding_window_inference(lambda r: predict(r).float(), shape, patch, overlap=0.6)
    assert blended.dtype == torch.float32
    torch.testing.assert_close(blended, reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("coarse_size", [24, 48])
def test_crop_context_of_a_bfloat16_volume_samples_on_the_float32_grid(coarse_size):
    # a bf16 grid (the coarse volume's dtype under autocast) misplaced the samples near the far border of fine
    # volumes whose side is not a power of two (at 2^k <= 256 voxel centres are exact in bf16); only the values may
    # be rounded now, once, to bfloat16. Ramps that cross 0 at the patch centre keep the values small there, so
    # their rounding stays far below a misplaced sample's error
    fine_size, patch = 2 * coarse_size, (16, 16, 16)
    origin = fine_size - 20
    axis = (torch.arange(coarse_size, dtype=torch.float32) + 0.5) / coarse_size - (origin + 8.5) / fine_size
    coarse = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))[None].to(torch.bfloat16)  # (1, 3, n^3)
    origins = torch.tensor([[origin] * 3])
    reference = crop_context(coarse.float(), origins, patch, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        context = crop_context(coarse, origins, patch, 2)
    torch.testing.assert_close(context.float(), reference, rtol=2.0**-8, atol=1e-6)
