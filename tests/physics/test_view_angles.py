"""Tests for x2ct/physics/view_angles.py: the views' gantry angles of a batch, and novel ones drawn at random."""

from __future__ import annotations

import pytest
import torch

from x2ct.physics.view_angles import random_angles


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
