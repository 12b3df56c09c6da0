import pytest
import torch

from x2ct.losses.l1 import L1Loss


def test_l1_is_the_mean_absolute_error():
    pred = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    target = torch.tensor([[1.0, 0.5], [0.0, 0.75]])
    assert L1Loss()(pred, target).item() == pytest.approx((1.0 + 0.0 + 1.0 + 0.5) / 4)


def test_l1_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"pred \(2, 1\) and target \(2,\)"):
        L1Loss()(torch.zeros(2, 1), torch.zeros(2))
