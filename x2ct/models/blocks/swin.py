"""3D Swin transformer blocks: self-attention inside local windows, global reach by stacking shifted windows.

Full self-attention over a ``D*H*W`` volume costs ``(D*H*W)^2``; attending only inside non-overlapping windows of
``w^3`` tokens costs ``D*H*W * w^3``. Alternating plain and cyclically shifted windows (W-MSA / SW-MSA) lets
information cross window borders from one block to the next (Liu et al. 2021, Swin; 3D as in Video Swin / Swin
UNETR).

Blocks take and return channels-first volumes ``(B, C, D, H, W)``; inside they work on channels-last tokens
``(B, D, H, W, C)`` so that LayerNorm and the linear layers act on the channel axis.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from x2ct.models.blocks.mlp import TransformerMLP

Size3 = tuple[int, int, int]

# distinct (shape, window, shift, dtype, device) entries kept per cache: the sizes of one model's levels, for a few
# input sizes, with room to spare; the least recently used entry goes first
WINDOW_CACHE_SIZE = 64


def pad_to_multiple(x: Tensor, window: Size3, value: float = 0.0) -> Tensor:
    """Pad ``(B, D, H, W, C)`` tokens at the far end of D, H, W to multiples of ``window`` with ``value``.

    The padded tokens are masked out of attention (see ``shifted_window_mask``), so ``value`` never reaches a
    real token's output.
    """
    pads = [(-s) % w for s, w in zip(x.shape[1:4], window, strict=True)]
    if not any(pads):
        return x
    # F.pad lists pairs from the last axis backwards: C (none), W, H, D
    return F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]), value=value)


def window_partition(x: Tensor, window: Size3) -> Tensor:
    """``(B, D, H, W, C) -> (B, nW, N, C)``: cut into ``nW`` windows of ``N = wd*wh*ww`` tokens each.

    Windows are listed in D, H, W raster order and tokens inside a window too. Sizes must be multiples of the
    window.
    """
    wd, wh, ww = window
    return rearrange(x, "b (nd wd) (nh wh) (nw ww) c -> b (nd nh nw) (wd wh ww) c", wd=wd, wh=wh, ww=ww)


def window_reverse(windows: Tensor, window: Size3, size: Size3) -> Tensor:
    """``(B, nW, N, C) -> (B, D, H, W, C)``, the inverse of ``window_partition`` for a volume of ``size``."""
    (d, h, w), (wd, wh, ww) = size, window
    return rearrange(windows, "b (nd nh nw) (wd wh ww) c -> b (nd wd) (nh wh) (nw ww) c", nd=d // wd, nh=h // wh,
                     nw=w // ww, wd=wd, wh=wh, ww=ww)


def relative_position_index(window: Size3, window_size: int) -> Tensor:
    """``(N, N)`` row of the ``((2w-1)^3, heads)`` bias table for each (query, key) pair of a ``window``.

    The table is sized for the nominal ``window_size`` w; a smaller window (a volume thinner than w) spans fewer
    offsets and indexes the same table, so one learned table serves every input size.
    """
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in window), indexing="ij")).flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # (3, N, N), each in [0, 2w-2]
    span = 2 * window_size - 1
    return (rel[0] * span + rel[1]) * span + rel[2]


def shifted_window_mask(size: Size3, padded: Size3, window: Size3, shift: Size3,
                        device: torch.device | None = None) -> Tensor:
    """``(nW, N, N)`` bool, True where a query token may attend to a key token of the same window.

    Laid out like the rolled, padded volume (``padded`` = ``size`` padded to window multiples, then rolled by
    ``-shift``). Two rules:

    - shift: the cyclic roll brings tokens from opposite faces of the volume into the last window along an axis;
      they are not neighbours, so tokens only attend within their own region (the standard Swin slices
      ``[0, P-w)``, ``[P-w, P-s)``, ``[P-s, P)`` per axis, in rolled coordinates).
    - padding: padded tokens get a label of their own, so no real token attends to them and each attends only to
      itself (a row that is never all masked, hence no NaN from the softmax).
    """
    labels = torch.zeros(padded, dtype=torch.long, device=device)
    real = torch.ones(padded, dtype=torch.bool, device=device)
    for axis, (s_real, p, w, s) in enumerate(zip(size, padded, window, shift, strict=True)):
        view = [1, 1, 1]
        view[axis] = p
        region = torch.zeros(p, dtype=torch.long, device=device)
        if s:
            region[p - w:p - s] = 1
            region[p - s:] = 2
        labels = labels * 3 + region.view(view)
        original = (torch.arange(p, device=device) + s) % p  # rolled index j holds original index (j + s) % p
        real = real & (original < s_real).view(view)
    unique = -1 - torch.arange(labels.numel(), device=device).view(padded)
    labels = torch.where(real, labels, unique)
    win = window_partition(labels[None, ..., None], window)[0, ..., 0]  # (nW, N)
    return win[:, :, None] == win[:, None, :]


def window_mask_bias(size: Size3, padded: Size3, window: Size3, shift: Size3, dtype: torch.dtype,
                     device: torch.device) -> Tensor:
    """``(nW, 1, N, N)`` additive attention mask of ``shifted_window_mask``: 0 where allowed, -inf where not.

    It depends on the shapes alone, so eager forwards build it once per (shapes, dtype, device) and reuse it (a
    bounded cache outside the module: no buffer, nothing in ``state_dict``, one entry per device). Under
    ``torch.compile`` it is traced into the graph instead, where a Python-side cache would not survive.
    """
    if torch.compiler.is_compiling():
        return _build_window_mask_bias(size, padded, window, shift, dtype, device)
    return _cached_window_mask_bias(size, padded, window, shift, dtype, device)


def window_position_index(window: Size3, window_size: int, device: torch.device) -> Tensor:
    """``relative_position_index(window, window_size)`` on ``device``, built once per (window, device) in eager
    mode as ``window_mask_bias``; for windows smaller than the nominal one (volumes thinner than it)."""
    if torch.compiler.is_compiling():
        return relative_position_index(window, window_size).to(device)
    return _cached_window_position_index(window, window_size, device)


def _build_window_mask_bias(size: Size3, padded: Size3, window: Size3, shift: Size3, dtype: torch.dtype,
                            device: torch.device) -> Tensor:
    allowed = shifted_window_mask(size, padded, window, shift, device=device)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, -math.inf)[:, None]


@functools.lru_cache(maxsize=WINDOW_CACHE_SIZE)
def _cached_window_mask_bias(size: Size3, padded: Size3, window: Size3, shift: Size3, dtype: torch.dtype,
                             device: torch.device) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():  # one first built under inference_mode serves training too
        return _build_window_mask_bias(size, padded, window, shift, dtype, device)


@functools.lru_cache(maxsize=WINDOW_CACHE_SIZE)
def _cached_window_position_index(window: Size3, window_size: int, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # saved for backward by the bias lookup: no inference tensor
        return relative_position_index(window, window_size).to(device)


def clear_window_caches() -> None:
    """Empty the attention-mask and position-index caches (e.g. to free a device's memory)."""
    _cached_window_mask_bias.cache_clear()
    _cached_window_position_index.cache_clear()


class SwinTransformerBlock3D(nn.Module):
    """``(B, dim, D, H, W) -> (B, dim, D, H, W)``: pre-norm window attention + pre-norm MLP, both residual.

    ``x + WMSA(LN(x))`` then ``x + MLP(LN(x))``. Attention runs inside non-overlapping windows of
    ``window_size^3`` tokens, with a learned relative position bias (one value per head and 3D offset) added to
    the logits, because attention alone does not know where tokens are.

    ``shift=True`` rolls the volume by ``window_size // 2`` along D, H, W before windowing (and back after), so
    the windows straddle the previous block's window borders; a mask keeps tokens that the roll brought together
    from opposite faces apart.

    Sizes need not be multiples of the window: the volume is zero-padded at the far end and the padded tokens are
    masked, so outputs do not depend on the padding. Along an axis no longer than ``window_size`` one window
    covers the whole axis (no padding) and that axis is not shifted: a shift would only wrap the volume onto
    itself.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 4, shift: bool = False, mlp_ratio: float = 4.0,
                 attn_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SwinTransformerBlock3D: dim={dim} must be divisible by num_heads={num_heads}")
        if window_size < 1:
            raise ValueError(f"SwinTransformerBlock3D: window_size must be >= 1, got {window_size}")
        self.dim, self.num_heads, self.window_size, self.shift = dim, num_heads, window_size, shift
        self.attn_dropout = attn_dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias = nn.Parameter(torch.empty((2 * window_size - 1) ** 3, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        full = (window_size,) * 3
        self.register_buffer("full_window_index", relative_position_index(full, window_size), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TransformerMLP(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.dim:
            raise ValueError(f"SwinTransformerBlock3D expects (B, {self.dim}, D, H, W), got {tuple(x.shape)}")
        tokens = self.forward_tokens(rearrange(x, "b c d h w -> b d h w c"))
        return rearrange(tokens, "b d h w c -> b c d h w")

    def forward_tokens(self, x: Tensor) -> Tensor:
        """Channels-last ``(B, D, H, W, dim) -> (B, D, H, W, dim)`` (what ``SwinStage3D`` chains)."""
        size: Size3 = tuple(x.shape[1:4])
        window: Size3 = tuple(min(self.window_size, s) for s in size)
        shift: Size3 = tuple(self.window_size // 2 if self.shift and s > self.window_size else 0 for s in size)
        h = pad_to_multiple(self.norm1(x), window)
        padded: Size3 = tuple(h.shape[1:4])
        if any(shift):
            h = torch.roll(h, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        needs_mask = any(shift) or padded != size
        mask = window_mask_bias(size, padded, window, shift, self.relative_position_bias.dtype,
                                x.device) if needs_mask else None
        h = window_reverse(self.window_attention(window_partition(h, window), window, mask), window, padded)
        if any(shift):
            h = torch.roll(h, shifts=shift, dims=(1, 2, 3))
        x = x + self.drop(h[:, :size[0], :size[1], :size[2]])
        return x + self.mlp(self.norm2(x))

    def window_attention(self, windows: Tensor, window: Size3, mask: Tensor | None) -> Tensor:
        """Multi-head self-attention in each window: ``(B, nW, N, dim) -> (B, nW, N, dim)``.

        ``mask`` (``(nW, 1, N, N)``, 0 where a query may attend to a key, -inf where not: ``window_mask_bias``) or
        None when every pair may attend.
        """
        b = windows.shape[0]
        q, k, v = rearrange(self.qkv(windows), "b nw n (qkv heads hd) -> qkv (b nw) heads n hd", qkv=3,
                            heads=self.num_heads)
        index = (self.full_window_index if window == (self.window_size,) * 3
                 else window_position_index(window, self.window_size, windows.device))
        bias = rearrange(self.relative_position_bias[index], "n m heads -> heads n m")
        if mask is None:
            attn_mask = bias[None]
        else:
            # repeated over the batch: the fused kernels want one 4D mask row per (B*nW) item
            attn_mask = repeat(bias[None] + mask, "nw heads n m -> (b nw) heads n m", b=b)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(rearrange(out, "(b nw) heads n hd -> b nw n (heads hd)", b=b))


class SwinStage3D(nn.Module):
    """``(B, dim, D, H, W) -> (B, dim, D, H, W)``: ``depth`` Swin blocks alternating plain and shifted windows.

    The W-MSA / SW-MSA pair is the unit: the shifted block connects the windows of the plain one, so use an even
    ``depth`` for the receptive field to grow evenly.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int = 4, mlp_ratio: float = 4.0,
                 attn_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"SwinStage3D: depth must be >= 1, got {depth}")
        self.dim = dim
        self.blocks = nn.ModuleList(
            SwinTransformerBlock3D(dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                                   attn_dropout=attn_dropout, dropout=dropout)
            for i in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.dim:
            raise ValueError(f"SwinStage3D expects (B, {self.dim}, D, H, W), got {tuple(x.shape)}")
        x = rearrange(x, "b c d h w -> b d h w c")  # channels-last once for the whole stage
        for block in self.blocks:
            x = block.forward_tokens(x)
        return rearrange(x, "b d h w c -> b c d h w")
