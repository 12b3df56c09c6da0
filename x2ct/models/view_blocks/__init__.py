"""The network pieces that know about views: lifting each view's features into the volume by its gantry angle
(parallel copy, learned depth, or the cone-beam geometry), fusing the lifted views, attention across views, and
telling the views apart (per-view FiLM, angle embedding). The generic pieces are in ``x2ct.models.blocks``.

Shapes: ``(B, V, C, h, w)`` view features, ``(B, V, C, D, H, W)`` lifted views, ``(B, C, D, H, W)`` fused.
"""

from x2ct.models.view_blocks.angle_embedding import ViewAngleEmbedding
from x2ct.models.view_blocks.conditioning import ViewFiLM
from x2ct.models.view_blocks.cross_view import CrossViewAttention
from x2ct.models.view_blocks.fusion import FUSION_MODES, ViewFusion
from x2ct.models.view_blocks.lift import ChannelsToDepth, ViewLift, copy_along_rays, view_to_volume
from x2ct.models.view_blocks.lift_names import LIFTS

__all__ = [
    "FUSION_MODES",
    "LIFTS",
    "ChannelsToDepth",
    "CrossViewAttention",
    "ViewAngleEmbedding",
    "ViewFiLM",
    "ViewFusion",
    "ViewLift",
    "copy_along_rays",
    "view_to_volume",
]
