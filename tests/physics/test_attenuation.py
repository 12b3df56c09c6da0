from __future__ import annotations

import numpy as np
import pytest
import torch

from x2ct.physics.attenuation import hu_to_mu, mu_to_hu


def test_reference_tissues():
    mu_water = 0.0193
    hu = np.array([-1000.0, 0.0, 1000.0, -1200.0])
    np.testing.assert_allclose(hu_to_mu(hu, mu_water), [0.0, mu_water, 2 * mu_water, 0.0])


def test_torch_and_numpy_agree_and_round_trip():
    hu = torch.linspace(-1000, 3000, 41, dtype=torch.float64)
    mu = hu_to_mu(hu, 0.02)
    np.testing.assert_allclose(mu.numpy(), hu_to_mu(hu.numpy(), 0.02))
    torch.testing.assert_close(mu_to_hu(mu, 0.02), hu)


def test_non_positive_mu_water_is_rejected():
    with pytest.raises(ValueError, match="mu_water"):
        hu_to_mu(np.zeros(3), 0.0)
