"""Fuse the per-view volumes into one."""

from __future__ import annotations

from torch import Tensor, nn

from x2ct.models.blocks.conv import ConvNormAct

FUSION_MODES = ("mean", "concat")


class ViewFusion(nn.Module):
    """``(B, V, C, D, H, W) -> (B, C, D, H, W)``.

    ``"mean"`` averages the views (no parameters, works for any number of views); ``"concat"`` stacks their
    channels and mixes them with a 1x1x1 ConvNormAct (``V * C -> C``), so each view gets its own weights but
    ``V`` is fixed at construction.
    """

    def __init__(self, channels: int, num_views: int, mode: str = "concat", norm: str = "instance",
                 act: str = "leaky_relu") -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; expected one of {FUSION_MODES}")
        self.mode, self.num_views = mode, num_views
        self.mix = (ConvNormAct(3, num_views * channels, channels, kernel_size=1, norm=norm, act=act)
                    if mode == "concat" else None)

    def forward(self, volumes: Tensor) -> Tensor:
        if self.mix is None:
            return volumes.mean(dim=1)
        if volumes.shape[1] != self.num_views:
            raise ValueError(f"ViewFusion('concat') was built for {self.num_views} views, got volumes of shape "
                             f"{tuple(volumes.shape)}")
        return self.mix(volumes.flatten(1, 2))
