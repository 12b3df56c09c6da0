"""Reusable network pieces, one concern per file; every model variant composes these. The pieces that know about
views (lifting them into the volume, fusing them, attending across them) are in ``x2ct.models.view_blocks``.

2D/3D blocks take ``spatial_dims`` (2 or 3). Shapes: ``(B, C, H, W)`` images, ``(B, C, D, H, W)`` volumes.
"""

from x2ct.models.blocks.activation import ACTIVATIONS, make_activation
from x2ct.models.blocks.attention_gate import AttentionGate3D
from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.dense import ResidualDenseBlock3D
from x2ct.models.blocks.hybrid import TransformerEnhancedBlock3D
from x2ct.models.blocks.mlp import TransformerMLP
from x2ct.models.blocks.norm import NORMS, make_norm
from x2ct.models.blocks.pyramid import MultiScaleFeaturePyramid
from x2ct.models.blocks.resample import Downsample, Upsample, resize2d
from x2ct.models.blocks.residual import ResidualBlock
from x2ct.models.blocks.swin import SwinStage3D, SwinTransformerBlock3D

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "AttentionGate3D",
    "ConvNormAct",
    "Downsample",
    "MultiScaleFeaturePyramid",
    "ResidualBlock",
    "ResidualDenseBlock3D",
    "SwinStage3D",
    "SwinTransformerBlock3D",
    "TransformerEnhancedBlock3D",
    "TransformerMLP",
    "Upsample",
    "make_activation",
    "make_norm",
    "resize2d",
]
