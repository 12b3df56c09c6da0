import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from x2ct.evaluation.metrics import gaussian_window, psnr, ssim3d

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


def skimage_ssim(pred, target, data_range=1.0, sigma=1.5):
    return structural_similarity(target, pred, gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
                                 data_range=data_range)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make_pair", [random_pair, structured_pair])
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
