"""A 3D block with a convolutional and a Swin transformer branch side by side (hybrid CNN-ViT)."""

from __future__ import annotations

from torch import Tensor, nn

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.layout import as_layout_of, cat_like
from x2ct.models.blocks.norm import make_norm
from x2ct.models.blocks.swin import SwinStage3D


class TransformerEnhancedBlock3D(nn.Module):
    """``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``: local conv and global Swin, fused.

    A 3x3x3 convolution sees one voxel's neighbours: good for edges and texture, blind to anatomy a few voxels
    away. The Swin branch (1x1x1 projection, then ``depth`` window-attention blocks alternating plain and shifted
    windows) relates every voxel to a ``window_size^3`` neighbourhood and beyond, which is what a volume lifted
    from a few projections needs to become consistent. The two branches are concatenated (``2 * out_channels``),
    mixed by a 1x1x1 conv + norm, added to the shortcut (identity when the channel counts match, else a bias-free
    1x1x1 conv + norm) and activated: ``act(shortcut(x) + fuse([conv(x), swin(proj(x))]))``, the same residual
    form as ``ResidualBlock``.

    ``swin=False`` keeps the conv branch only, ``act(shortcut(x) + fuse(conv(x)))`` (a plain residual conv block):
    the ablation that measures what the Swin branch adds. It drops the projection and the Swin stage and halves
    the fuse convolution's input.
    """

    def __init__(self, in_channels: int, out_channels: int, num_heads: int, window_size: int = 4, depth: int = 2,
                 norm: str = "instance", act: str = "leaky_relu", mlp_ratio: float = 4.0, swin: bool = True) -> None:
        super().__init__()
        self.local = ConvNormAct(3, in_channels, out_channels, kernel_size=3, norm=norm, act=act)
        self.project = nn.Conv3d(in_channels, out_channels, kernel_size=1) if swin else None
        self.swin = (SwinStage3D(out_channels, depth, num_heads, window_size=window_size, mlp_ratio=mlp_ratio)
                     if swin else None)
        branches = 2 if swin else 1
        self.fuse = ConvNormAct(3, branches * out_channels, out_channels, kernel_size=1, norm=norm, act=None)
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, bias=False),
                                            make_norm(norm, out_channels, 3)))
        self.act = make_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        x = as_layout_of(x, self.local.conv.weight)  # the convolutions' layout, kept by the shortcut's sum
        branches = self.local(x)                                                     # (B, out, D, H, W)
        if self.swin is not None:  # Swin returns the 1x1x1 projection's layout: contiguous on a 1-thread CPU
            branches = cat_like((branches, self.swin(self.project(x))), 1, like=branches)  # (B, 2*out, D, H, W)
        return self.act(self.shortcut(x) + self.fuse(branches))
