import math

import pytest
import torch

from x2ct.losses.edge import SobelEdgeLoss, sobel_kernels, sobel_magnitude
from x2ct.losses.registry import build_loss_component

SIZE = 12


def ramp(slopes: tuple[float, float, float], offset: float = 0.2) -> torch.Tensor:
    """``offset + a d + b h + c w``, (1, 1, SIZE, SIZE, SIZE)."""
    d, h, w = torch.meshgrid(*[torch.arange(SIZE, dtype=torch.float64)] * 3, indexing="ij")
    return (offset + slopes[0] * d + slopes[1] * h + slopes[2] * w)[None, None]


def test_kernels_are_the_sobel_operator_divided_by_32():
    derivative, smoothing = torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])
    expected = [derivative[:, None, None] * smoothing[None, :, None] * smoothing[None, None, :],
                smoothing[:, None, None] * derivative[None, :, None] * smoothing[None, None, :],
                smoothing[:, None, None] * smoothing[None, :, None] * derivative[None, None, :]]
    torch.testing.assert_close(sobel_kernels(), torch.stack(expected).unsqueeze(1) / 32)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_ramp_along_one_axis_has_magnitude_equal_to_its_slope(axis):
    slopes = [0.0, 0.0, 0.0]
    slopes[axis] = 0.03
    magnitude = sobel_magnitude(ramp(tuple(slopes)), eps=1e-12)
    assert magnitude.shape == (1, 1, SIZE - 2, SIZE - 2, SIZE - 2)
    torch.testing.assert_close(magnitude, torch.full_like(magnitude, 0.03))


def test_an_oblique_ramp_has_magnitude_equal_to_the_length_of_its_gradient():
    magnitude = sobel_magnitude(ramp((0.01, -0.02, 0.04)), eps=1e-12)
    torch.testing.assert_close(magnitude, torch.full_like(magnitude, math.sqrt(0.01**2 + 0.02**2 + 0.04**2)))


def test_edge_loss_is_registered_and_zero_for_identical_volumes():
    target = torch.rand(2, 1, SIZE, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    loss = build_loss_component("edge")
    assert isinstance(loss, SobelEdgeLoss)
    assert loss(target.clone(), target).item() == 0.0


def test_adding_a_ramp_to_a_flat_volume_costs_the_ramps_magnitude():
    eps = 1e-8
    target = torch.full((1, 1, SIZE, SIZE, SIZE), 0.3, dtype=torch.float64)
    values = []
    for slope in (0.01, 0.02, 0.05):
        pred = target + ramp((0.0, 0.0, slope), offset=0.0)
        values.append(SobelEdgeLoss(eps=eps)(pred, target).item())
        assert values[-1] == pytest.approx(math.sqrt(slope**2 + eps) - math.sqrt(eps), rel=1e-6)
    assert values[0] < values[1] < values[2]


def test_edge_loss_grows_with_a_scaled_perturbation_and_has_finite_gradients_on_flat_regions():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 1, SIZE, SIZE, SIZE, generator=g)
    perturbation = torch.randn(target.shape, generator=g)
    values = [SobelEdgeLoss()(target + a * perturbation, target).item() for a in (0.01, 0.05, 0.2)]
    assert 0 < values[0] < values[1] < values[2]
    # a flat volume: sqrt(g^2 + eps) is stationary at g = 0, so its gradient is exactly 0 (not NaN as with eps = 0)
    flat = torch.full_like(target, 0.5).requires_grad_()
    SobelEdgeLoss()(flat, target).backward()
    assert torch.equal(flat.grad, torch.zeros_like(flat))
    nearly_flat = (0.5 + 1e-3 * perturbation).requires_grad_()
    SobelEdgeLoss()(nearly_flat, target).backward()
    assert torch.isfinite(nearly_flat.grad).all() and nearly_flat.grad.abs().sum() > 0


def test_edge_loss_rejects_bad_shapes_and_eps():
    with pytest.raises(ValueError, match=r"every axis >= 3 voxels, got \(1, 1, 2, 8, 8\)"):
        SobelEdgeLoss()(torch.rand(1, 1, 2, 8, 8), torch.rand(1, 1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"got \(1, 1, 8, 8, 8\) and \(1, 1, 8, 8, 9\)"):
        SobelEdgeLoss()(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 9))
    with pytest.raises(ValueError, match="eps must be positive"):
        SobelEdgeLoss(eps=0.0)
