"""Gantry angles of the views of a batch: read into Python once, and drawn at random for novel views.

Angles pick geometry (ray plans, sampling grids), which is built in Python from the values, so a tensor of angles
is read to the host once per forward, here. Under ``torch.compile`` that read is the one graph break; angles given
as Python numbers compile without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Angles = Tensor | Sequence[float] | Sequence[Sequence[float]]


def angle_rows(angles_deg: Angles, batch: int | None = None) -> list[tuple[float, ...]]:
    """Gantry angles ``(V,)`` or ``(B, V)`` (a tensor, or Python numbers) as rows of floats, one per sample.

    ``(V,)`` is the whole batch's row: one row, or ``batch`` copies of it when ``batch`` is given. Rows are not
    checked against each other or against ``batch`` here: each caller knows what it needs.
    """
    if isinstance(angles_deg, Tensor):
        if angles_deg.ndim not in (1, 2):
            raise ValueError(f"angles_deg must be (V,) or (B, V), got shape {tuple(angles_deg.shape)}")
        values = angles_deg.detach().to("cpu", torch.float64).tolist()
    else:
        values = list(angles_deg)
    if not values or not (isinstance(values[0], Sequence) or getattr(values[0], "ndim", 0) > 0):  # (V,)
        return [tuple(float(a) for a in values)] * (1 if batch is None else batch)
    return [tuple(float(a) for a in row) for row in values]


def batch_angles(angles_deg: Angles) -> tuple[float, ...]:
    """The one row of angles a batch's samples share: ``(V,)``, or ``(B, V)`` whose rows must be equal (the
    view-dropout collate draws one subset of views per batch). What a lift needs: one geometry for the batch."""
    rows = angle_rows(angles_deg)
    if any(row != rows[0] for row in rows):
        raise ValueError(f"the samples of a batch must share their view angles (lift samples seen at different "
                         f"angles separately), got {[list(row) for row in rows]}")
    return rows[0]


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
