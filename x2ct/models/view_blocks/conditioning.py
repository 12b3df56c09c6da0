"""Tell a shared encoder which view it is looking at."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ViewFiLM(nn.Module):
    """Per-view feature-wise scale and shift: ``(B, V, C, *S) -> (B, V, C, *S)``, ``x * (1 + gamma_v) + beta_v``.

    Starts as the identity (``gamma = beta = 0``). Place it between a normalisation and its activation: an
    additive embedding anywhere else would be removed again by the next normalisation.
    """

    def __init__(self, num_views: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(num_views, channels))
        self.beta = nn.Parameter(torch.zeros(num_views, channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:3] != self.gamma.shape:
            raise ValueError(f"ViewFiLM expects (B, {self.gamma.shape[0]}, {self.gamma.shape[1]}, ...) features, got "
                             f"{tuple(x.shape)}")
        extra = (1,) * (x.ndim - 3)
        return x * (1 + self.gamma.view(*self.gamma.shape, *extra)) + self.beta.view(*self.beta.shape, *extra)
