"""Reusable network pieces, one concern per file; every model variant composes these.

2D/3D blocks take ``spatial_dims`` (2 or 3). Shapes: ``(B, C, H, W)`` images, ``(B, C, D, H, W)`` volumes,
``(B, V, ...)`` when a view axis is carried along.
"""

from x2ct.models.blocks.activation import ACTIVATIONS, make_activation
from x2ct.models.blocks.attention_gate import AttentionGate3D
from x2ct.models.blocks.conditioning import ViewFiLM
from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.cross_view import CrossViewAttention
from x2ct.models.blocks.dense import ResidualDenseBlock3D
from x2ct.models.blocks.fusion import FUSION_MODES, ViewFusion
from x2ct.models.blocks.hybrid import TransformerEnhancedBlock3D
from x2ct.models.blocks.lift import ChannelsToDepth, ViewLift, copy_along_rays, view_to_volume
from x2ct.models.blocks.lift_names import LIFTS
from x2ct.models.blocks.mlp import TransformerMLP
from x2ct.models.blocks.norm import NORMS, make_norm
from x2ct.models.blocks.pyramid import MultiScaleFeaturePyramid
from x2ct.models.blocks.resample import Downsample, Upsample, resize2d
from x2ct.models.blocks.residual import ResidualBlock
from x2ct.models.blocks.swin import SwinStage3D, SwinTransformerBlock3D

__all__ = [
    "ACTIVATIONS",
    "FUSION_MODES",
    "LIFTS",
    "NORMS",
    "AttentionGate3D",
    "ChannelsToDepth",
    "ConvNormAct",
    "CrossViewAttention",
    "Downsample",
    "MultiScaleFeaturePyramid",
    "ResidualBlock",
    "ResidualDenseBlock3D",
    "SwinStage3D",
    "SwinTransformerBlock3D",
    "TransformerEnhancedBlock3D",
    "TransformerMLP",
    "Upsample",
    "ViewFiLM",
    "ViewFusion",
    "ViewLift",
    "copy_along_rays",
    "make_activation",
    "make_norm",
    "resize2d",
    "view_to_volume",
]
