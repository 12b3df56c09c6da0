import pytest
import torch

from x2ct.models.view_blocks.conditioning import ViewFiLM


def test_view_film_starts_as_identity_and_scales_each_view_separately():
    film = ViewFiLM(num_views=2, channels=3)
    x = torch.rand(4, 2, 3, 5, 5)
    torch.testing.assert_close(film(x), x)
    with torch.no_grad():
        film.gamma[1, 2] = 1.0   # view 1, channel 2: scale by 2
        film.beta[0, 0] = 0.5    # view 0, channel 0: shift by 0.5
    expected = x.clone()
    expected[:, 1, 2] *= 2.0
    expected[:, 0, 0] += 0.5
    torch.testing.assert_close(film(x), expected)


def test_view_film_rejects_mismatched_views():
    with pytest.raises(ValueError, match=r"\(B, 2, 3, \.\.\.\)"):
        ViewFiLM(num_views=2, channels=3)(torch.rand(1, 3, 3, 4, 4))
