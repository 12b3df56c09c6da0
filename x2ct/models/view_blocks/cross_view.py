"""Cross-view attention: every view's tokens look at the tokens of all the other views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from x2ct.models.blocks.mlp import TransformerMLP


class CrossViewAttention(nn.Module):
    """``(B, V, N, dim) -> (B, V, N, dim)``: each view queries the ``(V-1)*N`` tokens of the other views.

    ``x + CrossAttn(LN(x_v), LN(x_others))`` then ``x + FFN(LN(x))``, per view. A frontal token can ask which
    lateral tokens see the same anatomy (and, for two views, the lateral asks the frontal back). Its own view is
    left out of the keys on purpose: self-attention within a view is the encoder's job, here the block must carry
    information across views. One set of weights serves every view and the keys form a set, so the block works
    for any ``V >= 2`` unchanged and permuting the input views permutes the outputs the same way.

    ``dropout`` acts on the attention output projection and the FFN.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossViewAttention: dim={dim} must be divisible by num_heads={num_heads}")
        self.dim, self.num_heads = dim, num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TransformerMLP(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        """``x`` (B, V, N, dim); ``pos`` (B, V, N, dim) or (V, N, dim), optional, added to queries and keys (not
        values): where a token sits, e.g. its view angle, steers who attends to it without being mixed in."""
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"CrossViewAttention expects tokens (B, V, N, {self.dim}), got {tuple(x.shape)}")
        b, v = x.shape[:2]
        if v < 2:
            raise ValueError(f"CrossViewAttention needs at least 2 views to attend across, got x of shape "
                             f"{tuple(x.shape)} (V={v})")
        if pos is not None and pos.shape not in (x.shape, x.shape[1:]):
            raise ValueError(f"CrossViewAttention: pos must be (B, V, N, dim) {tuple(x.shape)} or (V, N, dim) "
                             f"{tuple(x.shape[1:])}, got {tuple(pos.shape)}")
        h = self.norm1(x)
        hp = h if pos is None else h + pos
        heads = self.num_heads
        q = rearrange(self.q(hp), "b v n (heads hd) -> (b v) heads n hd", heads=heads)
        # keys/values of view i: the N tokens of each of the V-1 other views
        others = _other_views(v, x.device)  # (V, V-1)
        k = rearrange(self.k(hp)[:, others], "b v o n (heads hd) -> (b v) heads (o n) hd", heads=heads)
        val = rearrange(self.v(h)[:, others], "b v o n (heads hd) -> (b v) heads (o n) hd", heads=heads)
        out = rearrange(F.scaled_dot_product_attention(q, k, val), "(b v) heads n hd -> b v n (heads hd)", b=b)
        x = x + self.drop(self.proj(out))
        return x + self.mlp(self.norm2(x))

    def forward_maps(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        """Feature maps ``(B, V, dim, H, W) -> (B, V, dim, H, W)``: the ``H*W`` pixels of each view are its tokens.

        ``pos`` as in ``forward``, in token layout ((B, V, H*W, dim) or (V, H*W, dim)).
        """
        if x.ndim != 5:
            raise ValueError(f"CrossViewAttention.forward_maps expects (B, V, dim, H, W), got {tuple(x.shape)}")
        tokens = self(rearrange(x, "b v c h w -> b v (h w) c"), pos)
        return rearrange(tokens, "b v (h w) c -> b v c h w", h=x.shape[3])


def _other_views(num_views: int, device: torch.device) -> Tensor:
    """``(V, V-1)`` long: row ``i`` lists the views other than ``i`` in order, ``j + (j >= i)`` for ``j < V-1``
    (built on the device: no list copied from the host on every call)."""
    j = torch.arange(num_views - 1, device=device)
    return j[None, :] + (j[None, :] >= torch.arange(num_views, device=device)[:, None]).long()
