"""Milestone 1: the hybrid CNN-ViT. Convolutions for local detail, shifted-window attention for global context.

    views (B, V, 1, S, S)
      -> multi-scale X-ray pyramid per view (weights shared by the views; blocks/pyramid.py):
         features at S, S/2, S/4, S/8, each resized to the volume grid n and merged by a 1x1 convolution
      -> cross-view attention between the views (view_blocks/cross_view.py): every view's tokens attend to all other
         views' tokens (frontal <-> lateral for two views), on a pooled grid, added back as a residual
      -> lift each view into the volume frame by its gantry angle (view_blocks/lift.py), then fuse the views
         (view_blocks/fusion.py). Lifting comes before fusing: orthogonal views share no pixel, only voxels.
      -> 3D U-Net encoder, level i at n / 2^i with c_i channels: a residual dense block (blocks/dense.py), or a
         transformer-enhanced block (conv + Swin branches, blocks/hybrid.py) at the mid level; strided downsampling
      -> bottleneck: transformer-enhanced block (its Swin window covers the whole deepest grid when n / 2^L <= 4)
      -> 3D decoder: upsample; attention gate on the skip (blocks/attention_gate.py); concatenate, merge; residual
         dense block, or a transformer-enhanced block at the mid level
      -> 1x1x1 head: volume (B, 1, n, n, n), linear in training, clipped to [0, 1] in eval;
         deep supervision: a 1x1x1 head on each coarser decoder level (n/2, n/4, ... ; 4 scales with the output)

Ablations: each milestone-1 part can be switched off and replaced by the plain thing it claims to improve on
(``swin``, ``cross_view``, ``dense_blocks``, ``attention_gates``, ``deep_supervision``, ``pyramid_scales=1``; the
``ablation`` config group names them), so the design's claimed gains can be measured (docs/results.md "Ablations").

Depth: the source design asks for an "8-level" U-Net, which a 64^3 grid cannot halve eight times. The default is
4 downsamplings (levels 64, 32, 16, 8, 4): the deepest that keeps one whole 4^3 Swin window in the bottleneck.
``count_parameters`` at the defaults (base_channels 32, 64^3, two 512^2 views) is in docs/models.md and in
``experiments/milestone1.yaml``.

``forward`` returns a ``Reconstruction`` (models/interface.py): the volume (B, 1, n, n, n) and, in training mode, the
deep-supervision volumes [(B, 1, n/2, ...), ...] (finest first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from x2ct.models.blocks.attention_gate import AttentionGate3D
from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.dense import ResidualDenseBlock3D
from x2ct.models.blocks.hybrid import TransformerEnhancedBlock3D
from x2ct.models.blocks.pyramid import MultiScaleFeaturePyramid
from x2ct.models.blocks.resample import Downsample, Upsample, resize2d
from x2ct.models.blocks.residual import ResidualBlock
from x2ct.models.interface import Reconstruction, ReconstructionModel
from x2ct.models.view_blocks.angle_embedding import ViewAngleEmbedding
from x2ct.models.view_blocks.cross_view import CrossViewAttention
from x2ct.models.view_blocks.fusion import ViewFusion
from x2ct.models.view_blocks.lift import ViewLift
from x2ct.models.view_blocks.lift_names import check_lift
from x2ct.physics.view_angles import batch_angles


class HybridViT(ReconstructionModel):
    """Views ``(B, V, 1, view_size, view_size)`` -> volume ``(B, 1, volume_size, volume_size, volume_size)``.

    Args:
        num_views, view_size, volume_size, view_angles_deg: as the data set gives them (the trainer fills them in).
        base_channels: channels of the finest 3D level; level ``i`` has ``base_channels * channel_multipliers[i]``.
        depth: number of downsamplings of the 3D U-Net (``depth + 1`` resolution levels); ``volume_size`` must be
            divisible by ``2 ** depth``.
        channel_multipliers: one per level (``depth + 1`` values).
        transformer_levels: encoder/decoder levels that use a transformer-enhanced block instead of a residual
            dense block (default: the middle level); the bottleneck always does.
        num_heads: attention heads of the Swin branches, per level (``depth + 1`` values) or one for all.
        window_size: Swin window side; swin_depth: Swin blocks per transformer-enhanced block (W-MSA, SW-MSA).
        pyramid_scales: scales of the X-ray pyramid (1, 1/2, 1/4, 1/8 for 4); pyramid_channels its finest width.
        cross_view_grid: side of the pooled grid the views attend over (tokens per view = grid^2);
            cross_view_heads: its heads.
        lift: ``"learned"`` (learned along each ray), ``"parallel"`` (copied along each ray, parallel
            approximation) or ``"geometric"`` (true cone-beam back-projection; needs ``geometry`` and
            ``volume_fov_mm``, which the trainer fills from the data set). The ``lift`` config group picks one.
        fusion: ``"concat"`` (fixed number of views), ``"mean"``, ``"max"`` or ``"attention"`` (any number of views,
            view_blocks/fusion.py).
        view_angle_embedding: add an embedding of each view's gantry angle to its cross-view tokens
            (view_blocks/angle_embedding.py), so the views can come in any number and order (milestone 4).
        deep_supervision: return the coarser decoder outputs in training mode.
        swin: False keeps only the conv branch of every transformer-enhanced block (no Swin attention anywhere).
        cross_view: False lifts and fuses the views without their attending to each other first.
        dense_blocks: False puts a plain residual block (two 3x3x3 convolutions, the same width) where a residual
            dense block would be.
        attention_gates: False passes the skips to the decoder ungated (a plain U-Net skip).
        checkpointing: recompute each 3D block in the backward pass instead of keeping its activations
            (activation checkpointing; trades compute for memory so 128^3 fits on one 80 GB GPU).
    """

    def __init__(self, num_views: int = 2, view_size: int = 512, volume_size: int = 64, base_channels: int = 32,
                 depth: int = 4, view_angles_deg: Sequence[float] = (0.0, 90.0),
                 channel_multipliers: Sequence[int] = (1, 2, 4, 12, 24), transformer_levels: Sequence[int] = (2,),
                 num_heads: int | Sequence[int] = (2, 4, 8, 12, 24), window_size: int = 4, swin_depth: int = 2,
                 pyramid_scales: int = 4, pyramid_channels: int = 16, cross_view_grid: int = 16,
                 cross_view_heads: int = 4, lift: str = "learned", fusion: str = "concat",
                 norm: str = "instance", act: str = "leaky_relu", deep_supervision: bool = True,
                 checkpointing: bool = False, view_angle_embedding: bool = False, swin: bool = True,
                 cross_view: bool = True, dense_blocks: bool = True, attention_gates: bool = True,
                 geometry: dict | None = None, volume_fov_mm: Sequence[float] | None = None) -> None:
        super().__init__()
        check_lift(lift, "HybridViT")
        if len(view_angles_deg) != num_views:
            raise ValueError(f"HybridViT: view_angles_deg has {len(view_angles_deg)} angles {list(view_angles_deg)} "
                             f"but num_views={num_views}")
        if depth < 1 or volume_size % 2**depth:
            raise ValueError(f"HybridViT: volume_size={volume_size} must be divisible by 2**depth={2**depth}")
        if len(channel_multipliers) != depth + 1:
            raise ValueError(f"HybridViT: channel_multipliers needs depth + 1 = {depth + 1} values, got "
                             f"{list(channel_multipliers)}")
        heads = [num_heads] * (depth + 1) if isinstance(num_heads, int) else list(num_heads)
        if len(heads) != depth + 1:
            raise ValueError(f"HybridViT: num_heads needs depth + 1 = {depth + 1} values, got {heads}")
        bad_levels = [level for level in transformer_levels if not 0 <= level < depth]
        if bad_levels:
            raise ValueError(f"HybridViT: transformer_levels {bad_levels} outside the levels 0..{depth - 1}")
        if num_views == 1 and (cross_view or view_angle_embedding):
            on = [key for key, value in (("cross_view", cross_view), ("view_angle_embedding", view_angle_embedding))
                  if value]
            raise ValueError(f"HybridViT: built for one view (num_views=1, e.g. data.views=[pa]), which has no other "
                             f"view to attend to; set {' and '.join(f'model.{k}=false' for k in on)} (the cascade's "
                             f"coarse model: model.coarse_kwargs.<key>), e.g. experiment=benchmark/milestone4_pa")
        if view_angle_embedding and not cross_view:
            raise ValueError("HybridViT: view_angle_embedding=true needs cross_view=true (the angle embedding is added "
                             "to the cross-view attention's tokens)")
        self.num_views, self.view_size, self.volume_size = num_views, view_size, volume_size
        self.deep_supervision, self.checkpointing = deep_supervision, checkpointing
        chans = [base_channels * m for m in channel_multipliers]

        # per view: multi-scale X-ray features, merged on the volume grid
        self.pyramid = MultiScaleFeaturePyramid(1, pyramid_channels, num_scales=pyramid_scales, norm=norm, act=act)
        self.merge_scales = ConvNormAct(2, sum(self.pyramid.out_channels), chans[0], kernel_size=1, norm=norm,
                                        act=act)
        # between views: cross-view attention on a pooled grid
        self.cross_view_grid = min(cross_view_grid, volume_size)
        self.cross_view = CrossViewAttention(chans[0], cross_view_heads) if cross_view else None
        self.angle_embedding = ViewAngleEmbedding(chans[0]) if view_angle_embedding else None
        # into the volume, then one volume from all views
        self.lift = ViewLift(view_angles_deg, lift, chans[0], volume_size, norm=norm, act=act, geometry=geometry,
                             fov_mm=volume_fov_mm)
        # the geometric lift's visibility mask reaches every fusion (a concat one as a channel per view)
        self.fuse = ViewFusion(chans[0], num_views, mode=fusion, norm=norm, act=act,
                               masked=fusion == "concat" and lift == "geometric")

        def block(level: int, channels: int) -> nn.Module:
            if level in transformer_levels or level == depth:
                return TransformerEnhancedBlock3D(channels, channels, heads[level], window_size=window_size,
                                                  depth=swin_depth, norm=norm, act=act, swin=swin)
            if dense_blocks:
                return ResidualDenseBlock3D(channels, norm=norm, act=act)
            return ResidualBlock(3, channels, norm=norm, act=act)

        # 3D U-Net
        self.encoder = nn.ModuleList([block(i, chans[i]) for i in range(depth)])
        self.down = nn.ModuleList([Downsample(3, chans[i], chans[i + 1], norm=norm, act=act) for i in range(depth)])
        self.bottleneck = block(depth, chans[depth])
        self.up = nn.ModuleList([Upsample(3, chans[i + 1], chans[i], norm=norm, act=act) for i in range(depth)])
        self.gates = (nn.ModuleList([AttentionGate3D(chans[i], chans[i + 1], norm=norm) for i in range(depth)])
                      if attention_gates else None)
        self.merge = nn.ModuleList([ConvNormAct(3, 2 * chans[i], chans[i], kernel_size=1, norm=norm, act=act)
                                    for i in range(depth)])
        self.decoder = nn.ModuleList([block(i, chans[i]) for i in range(depth)])
        self.head = nn.Conv3d(chans[0], 1, kernel_size=1)
        # deep supervision on decoder levels 1..min(3, depth - 1): with the output, 4 scales (none when off, so DDP
        # never meets parameters without gradients)
        self.aux_heads = nn.ModuleList([nn.Conv3d(chans[i], 1, kernel_size=1) for i in range(1, min(4, depth))]
                                       if deep_supervision else [])

    def forward(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> Reconstruction:
        """``views`` (B, V, 1, S, S); ``angles_deg`` (V,) or (B, V) (equal rows), default the constructor's. Any
        number of views when the fusion is not ``concat`` (their angles given)."""
        b, v = views.shape[:2]
        angles = self.lift.angles_deg if angles_deg is None else batch_angles(angles_deg)
        fixed = self.fuse.mode == "concat" or angles_deg is None
        if views.shape[2:] != (1, self.view_size, self.view_size) or (fixed and v != self.num_views) or (
                v != len(angles)):
            raise ValueError(f"HybridViT expects views (B, {self.num_views if fixed else 'V'}, 1, {self.view_size}, "
                             f"{self.view_size}) with one angle per view, got {tuple(views.shape)} and angles "
                             f"{list(angles)}")
        n = self.volume_size
        scales = self.pyramid(views.flatten(0, 1))                           # [(B*V, p_k, S/2^k, S/2^k)]
        x = self.merge_scales(torch.cat([resize2d(s, n) for s in scales], dim=1))  # (B*V, c0, n, n)
        x = x.unflatten(0, (b, v))                                           # (B, V, c0, n, n)
        if self.cross_view is not None:
            x = x + self._cross_view(x, angles)
        lifted, seen = self.lift(x, angles, return_mask=True)                # (B, V, c0, n, n, n), mask or None
        volume = self.fuse(lifted, seen)                                     # (B, c0, n, n, n)

        skips = []
        for enc, down in zip(self.encoder, self.down, strict=True):
            volume = self._run(enc, volume)                                  # (B, c_i, n/2^i, ...)
            skips.append(volume)
            volume = down(volume)
        y = self._run(self.bottleneck, volume)                               # (B, c_L, n/2^L, ...)

        aux = []
        for i in reversed(range(len(self.decoder))):
            up = self.up[i](y)                                               # (B, c_i, n/2^i, ...)
            gated = skips[i] if self.gates is None else self.gates[i](skips[i], y)  # weighted by the coarser signal
            y = self._run(self.decoder[i], self.merge[i](torch.cat([up, gated], dim=1)))
            if self.training and self.deep_supervision and 1 <= i <= len(self.aux_heads):
                aux.append(self.aux_heads[i - 1](y))
        out = self.head(y)                                                   # (B, 1, n, n, n)
        if not self.training:
            return Reconstruction(out.clamp(0.0, 1.0))
        return Reconstruction(out, deep_supervision=aux[::-1])              # finest first

    @property
    def any_view_count(self) -> bool:
        """Whether the model takes any number of views (with their angles): every fusion but ``concat``."""
        return self.fuse.mode != "concat"

    @property
    def min_views(self) -> int:
        """Fewest views a forward pass takes: ``num_views`` with the concat fusion (built for exactly those);
        otherwise 2 with cross-view attention (each view attends to the others), else 1."""
        return 2 if self.any_view_count and self.cross_view is not None else super().min_views

    def _cross_view(self, x: Tensor, angles: tuple[float, ...]) -> Tensor:
        """The cross-view update of ``x`` (B, V, C, n, n), computed on a pooled grid and upsampled back; with the
        angle embedding, every token of a view carries its gantry angle (added to queries and keys)."""
        b, v, c, n, _ = x.shape
        g = self.cross_view_grid
        pooled = F.adaptive_avg_pool2d(x.flatten(0, 1), g).unflatten(0, (b, v))       # (B, V, C, g, g)
        pos = None
        if self.angle_embedding is not None:
            embedded = self.angle_embedding(torch.tensor(angles, device=x.device))       # (V, C)
            pos = embedded.to(x.dtype)[:, None, :].expand(v, g * g, c)                  # (V, g*g, C)
        update = self.cross_view.forward_maps(pooled, pos) - pooled
        return F.interpolate(update.flatten(0, 1), size=(n, n), mode="bilinear", align_corners=False).unflatten(
            0, (b, v))

    def _run(self, block: nn.Module, x: Tensor) -> Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)
