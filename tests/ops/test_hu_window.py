"""The HU window onto [0, 1] and back: a round trip, clipping, bad windows, NumPy and torch alike."""

import numpy as np
import pytest

from x2ct.ops.hu_window import denormalise, window_normalise


def test_window_normalise_round_trip_and_clipping():
    hu = np.array([-2000.0, -1000.0, -250.0, 0.0, 500.0, 1000.0, 3000.0])
    x = window_normalise(hu, (-1000.0, 1000.0))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [0.0, 0.0, 0.375, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(denormalise(x, (-1000.0, 1000.0)), np.clip(hu, -1000, 1000), atol=1e-4)
    with pytest.raises(ValueError, match="hu_window"):
        window_normalise(hu, (500.0, -500.0))


def test_window_normalise_accepts_torch():
    torch = pytest.importorskip("torch")
    hu = torch.tensor([-1000.0, 0.0, 2000.0])
    x = window_normalise(hu, (-1000, 1000))
    assert isinstance(x, torch.Tensor)
    assert x.tolist() == [0.0, 0.5, 1.0]
    assert denormalise(x, (-1000, 1000)).tolist() == [-1000.0, 0.0, 1000.0]
