import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from x2ct.ops.metrics import gaussian_window, mae, psnr, ssim3d

SHAPES = [(11, 11, 11), (16, 20, 24), (13, 40, 17), (32, 32, 32)]


def random_pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    return np.clip(target + noise * rng.standard_normal(shape), 0.0, 1.0), target


def structured_pair(shape):
    # a bright ellipsoid with a soft edge and a ramp background; the prediction is blurred, shifted and dimmer
    d, h, w = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    target = 0.2 + 0.1 * d + 0.6 / (1 + np.exp((np.sqrt((d / 0.7) ** 2 + (h / 0.5) ** 2 + (w / 0.6) ** 2) - 1) / 0.05))
    pred = 0.9 * np.roll(target, 1, axis=2)
    pred = (pred + np.roll(pred, 1, axis=0)) / 2
    return np.clip(pred, 0, 1), np.clip(target, 0, 1)


def smooth_pair(shape, seed=0):
    # smoothed noise stretched over [0, 1] (clipped, so there are flat regions too) and a noisier, blurred copy
    rng = np.random.default_rng(seed)
    target = np.clip(4 * (gaussian_filter(rng.random(shape), 2.0) - 0.5) + 0.5, 0, 1)
    pred = gaussian_filter(target, 0.8) + 0.03 * rng.standard_normal(shape)
    return np.clip(pred, 0, 1), target


def skimage_ssim(pred, target, data_range=1.0, sigma=1.5):
    return structural_similarity(target, pred, gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
                                 data_range=data_range)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make_pair", [random_pair, structured_pair, smooth_pair])
def test_ssim3d_and_psnr_match_scikit_image(shape, make_pair):
    pred, target = make_pair(shape)
    got_ssim = ssim3d(torch.from_numpy(pred), torch.from_numpy(target))
    got_psnr = psnr(torch.from_numpy(pred), torch.from_numpy(target))
    assert got_ssim.shape == got_psnr.shape == (1,)
    assert got_ssim.item() == pytest.approx(skimage_ssim(pred, target), abs=1e-4)
    assert got_psnr.item() == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1.0), abs=1e-4)


def test_batched_float32_volumes_give_one_value_each():
    pairs = [random_pair((12, 14, 16), seed=s, noise=n) for s, n in [(0, 0.05), (1, 0.2), (2, 0.4)]]
    pred = torch.from_numpy(np.stack([p for p, _ in pairs])[:, None]).float()
    target = torch.from_numpy(np.stack([t for _, t in pairs])[:, None]).float()
    ssim, peak = ssim3d(pred, target), psnr(pred, target)
    assert ssim.shape == peak.shape == (3,)
    for i, (p, t) in enumerate(pairs):
        p32, t32 = p.astype(np.float32).astype(np.float64), t.astype(np.float32).astype(np.float64)
        assert ssim[i].item() == pytest.approx(skimage_ssim(p32, t32), abs=1e-4)
        assert peak[i].item() == pytest.approx(peak_signal_noise_ratio(t32, p32, data_range=1.0), abs=1e-4)
    assert ssim[0] > ssim[1] > ssim[2]


def test_other_data_range_and_sigma_match_scikit_image():
    pred, target = random_pair((15, 18, 21), seed=3)
    pred, target = 2 * pred, 2 * target
    got = ssim3d(torch.from_numpy(pred), torch.from_numpy(target), data_range=2.0, sigma=1.0)
    assert got.item() == pytest.approx(skimage_ssim(pred, target, data_range=2.0, sigma=1.0), abs=1e-4)
    assert psnr(torch.from_numpy(pred), torch.from_numpy(target), data_range=2.0).item() == pytest.approx(
        peak_signal_noise_ratio(target, pred, data_range=2.0), abs=1e-4)


def test_identical_volumes():
    x = torch.rand(2, 1, 12, 12, 12)
    torch.testing.assert_close(ssim3d(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all()


def test_gaussian_window_is_the_truncated_normalised_gaussian():
    w = gaussian_window(1.5)
    assert w.numel() == 11  # radius int(3.5 * 1.5 + 0.5) = 5
    assert w.sum().item() == pytest.approx(1.0)
    assert (w[5] / w[6]).item() == pytest.approx(np.exp(0.5 / 1.5**2))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"pred \(1, 1, 12, 12, 12\) and target \(1, 1, 12, 12, 11\)"):
        psnr(torch.rand(1, 1, 12, 12, 12), torch.rand(1, 1, 12, 12, 11))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\) or \(D, H, W\), got \(1, 2, 12, 12, 12\)"):
        ssim3d(torch.rand(1, 2, 12, 12, 12), torch.rand(1, 2, 12, 12, 12))
    with pytest.raises(ValueError, match=r"smaller than the 11-voxel window"):
        ssim3d(torch.rand(12, 10, 12), torch.rand(12, 10, 12))


