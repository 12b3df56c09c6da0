"""The HU window and [0, 1]: how every layer maps CT numbers onto the network's range and back.

Data normalises the stored CT, evaluation and inference turn predictions back into HU, physics renders a predicted
volume's projections: one definition for all of them. NumPy arrays (returned as float32) or torch tensors (dtype
kept), any shape; torch is not imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def window_normalise(hu: Any, hu_window: Sequence[float]) -> Any:
    """Map HU in ``hu_window`` = (min, max) linearly onto [0, 1], clipping outside.

    Accepts a numpy array (returned as float32) or a torch tensor (dtype kept), any shape.
    """
    lo, hi = _window(hu_window)
    if not _is_torch_tensor(hu):
        hu = np.asarray(hu, dtype=np.float32)
    return ((hu - lo) / (hi - lo)).clip(0.0, 1.0)


def denormalise(x: Any, hu_window: Sequence[float]) -> Any:
    """Inverse of `window_normalise` for values in [0, 1]: back to HU (numpy float32 or torch tensor)."""
    lo, hi = _window(hu_window)
    if not _is_torch_tensor(x):
        x = np.asarray(x, dtype=np.float32)
    return x * (hi - lo) + lo


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"  # without importing torch here


def _window(hu_window: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in hu_window)
    if not lo < hi:
        raise ValueError(f"hu_window must be (min, max) with min < max, got {tuple(hu_window)}")
    return lo, hi
