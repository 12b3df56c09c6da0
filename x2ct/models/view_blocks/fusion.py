"""Fuse the per-view volumes into one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from x2ct.models.blocks.conv import ConvNormAct

FUSION_MODES = ("mean", "concat", "max", "attention")


class ViewFusion(nn.Module):
    """``(B, V, C, D, H, W) -> (B, C, D, H, W)``.

    - ``"mean"``: average of the views (no parameters, any ``V``).
    - ``"max"``: per-voxel, per-channel maximum over the views (no parameters, any ``V``).
    - ``"attention"``: per-voxel softmax over the views of a score from a 1x1x1 ``Conv3d`` (``C -> 1``, weights
      shared by all views, so any ``V``), then the weighted sum of the views. The score starts at zero, so an
      untrained attention fusion is the mean.
    - ``"concat"``: stacks the views' channels and mixes them with a 1x1x1 ConvNormAct (``V * C -> C``), so each
      view gets its own weights but ``V`` is fixed at construction. With ``masked=True`` each view's mask is
      stacked beside its channels (``V * (C + 1) -> C``): the mix learns which views see the voxel.

    ``forward(volumes, mask)`` takes an optional ``(B, V, 1, D, H, W)`` mask (e.g. ``ConeBeamLift``'s): views with
    mask 0 at a voxel are left out of that voxel's mean, max and softmax; a voxel that no view sees gets 0 (and no
    gradient, never NaN). ``"concat"`` takes a mask exactly when built with ``masked=True``.
    """

    def __init__(self, channels: int, num_views: int, mode: str = "concat", norm: str = "instance",
                 act: str = "leaky_relu", masked: bool = False) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; expected one of {FUSION_MODES}")
        self.mode, self.num_views, self.masked = mode, num_views, masked
        in_channels = num_views * (channels + int(masked))
        self.mix = (ConvNormAct(3, in_channels, channels, kernel_size=1, norm=norm, act=act)
                    if mode == "concat" else None)
        self.score = nn.Conv3d(channels, 1, kernel_size=1) if mode == "attention" else None
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def forward(self, volumes: Tensor, mask: Tensor | None = None) -> Tensor:
        if volumes.ndim != 6:
            raise ValueError(f"ViewFusion expects volumes (B, V, C, D, H, W), got shape {tuple(volumes.shape)}")
        if self.mix is not None:
            if (mask is not None) != self.masked:
                raise ValueError(f"ViewFusion('concat') built with masked={self.masked} got "
                                 f"{'a' if mask is not None else 'no'} mask: a lift with a visibility mask (geometric) "
                                 "needs masked=True, the others masked=False")
            if volumes.shape[1] != self.num_views:
                raise ValueError(f"ViewFusion('concat') was built for {self.num_views} views, got volumes of shape "
                                 f"{tuple(volumes.shape)}")
            if mask is not None:
                self._check_mask(mask, volumes)
                volumes = torch.cat([volumes, mask.to(volumes.dtype)], dim=2)  # (B, V, C + 1, D, H, W)
            return self.mix(volumes.flatten(1, 2))
        keep = None if mask is None else self._check_mask(mask, volumes)
        if self.mode == "attention":
            return (self.attention_weights(volumes, mask) * _masked(volumes, keep, 0.0)).sum(dim=1)
        if self.mode == "max":
            if keep is None:
                return volumes.amax(dim=1)
            fused = _masked(volumes, keep, float("-inf")).amax(dim=1)
            return torch.where(keep.any(dim=1), fused, 0.0)
        if keep is None:
            return volumes.mean(dim=1)
        count = keep.sum(dim=1).clamp(min=1)  # (B, 1, D, H, W); unseen voxels sum to 0
        return _masked(volumes, keep, 0.0).sum(dim=1) / count

    def attention_weights(self, volumes: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-voxel view weights ``(B, V, 1, D, H, W)`` of ``"attention"`` mode: they sum to 1 over the views
        that see a voxel (masked views get 0; a voxel no view sees gets all 0).
        """
        if self.score is None:
            raise ValueError(f"attention_weights needs ViewFusion(mode='attention'), this one is {self.mode!r}")
        b, v = volumes.shape[:2]
        keep = None if mask is None else self._check_mask(mask, volumes)
        # scored on the masked volumes: a masked view's inf or NaN features would otherwise meet a zero gradient
        # in the score's weight gradient (0 * inf = NaN)
        scores = self.score(_masked(volumes, keep, 0.0).flatten(0, 1)).unflatten(0, (b, v))  # (B, V, 1, D, H, W)
        if keep is None:
            return scores.softmax(dim=1)
        seen = keep.any(dim=1, keepdim=True)  # (B, 1, 1, D, H, W)
        # a voxel no view sees would softmax over V times -inf: NaN, and NaN gradients into the score even through
        # a where(); give those voxels finite scores instead, then weight 0
        scores = torch.where(seen, _masked(scores, keep, float("-inf")), 0.0)
        return torch.where(seen, scores.softmax(dim=1), 0.0)

    @staticmethod
    def _check_mask(mask: Tensor, volumes: Tensor) -> Tensor:
        b, v, _, *spatial = volumes.shape
        if tuple(mask.shape) != (b, v, 1, *spatial):
            raise ValueError(f"ViewFusion: mask must have shape (B, V, 1, D, H, W) = {(b, v, 1, *spatial)} for "
                             f"volumes of shape {tuple(volumes.shape)}, got {tuple(mask.shape)}")
        return mask > 0


def _masked(x: Tensor, keep: Tensor | None, fill: float) -> Tensor:
    """``x`` with the entries of masked-out views replaced by ``fill`` (never read them, even if inf or NaN)."""
    return x if keep is None else torch.where(keep, x, fill)
