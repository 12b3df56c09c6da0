import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from x2ct.evaluation.published_metrics import X2CT_GAN_PEAK, X2CT_GAN_RANGE, slice_ssim, x2ct_gan_metrics
from x2ct.ops.metrics import psnr, ssim3d

SHAPE = (20, 24, 28)
KEYS = {"psnr_3d", "psnr_slice", "ssim_slice", "psnr_slice_d", "psnr_slice_h", "psnr_slice_w", "ssim_slice_d",
        "ssim_slice_h", "ssim_slice_w", "mae"}


def ct_like_pair(shape=SHAPE, seed=0, noise=0.03):
    # a smooth volume with flat zero (air) and one (bone) regions, and a noisy, slightly blurred copy
    rng = np.random.default_rng(seed)
    target = np.clip(4 * (gaussian_filter(rng.random(shape), 2.0) - 0.5) + 0.5, 0, 1)
    pred = gaussian_filter(target, 0.7) + noise * rng.standard_normal(shape)
    return pred, target  # pred leaves [0, 1]: the protocol clips it


def reference_x2ct_gan(pred, target):
    """The protocol written with numpy + scikit-image, the way the X2CT-GAN test script computes it."""
    pred, target = np.clip(pred, 0, 1), np.clip(target, 0, 1)
    out = {}
    for axis, name in enumerate("dhw"):
        # their multichannel=True call: slices along the last axis, one SSIM per slice, averaged
        out[f"ssim_slice_{name}"] = structural_similarity(
            np.moveaxis(target, axis, -1).astype(np.float64), np.moveaxis(pred, axis, -1).astype(np.float64),
            data_range=1.0, channel_axis=-1)
    p, t = (pred * 2500).astype(np.int32), (target * 2500).astype(np.int32)
    se = (p.astype(np.float64) - t.astype(np.float64)) ** 2

    def capped_psnr(mse):
        mse = np.atleast_1d(mse)
        with np.errstate(divide="ignore"):
            value = 20 * np.log10(4095 / np.sqrt(mse))
        return np.where(mse == 0, 100.0, value)

    out["psnr_3d"] = capped_psnr(se.mean())[0]
    for axis, name in enumerate("dhw"):
        other = tuple(a for a in range(3) if a != axis)
        out[f"psnr_slice_{name}"] = capped_psnr(se.mean(axis=other)).mean()
    out["psnr_slice"] = np.mean([out[f"psnr_slice_{n}"] for n in "dhw"])
    out["ssim_slice"] = np.mean([out[f"ssim_slice_{n}"] for n in "dhw"])
    out["mae"] = np.abs(p.astype(np.float64) - t).mean()
    return out


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("data_range", [1.0, 4095.0])
def test_slice_ssim_matches_scikit_image_slice_by_slice(axis, data_range):
    pred, target = ct_like_pair((9, 13, 17), seed=axis)
    pred, target = data_range * np.clip(pred, 0, 1), data_range * target  # data spanning the stated range
    got = slice_ssim(torch.from_numpy(pred), torch.from_numpy(target), axis, data_range)
    expected = [structural_similarity(np.take(target, i, axis), np.take(pred, i, axis), data_range=data_range)
                for i in range(pred.shape[axis])]
    assert got.shape == (pred.shape[axis],) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
    assert np.ptp(expected) > 0.01  # the slices differ, so a wrong slice order would fail


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_x2ct_gan_metrics_match_the_numpy_reference(dtype):
    pred, target = ct_like_pair()
    # float32 inputs: the [0, 2500] scaling and truncation happen in float32 in both, as in the authors' pipeline
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    pred, target = pred.astype(np_dtype), target.astype(np_dtype)
    got = x2ct_gan_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    expected = reference_x2ct_gan(pred, target)
    assert set(got) == KEYS and all(isinstance(v, float) for v in got.values())
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_psnr_3d_exceeds_the_true_psnr_by_20_log10_4095_over_2500():
    pred, target = ct_like_pair((32, 32, 32), seed=3)
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    got = x2ct_gan_metrics(p, t)
    true_psnr = psnr(p.clamp(0, 1), t).item()
    offset = 20 * math.log10(X2CT_GAN_PEAK / X2CT_GAN_RANGE)
    assert offset == pytest.approx(4.2863, abs=1e-4)
    assert got["psnr_3d"] - true_psnr == pytest.approx(offset, abs=0.05)
    # a mean of per-slice logarithms is at least the log of the mean MSE (Jensen); no slice is exact here
    assert all(got[f"psnr_slice_{n}"] >= got["psnr_3d"] for n in "dhw")
    # slice SSIM and 3D SSIM are different numbers for the same pair
    assert abs(got["ssim_slice"] - ssim3d(p.clamp(0, 1), t).item()) > 1e-3


def test_exact_slices_count_as_100_db():
    target = np.clip(gaussian_filter(np.random.default_rng(1).random(SHAPE), 1.0), 0, 1)
    pred = target.copy()
    pred[4] += 0.1  # only slice d = 4 differs
    got = x2ct_gan_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    p, t = (np.clip(pred, 0, 1) * 2500).astype(np.int32), (target * 2500).astype(np.int32)
    slice_psnr = 20 * np.log10(4095 / np.sqrt(np.mean((p[4] - t[4]).astype(np.float64) ** 2)))
    assert got["psnr_slice_d"] == pytest.approx((19 * 100.0 + slice_psnr) / 20, abs=1e-9)
    same = x2ct_gan_metrics(torch.from_numpy(target), torch.from_numpy(target))
    assert same["psnr_3d"] == same["psnr_slice"] == 100.0 and same["ssim_slice"] == pytest.approx(1.0)
    assert same["mae"] == 0.0


def test_integer_truncation_and_clipping():
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 2500, size=SHAPE)
    target = (levels + 0.5) / 2500
    pred = target + 0.3 / 2500  # less than one integer step: truncates to the same integers
    got = x2ct_gan_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    assert got["psnr_3d"] == 100.0 and got["mae"] == 0.0
    assert got["ssim_slice"] < 1.0  # SSIM is taken on the floats, before the truncation
    # values outside [0, 1] are clipped first
    pred, target = ct_like_pair(seed=5, noise=0.3)
    assert pred.min() < 0 and pred.max() > 1
    clipped = x2ct_gan_metrics(torch.from_numpy(np.clip(pred, 0, 1)), torch.from_numpy(target))
    assert x2ct_gan_metrics(torch.from_numpy(pred), torch.from_numpy(target)) == clipped


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"pred \(8, 8, 8\) and target \(8, 8, 9\) differ in shape"):
        x2ct_gan_metrics(torch.rand(8, 8, 8), torch.rand(8, 8, 9))
    with pytest.raises(ValueError, match=r"expected one volume \(D, H, W\), got shape \(1, 1, 8, 8, 8\)"):
        x2ct_gan_metrics(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"volume \(8, 6, 8\) is smaller than the 7-pixel SSIM window"):
        x2ct_gan_metrics(torch.rand(8, 6, 8), torch.rand(8, 6, 8))
    with pytest.raises(TypeError, match=r"expected float volumes in \[0, 1\], got torch.int64"):
        x2ct_gan_metrics(torch.ones(8, 8, 8, dtype=torch.int64), torch.ones(8, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"axis must be 0, 1 or 2"):
        slice_ssim(torch.rand(8, 8, 8), torch.rand(8, 8, 8), axis=3, data_range=1.0)
