import math

import pytest
import torch

from x2ct.losses.frequency import FrequencyLoss
from x2ct.losses.registry import build_loss_component

SIZE = 16


def cosine(axis: int, k: int, amplitude: float) -> torch.Tensor:
    """``amplitude * cos(2 pi k x / SIZE)`` along ``axis`` (2, 3 or 4) of a (1, 1, SIZE, SIZE, SIZE) volume."""
    x = torch.arange(SIZE, dtype=torch.float64)
    shape = [1, 1, 1, 1, 1]
    shape[axis] = SIZE
    wave = (amplitude * torch.cos(2 * math.pi * k * x / SIZE)).view(shape)
    return wave.expand(1, 1, SIZE, SIZE, SIZE)


def reference(pred: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """The definition on the full spectrum (fftn), per volume, then averaged over the batch."""
    dims = (-3, -2, -1)
    diff = (torch.fft.fftn(pred, dim=dims, norm="ortho").abs() - torch.fft.fftn(target, dim=dims, norm="ortho").abs())
    freqs = torch.meshgrid(*[torch.fft.fftfreq(n, dtype=torch.float64) for n in pred.shape[2:]], indexing="ij")
    radius = torch.sqrt(sum(f**2 for f in freqs))
    weight = 1 + alpha * radius / radius.max()
    return (diff.abs() * weight).mean(dim=dims).mean()


def test_frequency_loss_is_registered_and_zero_for_identical_volumes():
    target = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = build_loss_component("frequency")
    assert isinstance(loss, FrequencyLoss)
    assert loss(target.clone(), target).item() == 0.0


@pytest.mark.parametrize("shape", [(8, 8, 8), (6, 7, 9), (5, 8, 7)])
def test_the_half_spectrum_computation_equals_the_full_spectrum_definition(shape):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 1, *shape, generator=g, dtype=torch.float64).chunk(2)
    pred, target = pred.repeat(2, 1, 1, 1, 1), torch.cat([target, pred.flip(-1)])
    for alpha in (0.0, 2.5):
        assert FrequencyLoss(alpha)(pred, target).item() == pytest.approx(reference(pred, target, alpha).item(),
                                                                          rel=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_a_cosine_costs_its_amplitude_over_root_n_times_its_frequency_weight(alpha):
    target = torch.full((1, 1, SIZE, SIZE, SIZE), 0.4, dtype=torch.float64)
    amplitude, k = 0.05, 3
    radius_max = math.sqrt(3) / 2  # cycles per voxel at the corner of an even-sized grid
    expected = amplitude / math.sqrt(SIZE**3) * (1 + alpha * (k / SIZE) / radius_max)
    for axis in (2, 3, 4):  # W is the halved axis of rfftn: each axis must count the same
        assert FrequencyLoss(alpha)(target + cosine(axis, k, amplitude), target).item() == pytest.approx(
            expected, rel=1e-9)


def test_high_frequencies_cost_more_than_low_ones_of_the_same_energy_only_when_alpha_is_positive():
    target = torch.full((1, 1, SIZE, SIZE, SIZE), 0.4, dtype=torch.float64)
    low, high = cosine(2, 1, 0.05), cosine(3, SIZE // 2 - 1, 0.05)
    assert low.square().sum().item() == pytest.approx(high.square().sum().item())
    assert FrequencyLoss(0.0)(target + low, target).item() == pytest.approx(
        FrequencyLoss(0.0)(target + high, target).item(), rel=1e-9)
    radius_max = math.sqrt(3) / 2
    for alpha in (0.5, 1.0):
        low_cost = FrequencyLoss(alpha)(target + low, target).item()
        high_cost = FrequencyLoss(alpha)(target + high, target).item()
        assert high_cost > low_cost
        expected_ratio = (1 + alpha * (7 / SIZE) / radius_max) / (1 + alpha * (1 / SIZE) / radius_max)
        assert high_cost / low_cost == pytest.approx(expected_ratio, rel=1e-9)


def test_frequency_loss_gradients_are_finite_where_spectra_vanish():
    target = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    pred = torch.full_like(target, 0.5).requires_grad_()  # every bin but the zero frequency is 0
    FrequencyLoss()(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_frequency_loss_rejects_negative_alpha_and_bad_shapes():
    with pytest.raises(ValueError, match="alpha must be >= 0, got -1"):
        FrequencyLoss(-1.0)
    with pytest.raises(ValueError, match=r"got \(1, 8, 8\) and \(1, 8, 8\)"):
        FrequencyLoss()(torch.rand(1, 8, 8), torch.rand(1, 8, 8))
