import pytest
import torch

from x2ct.losses.registry import build_loss_component
from x2ct.losses.ssim import SSIMLoss
from x2ct.ops.metrics import ssim3d


def volume(seed: int = 0, size: int = 16) -> torch.Tensor:
    """A smooth-ish random volume in [0, 1], (2, 1, size, size, size)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(2, 1, size, size, size, generator=g)
    return torch.nn.functional.avg_pool3d(v, 3, stride=1, padding=1, count_include_pad=False)


def test_ssim_loss_is_registered_and_zero_for_identical_volumes():
    target = volume()
    loss = build_loss_component("ssim")
    assert isinstance(loss, SSIMLoss)
    assert abs(loss(target.clone(), target).item()) < 1e-6


def test_ssim_loss_grows_with_the_noise_amplitude():
    target = volume()
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    values = [SSIMLoss()(target + amplitude * noise, target).item() for amplitude in (0.02, 0.1, 0.3)]
    assert 0 < values[0] < values[1] < values[2]


def test_ssim_loss_is_one_minus_the_validation_metric():
    target = volume()
    pred = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    expected = 1 - ssim3d(pred.double(), target.double(), sigma=2.0).mean()
    assert SSIMLoss(sigma=2.0)(pred, target).item() == pytest.approx(expected.item(), abs=1e-5)


def test_ssim_loss_gradient_is_finite_non_zero_and_matches_a_finite_difference():
    target = volume().double()
    pred = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    pred.requires_grad_()
    loss = SSIMLoss()
    loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    direction = torch.randn(target.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        numeric = (loss(pred + h * direction, target) - loss(pred - h * direction, target)) / (2 * h)
    assert (pred.grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-5)


def test_ssim_loss_on_volumes_smaller_than_the_window_fails_clearly():
    with pytest.raises(ValueError, match=r"\(16, 16, 10\) are smaller than the 11-voxel window"):
        SSIMLoss()(torch.rand(1, 1, 16, 16, 10), torch.rand(1, 1, 16, 16, 10))


def test_the_five_local_moments_are_filtered_in_one_separable_pass(monkeypatch):
    # mu_x, mu_y, E[x^2], E[y^2], E[xy] stacked on the batch: three 1D convolutions in all, each over 5 B volumes
    calls = []
    conv3d = torch.nn.functional.conv3d

    def counting(volumes, weight, *args, **kwargs):
        calls.append((volumes.shape[0], tuple(weight.shape[2:])))
        return conv3d(volumes, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv3d", counting)
    SSIMLoss()(volume(1), volume(2))
    assert calls == [(10, (11, 1, 1)), (10, (1, 11, 1)), (10, (1, 1, 11))]
