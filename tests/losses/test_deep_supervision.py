import pytest
import torch
import torch.nn.functional as F

from x2ct.losses.deep_supervision import DeepSupervisionLoss
from x2ct.losses.registry import build_loss_component


def target_volume() -> torch.Tensor:
    return torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))


def test_deep_supervision_is_registered_and_flagged_for_the_aux_list():
    loss = build_loss_component("deep_supervision")
    assert isinstance(loss, DeepSupervisionLoss) and loss.uses_deep_supervision is True


def test_zero_when_each_output_is_the_block_mean_of_the_target():
    target = target_volume()
    aux = [F.avg_pool3d(target, 2), F.avg_pool3d(target, 4)]
    assert DeepSupervisionLoss()(aux, target).item() == pytest.approx(0.0, abs=1e-7)


def test_weighted_mean_of_the_per_scale_errors():
    target = target_volume()
    aux = [F.avg_pool3d(target, 2) + 0.1, F.avg_pool3d(target, 4) - 0.4]
    assert DeepSupervisionLoss()(aux, target).item() == pytest.approx((0.1 + 0.4) / 2, rel=1e-5)
    assert DeepSupervisionLoss(scale_weights=[3.0, 1.0])(aux, target).item() == pytest.approx(
        (3 * 0.1 + 1 * 0.4) / 4, rel=1e-5)


def test_grows_with_the_perturbation_and_gradients_reach_the_outputs():
    target = target_volume()
    noise = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    values = [DeepSupervisionLoss()([F.avg_pool3d(target, 2) + a * noise], target).item() for a in (0.01, 0.1, 0.5)]
    assert 0 < values[0] < values[1] < values[2]
    aux = (F.avg_pool3d(target, 2) + 0.1 * noise).requires_grad_()
    DeepSupervisionLoss()([aux], target).backward()
    assert torch.isfinite(aux.grad).all() and aux.grad.abs().sum() > 0


def test_sizes_that_are_not_integer_factors_use_adaptive_average_pooling():
    target = target_volume()
    aux = F.adaptive_avg_pool3d(target, (6, 5, 7))
    assert DeepSupervisionLoss()([aux], target).item() == pytest.approx(0.0, abs=1e-7)
    constant = torch.full((1, 1, 16, 16, 16), 0.3)
    assert DeepSupervisionLoss()([torch.full((1, 1, 6, 5, 7), 0.5)], constant).item() == pytest.approx(0.2)


def test_bad_inputs_fail_clearly():
    target = target_volume()
    with pytest.raises(ValueError, match="got an empty list"):
        DeepSupervisionLoss()([], target)
    with pytest.raises(ValueError, match=r"got a tensor \(2, 1, 16, 16, 16\)"):
        DeepSupervisionLoss()(target, target)
    with pytest.raises(ValueError, match="2 scale_weights for 1 auxiliary outputs"):
        DeepSupervisionLoss(scale_weights=[1.0, 0.5])([F.avg_pool3d(target, 2)], target)
    with pytest.raises(ValueError, match=r"auxiliary output 1 of shape \(2, 1, 32, 32, 32\)"):
        DeepSupervisionLoss()([F.avg_pool3d(target, 2), torch.zeros(2, 1, 32, 32, 32)], target)
    with pytest.raises(ValueError, match=r"scale_weights must be >= 0 with a positive sum, got \[1.0, -1.0\]"):
        DeepSupervisionLoss(scale_weights=[1.0, -1.0])
