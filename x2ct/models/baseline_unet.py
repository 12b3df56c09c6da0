"""Baseline "enhanced U-Net": a few X-ray views in, a CT volume out.

    views (B, V, 1, S, S)
      -> 2D encoder, weights shared by all views; a per-view FiLM after the stem's norm tells it which view
         it sees; stem at the view resolution, then resized to the volume grid n_0 = volume_size:
         level i: residual blocks at n_i = volume_size / 2^i with c_i = base_channels * 2^i channels
      -> lift into the volume frame, by each view's gantry angle (view_blocks/lift.py), lift="learned":
         deepest level: learned features along each ray (ChannelsToDepth);
         other levels: the parallel copy (features copied along each ray), as skip connections;
         lift="geometric": the true cone-beam lift at every level (view_blocks/cone_lift.py)
      -> fuse the views at every level (view_blocks/fusion.py)
      -> 3D decoder: residual blocks at n_{L-1}, then per level up-sample, concatenate the fused skip, merge,
         residual block
      -> 1x1x1 convolution + a learned template volume (started at the training mean CT): volume (B, 1, D, D, D),
         D = volume_size; clipped to [0, 1] in eval mode

With the default 4 levels, 32 base channels, 2 views of 128^2 and a 64^3 volume the model has 15,055,169
parameters (``x2ct.models.count_parameters``), 262,144 of them the 64^3 template.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from x2ct.models.blocks import ConvNormAct, Downsample, ResidualBlock, Upsample, make_activation, make_norm, resize2d
from x2ct.models.blocks.layout import cat_like
from x2ct.models.interface import Reconstruction, ReconstructionModel
from x2ct.models.view_blocks import ViewFiLM, ViewFusion, ViewLift
from x2ct.models.view_blocks.lift_names import check_lift
from x2ct.physics.view_angles import batch_angles


class BaselineUNet(ReconstructionModel):
    """Views ``(B, V, 1, view_size, view_size)`` -> volume ``(B, 1, volume_size, volume_size, volume_size)``.

    Args:
        num_views: ``V``, the number of input views.
        view_size: side of the square input images.
        volume_size: side of the cubic output volume; divisible by ``2 ** (depth - 1)``, and the deepest grid
            ``volume_size / 2 ** (depth - 1)`` must be at least 2.
        base_channels: channels at the finest level; level ``i`` has ``base_channels * 2 ** i``.
        depth: number of resolution levels of the encoder and of the decoder.
        view_angles_deg: gantry angle of each view (``x2ct.physics.geometry``: 0 = PA, 90 = left lateral).
        norm: ``"instance"``, ``"batch"``, ``"group"`` or ``"none"``.
        dropout: channel dropout inside every residual block.
        act: activation (``blocks.activation``).
        fusion: how views are fused at each level, ``"concat"`` (learned, per view) or ``"mean"``.
        encoder_blocks: residual blocks per level of the 2D encoder (cheap: 2D, and shared by the views).
        bottleneck_blocks: residual blocks on the deepest 3D grid, where the views first meet.
        lift: ``"learned"``: copied along parallel rays at the skip levels and learned at the deepest (the
            default); ``"geometric"``: true cone-beam back-projection at every level (needs ``geometry`` and
            ``volume_fov_mm``, filled in by the trainer from the data set).
    """

    def __init__(self, num_views: int = 2, view_size: int = 128, volume_size: int = 64, base_channels: int = 32,
                 depth: int = 4, view_angles_deg: Sequence[float] = (0.0, 90.0), norm: str = "instance",
                 dropout: float = 0.0, act: str = "leaky_relu", fusion: str = "concat",
                 encoder_blocks: int = 2, bottleneck_blocks: int = 2, learned_prior: bool = True,
                 lift: str = "learned", geometry: dict | None = None,
                 volume_fov_mm: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(view_angles_deg) != num_views:
            raise ValueError(f"BaselineUNet: view_angles_deg has {len(view_angles_deg)} angles {list(view_angles_deg)} "
                             f"but num_views={num_views}")
        if depth < 1 or volume_size % 2 ** (depth - 1) or volume_size // 2 ** (depth - 1) < 2:
            raise ValueError(f"BaselineUNet: volume_size={volume_size} must be divisible by 2**(depth-1)="
                             f"{2 ** max(depth - 1, 0)} with a deepest grid of at least 2 (depth={depth})")
        self.num_views, self.view_size, self.volume_size = num_views, view_size, volume_size
        grids = [volume_size // 2**i for i in range(depth)]
        chans = [base_channels * 2**i for i in range(depth)]

        # 2D encoder, shared by all views
        self.stem_conv = nn.Conv2d(1, chans[0], kernel_size=3, padding=1, bias=norm == "none")
        self.stem_norm = make_norm(norm, chans[0], spatial_dims=2)
        self.view_film = ViewFiLM(num_views, chans[0])
        self.stem_act = make_activation(act)
        self.down2d = nn.ModuleList(
            [nn.Identity()] + [Downsample(2, chans[i - 1], chans[i], norm=norm, act=act) for i in range(1, depth)])
        self.enc2d = nn.ModuleList(
            [nn.Sequential(*[ResidualBlock(2, c, norm=norm, act=act, dropout=dropout) for _ in range(encoder_blocks)])
             for c in chans])

        # lift and fuse, per level
        check_lift(lift, "BaselineUNet", allowed=("learned", "geometric"))
        modes = ["geometric"] * depth if lift == "geometric" else ["parallel"] * (depth - 1) + ["learned"]
        self.lift = nn.ModuleList(
            [ViewLift(view_angles_deg, mode, c, n, norm=norm, act=act, geometry=geometry, fov_mm=volume_fov_mm)
             for mode, c, n in zip(modes, chans, grids, strict=True)])
        # the geometric lift's visibility mask reaches every fusion (a concat one as a channel per view)
        self.fuse = nn.ModuleList(
            [ViewFusion(c, num_views, mode=fusion, norm=norm, act=act, masked=fusion == "concat" and m == "geometric")
             for m, c in zip(modes, chans, strict=True)])

        # 3D decoder
        self.bottleneck = nn.Sequential(
            *[ResidualBlock(3, chans[-1], norm=norm, act=act, dropout=dropout) for _ in range(bottleneck_blocks)])
        self.up3d = nn.ModuleList(
            [Upsample(3, chans[i + 1], chans[i], norm=norm, act=act) for i in range(depth - 1)])
        self.merge3d = nn.ModuleList(
            [ConvNormAct(3, 2 * chans[i], chans[i], norm=norm, act=act) for i in range(depth - 1)])
        self.dec3d = nn.ModuleList(
            [ResidualBlock(3, chans[i], norm=norm, act=act, dropout=dropout) for i in range(depth - 1)])
        self.head = nn.Conv3d(chans[0], 1, kernel_size=1)
        if learned_prior:  # start exactly at the template; the U-Net learns the per-patient correction
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # a learned template volume the network corrects per patient; the trainer starts it at the training set's
        # mean CT (`initialise_prior`), so the U-Net spends its capacity on what the X-rays say about this patient
        self.prior = nn.Parameter(torch.zeros(1, 1, volume_size, volume_size, volume_size)) if learned_prior else None

    def forward(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> Reconstruction:
        """``views`` (B, V, 1, S, S) -> volume (B, 1, n, n, n); ``angles_deg`` (V,) or (B, V): the views' gantry angles
        when they differ from the constructor's (same number of views: the per-view FiLM is fixed)."""
        b, v = views.shape[:2]
        angles = None if angles_deg is None else batch_angles(angles_deg)  # read once, for every level's lift
        if views.shape[1:] != (self.num_views, 1, self.view_size, self.view_size):
            raise ValueError(f"BaselineUNet expects views (B, {self.num_views}, 1, {self.view_size}, "
                             f"{self.view_size}), got {tuple(views.shape)}")
        x = self.stem_norm(self.stem_conv(views.flatten(0, 1)))                  # (B*V, c0, S, S)
        x = self.stem_act(self.view_film(x.unflatten(0, (b, v))).flatten(0, 1))
        x = resize2d(x, self.volume_size)                                        # (B*V, c0, n0, n0)

        fused = []                                                               # per level: (B, c_i, n_i^3)
        for down, enc, lift, fuse in zip(self.down2d, self.enc2d, self.lift, self.fuse, strict=True):
            x = enc(down(x))                                                     # (B*V, c_i, n_i, n_i)
            fused.append(fuse(*lift(x.unflatten(0, (b, v)), angles, return_mask=True)))  # mask None unless geometric

        y = self.bottleneck(fused[-1])
        for i in reversed(range(len(self.up3d))):
            y = self.up3d[i](y)                                                  # (B, c_i, n_i^3)
            y = self.dec3d[i](self.merge3d[i](cat_like([y, fused[i]], 1, like=y)))  # fused[i]: contiguous
        out = self.head(y)                                                       # (B, 1, D, D, D)
        if self.prior is not None:
            out = out + self.prior
        # linear in training (a sigmoid would need infinite logits for air at exactly 0); clipped to [0, 1] in eval
        return Reconstruction(out if self.training else out.clamp(0.0, 1.0))

    @torch.no_grad()
    def initialise_prior(self, mean_volume: Tensor) -> None:
        """Start the template at a mean CT ``(1, D, D, D)`` or ``(1, 1, D, D, D)`` in [0, 1] (no-op without one)."""
        if self.prior is not None:
            self.prior.copy_(mean_volume.reshape(self.prior.shape).to(self.prior))