def as_torch(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def region_mask(shape, seed=0):
    # an irregular region: a thresholded smooth field, so it has holes and touches some faces
    rng = np.random.default_rng(seed + 100)
    return gaussian_filter(rng.random(shape), 2.0) > 0.5


@pytest.mark.parametrize("shape", [(16, 20, 24), (13, 40, 17)])
def test_masked_psnr_and_mae_use_only_the_mask_voxels(shape):
    pred, target = smooth_pair(shape)
    mask = region_mask(shape)
    assert 0 < mask.sum() < mask.size
    p, t, m = as_torch(pred, target, mask)
    diff = (pred - target)[mask]
    assert psnr(p, t, mask=m).item() == pytest.approx(10 * np.log10(1.0 / np.mean(diff**2)), abs=1e-10)
    assert mae(p, t, mask=m).item() == pytest.approx(np.mean(np.abs(diff)), abs=1e-12)
    assert mae(p, t).item() == pytest.approx(np.mean(np.abs(pred - target)), abs=1e-12)
    # the region's value differs from the whole volume's, so the mask is really applied
    assert abs(psnr(p, t, mask=m).item() - psnr(p, t).item()) > 0.01


@pytest.mark.parametrize("shape", [(16, 20, 24), (13, 40, 17)])
def test_masked_ssim3d_is_the_mean_of_the_skimage_map_over_the_cropped_mask(shape):
    pred, target = smooth_pair(shape)
    mask = region_mask(shape)
    _, ssim_map = structural_similarity(target, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, full=True)
    r = 5  # radius of the sigma-1.5 window
    valid = (slice(r, -r),) * 3
    expected = ssim_map[valid][mask[valid]].mean()
    p, t, m = as_torch(pred, target, mask)
    assert ssim3d(p, t, mask=m).item() == pytest.approx(expected, abs=1e-6)
    assert abs(ssim3d(p, t, mask=m).item() - ssim3d(p, t).item()) > 1e-3


def test_all_true_mask_equals_no_mask():
    pred, target = smooth_pair((14, 16, 18))
    p, t = as_torch(pred, target)
    everywhere = torch.ones(p.shape, dtype=torch.bool)
    torch.testing.assert_close(psnr(p, t, mask=everywhere), psnr(p, t), rtol=0, atol=1e-12)
    torch.testing.assert_close(ssim3d(p, t, mask=everywhere), ssim3d(p, t), rtol=0, atol=1e-12)
    torch.testing.assert_close(mae(p, t, mask=everywhere), mae(p, t), rtol=0, atol=1e-12)


def test_empty_mask_gives_nan_for_that_volume_only():
    pairs = [smooth_pair((14, 16, 18), seed=s) for s in (0, 1)]
    p = torch.from_numpy(np.stack([a for a, _ in pairs])[:, None])
    t = torch.from_numpy(np.stack([b for _, b in pairs])[:, None])
    mask = torch.zeros(p.shape, dtype=torch.bool)
    mask[1, :, 3:9, 4:12, 5:13] = True
    for metric in (psnr, ssim3d, mae):
        values = metric(p, t, mask=mask)
        assert torch.isnan(values[0]) and torch.isfinite(values[1]), metric.__name__
    # a mask that lies only in the 5-voxel border shell is empty once cropped to ssim3d's valid region
    shell = torch.zeros(p.shape, dtype=torch.bool)
    shell[:, :, :5] = True
    assert torch.isnan(ssim3d(p, t, mask=shell)).all()
    assert torch.isfinite(psnr(p, t, mask=shell)).all()


def test_one_volume_mask_is_shared_by_the_batch():
    shape = (16, 20, 24)
    pairs = [smooth_pair(shape, seed=s) for s in (0, 1, 2)]
    p = torch.from_numpy(np.stack([a for a, _ in pairs])[:, None]).float()
    t = torch.from_numpy(np.stack([b for _, b in pairs])[:, None]).float()
    mask = torch.from_numpy(region_mask(shape))
    for metric in (psnr, ssim3d, mae):
        batched = metric(p, t, mask=mask)
        single = torch.cat([metric(p[i, 0], t[i, 0], mask=mask) for i in range(3)])
        assert batched.dtype == torch.float64 and torch.isfinite(batched).all()
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_bad_masks_are_rejected():
    p = torch.rand(2, 1, 12, 12, 12)
    with pytest.raises(TypeError, match=r"psnr: mask must be a boolean tensor, got dtype torch.float32"):
        psnr(p, p, mask=torch.ones(2, 1, 12, 12, 12))
    with pytest.raises(ValueError,
                       match=r"mae: mask of shape \(12, 12\) fits neither the volumes \(2, 1, 12, 12, 12\)"):
        mae(p, p, mask=torch.ones(12, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"ssim3d: mask of shape \(1, 1, 12, 12, 12\)"):
        ssim3d(p, p, mask=torch.ones(1, 1, 12, 12, 12, dtype=torch.bool))
