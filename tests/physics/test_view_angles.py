"""Tests for x2ct/physics/view_angles.py: the views' gantry angles of a batch, and novel ones drawn at random."""

from __future__ import annotations

import pytest
import torch

from x2ct.physics.view_angles import angle_rows, batch_angles, random_angles


def test_random_angles_are_reproducible_and_in_range():
    a = random_angles(torch.Generator().manual_seed(3), 50, low=10.0, high=20.0)
    b = random_angles(torch.Generator().manual_seed(3), 50, low=10.0, high=20.0)
    c = random_angles(torch.Generator().manual_seed(4), 50, low=10.0, high=20.0)
    assert a == b and a != c
    assert len(a) == 50 and all(10.0 <= x < 20.0 for x in a)
    assert max(a) - min(a) > 5.0  # spread over the range, not a constant


def test_random_angles_errors():
    with pytest.raises(ValueError, match="count"):
        random_angles(None, 0)
    with pytest.raises(ValueError, match="high > low"):
        random_angles(None, 2, low=90.0, high=90.0)


@pytest.mark.parametrize("given", [torch.tensor([0.0, 90.0]), torch.tensor([0.0, 90.0], dtype=torch.float64),
                                   [0, 90], (0.0, 90.0), torch.tensor([[0.0, 90.0]] * 3), [[0.0, 90.0]] * 3])
def test_one_shared_row_however_the_angles_come(given):
    assert batch_angles(given) == (0.0, 90.0)
    assert all(type(a) is float for a in batch_angles(given))


def test_rows_per_sample_and_a_flat_row_repeated_for_the_batch():
    assert angle_rows(torch.tensor([[0.0, 90.0], [10.0, 60.0]])) == [(0.0, 90.0), (10.0, 60.0)]
    assert angle_rows([0.0, 90.0], batch=3) == [(0.0, 90.0)] * 3
    assert angle_rows(torch.tensor([[0.0, 90.0]]), batch=3) == [(0.0, 90.0)]  # (1, V) is one sample's row
    assert angle_rows(torch.tensor([30.5], dtype=torch.float32)) == [(30.5,)]


def test_a_batch_whose_samples_differ_or_a_tensor_of_another_rank_is_refused():
    with pytest.raises(ValueError, match=r"share their view angles.*\[\[0.0, 90.0\], \[0.0, 45.0\]\]"):
        batch_angles(torch.tensor([[0.0, 90.0], [0.0, 45.0]]))
    with pytest.raises(ValueError, match=r"\(V,\) or \(B, V\), got shape \(1, 2, 2\)"):
        angle_rows(torch.zeros(1, 2, 2))
