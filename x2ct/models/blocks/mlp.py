"""The feed-forward half of a transformer block, shared by the Swin and the cross-view attention blocks."""

from __future__ import annotations

from torch import nn


class TransformerMLP(nn.Sequential):
    """Tokens ``(..., dim) -> (..., dim)``: ``Linear(dim, hidden) -> GELU -> Dropout -> Linear(hidden, dim) ->
    Dropout``, ``hidden = int(dim * mlp_ratio)``, applied to each token alone.

    A ``Sequential`` of exactly these five layers, so the parameters keep the names trained checkpoints hold
    (``mlp.0.weight``, ``mlp.3.bias``, ...).
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))
