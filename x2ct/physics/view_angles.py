"""Gantry angles of the views of a batch: read from tensors once, and drawn at random for novel views."""

from __future__ import annotations

import torch


def random_angles(generator: torch.Generator | None, count: int, low: float = 0.0,
                  high: float = 180.0) -> list[float]:
    """``count`` gantry angles in degrees drawn uniformly from [low, high), for views the input never had.

    A seeded ``generator`` makes the draw reproducible (and resumable) independently of the global RNG.
    """
    if count < 1:
        raise ValueError(f"random_angles: count must be >= 1, got {count}")
    if not high > low:
        raise ValueError(f"random_angles: need high > low, got low={low}, high={high}")
    draws = torch.rand(count, generator=generator, dtype=torch.float64)
    return (low + (high - low) * draws).tolist()
