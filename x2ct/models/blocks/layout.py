"""Keep ``trainer.memory_format=channels_last_3d`` through the places that would drop it.

A 3D convolution with channels-last weights returns channels-last activations (``x2ct.engine.build.
to_memory_format``), but a tensor that never passed such a convolution stays contiguous ``(B, C, D, H, W)``: the
fused view volume, or a 1x1x1 convolution's output on the CPU's single-threaded path. Mixed with channels-last
tensors, ``torch.cat`` returns contiguous and ``x + y`` takes ``x``'s layout, so the convolutions after them get
contiguous inputs again (and convert them, once per convolution). These helpers put such a tensor in the layout of
a reference: an activation, or the weight of the convolution that will read it. Where the reference is not
channels-last (the default ``"contiguous"`` run) they return their input itself: no copy, the same values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def is_channels_last_3d(t: Tensor) -> bool:
    """Whether ``t`` is 5D and laid out channels-last only: ``False`` where both layouts coincide (``C == 1``, or
    ``D == H == W == 1``, as for a 1x1x1 convolution's weight), since such a tensor tells no layout apart."""
    return t.ndim == 5 and t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()


def as_layout_of(x: Tensor, ref: Tensor) -> Tensor:
    """``x`` ``(B, C, D, H, W)`` channels-last when ``ref`` (an activation or a 3D convolution's weight) is, else
    ``x`` itself; an ``x`` already channels-last, or of another rank, is returned as it is too.

    A one-channel ``x`` (e.g. a volume ``(B, 1, D, H, W)``) is both layouts at once but, with contiguous strides,
    reads as contiguous to ``torch.cat``, which then returns contiguous: it gets channels-last strides (a copy of
    one channel), where ``x.contiguous(memory_format=...)`` would return it unchanged.
    """
    if x.ndim == 5 and is_channels_last_3d(ref):
        return x.to(memory_format=torch.channels_last_3d)
    return x


def cat_like(tensors: Sequence[Tensor], dim: int, like: Tensor) -> Tensor:
    """``torch.cat(tensors, dim)`` in ``like``'s layout: ``cat`` keeps channels-last only when all its inputs are,
    so each ``(B, C_i, D, H, W)`` is laid out as ``like`` first (``as_layout_of``)."""
    return torch.cat([as_layout_of(t, like) for t in tensors], dim=dim)
