"""Embed each view's gantry angle, so tokens know which direction their X-ray came from.

With 2 fixed views a model can learn "view 0 is frontal"; with 4-8 views, a random subset of them per batch and
the views in any order, it cannot: the angle has to travel with the view. The angle ``a`` (degrees) becomes the
Fourier features ``[sin(k a), cos(k a)]`` for ``k = 1..num_frequencies`` (smooth and periodic: 0 and 360 are the
same view) mapped to ``dim`` channels by a linear layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ViewAngleEmbedding(nn.Module):
    """Angles ``(V,)`` or ``(B, V)`` in degrees -> embeddings ``(V, dim)`` or ``(B, V, dim)``."""

    def __init__(self, dim: int, num_frequencies: int = 4) -> None:
        super().__init__()
        if num_frequencies < 1:
            raise ValueError(f"ViewAngleEmbedding: num_frequencies must be >= 1, got {num_frequencies}")
        self.register_buffer("frequencies", torch.arange(1, num_frequencies + 1, dtype=torch.float32),
                             persistent=False)
        self.proj = nn.Linear(2 * num_frequencies, dim)

    def forward(self, angles_deg: Tensor) -> Tensor:
        phase = torch.deg2rad(angles_deg.float())[..., None] * self.frequencies       # (..., K)
        return self.proj(torch.cat([phase.sin(), phase.cos()], dim=-1))
