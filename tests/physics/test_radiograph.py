from __future__ import annotations

import pytest
import torch

from x2ct.physics.radiograph import add_poisson_noise, normalise_views, to_intensity


def test_beer_lambert():
    p = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(to_intensity(p, 1000.0), 1000.0 * torch.exp(-p))


def test_poisson_noise_has_the_right_statistics_and_is_seeded():
    p = torch.full((200, 200), 1.5, dtype=torch.float64)
    photons = 5000.0
    noisy = add_poisson_noise(p, photons, generator=torch.Generator().manual_seed(1))
    counts = photons * torch.exp(-noisy)
    expected = photons * torch.exp(torch.tensor(-1.5, dtype=torch.float64))
    assert counts.mean().item() == pytest.approx(expected.item(), rel=0.01)
    assert counts.var().item() == pytest.approx(expected.item(), rel=0.05)  # Poisson: variance == mean
    again = add_poisson_noise(p, photons, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(noisy, again)
    fewer = add_poisson_noise(p, photons / 50, generator=torch.Generator().manual_seed(1))
    assert fewer.std() > 3 * noisy.std()


def test_normalisation_modes():
    p = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]], [[[0.5, 1.0], [0.0, 0.25]]]])
    per_image = normalise_views(p, "per_image_max")
    torch.testing.assert_close(per_image.amax(dim=(-2, -1)), torch.ones(2, 1))
    torch.testing.assert_close(normalise_views(p, "global_max", 4.0), p / 4.0)
    torch.testing.assert_close(normalise_views(p, "none"), p)
    with pytest.raises(ValueError, match="positive scale"):
        normalise_views(p, "global_max")
    with pytest.raises(ValueError, match="unknown view normalisation"):
        normalise_views(p, "max")
