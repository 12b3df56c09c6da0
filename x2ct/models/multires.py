"""Milestone 2: a coarse-to-fine cascade, so volumes reach 128^3 (and 256^3) without a 256^3 U-Net.

    views (B, V, 1, S, S)
      -> stage 1: any registered model (registry.py; default hybrid_vit) at n_1 = stage_sizes[0]: (B, 1, n_1^3)
      -> stage k = 2..K at n_k = stage_sizes[k - 1], a Refiner:
           views -> 2D stem at S, resized to n_k (blocks/resample.py), residual block: per-view features
             (B, V, c, n_k, n_k), weights shared by the views
           -> lifted along each view's rays by its gantry angle (view_blocks/lift.py: parallel, or geometric), averaged
              over the views
           -> concatenated with the previous stage's volume upsampled to n_k (trilinear, align_corners=False)
           -> a small 3D U-Net of residual dense blocks, ``refiner_levels`` resolution levels
           -> 1x1x1 head, zero at initialisation: a residual added to the upsampled previous volume, so an untrained
              cascade is exactly its coarse stage upsampled
      -> volume (B, 1, N, N, N), N = stage_sizes[-1] = volume_size

Output (a ``Reconstruction``, models/interface.py):

- Training mode: ``volume`` (B, 1, N, N, N), ``deep_supervision`` [stage K-1, ..., stage 1, stage 1's own deep
  supervision outputs ...], finest first. The ``deep_supervision`` loss compares each entry with the target
  area-averaged to its size, so the loss reaches every stage (its ``scale_weights``, if given, need one weight per
  entry). A coarse model with deep supervision in training mode adds its own outputs; a frozen one (eval) adds none.
- Patch training (``train_patch_size = p``): the LAST stage runs on one random ``p^3`` patch per sample, with the
  upsampled previous volume and the lifted view features cropped at the same place (x2ct/ops/patches.py).
  ``volume`` is then ``(B, 1, p, p, p)``, ``patch_origins`` ``(B, 3)`` long, the patch's first voxel (D, H, W)
  in the ``N^3`` grid, and ``patch_size`` the int ``p``: the loss compares ``volume`` with
  ``crop_patches(target, patch_origins, (p, p, p))``. Earlier stages run on whole volumes, so ``deep_supervision``
  still holds whole coarser volumes, compared with the whole target as before; the last stage is the large one
  (8x the voxels of the one before), so it is the one that needs patches.
- Eval mode: the final volume only, clamped to [0, 1]; every stage's volume is clamped before the next refines it.
  With ``infer_patch_size`` the fine stages run tile by tile (``sliding_window_inference``, Gaussian blending);
  ``stage_outputs`` gives every stage's volume for per-stage validation metrics.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from x2ct.models.blocks.conv import ConvNormAct
from x2ct.models.blocks.dense import ResidualDenseBlock3D
from x2ct.models.blocks.layout import cat_like
from x2ct.models.blocks.resample import Downsample, Upsample, resize2d
from x2ct.models.blocks.residual import ResidualBlock
from x2ct.models.interface import Reconstruction, ReconstructionModel
from x2ct.models.registry import model_from_name
from x2ct.models.view_blocks.fusion import ViewFusion
from x2ct.models.view_blocks.lift import ViewLift
from x2ct.models.view_blocks.lift_names import check_lift
from x2ct.ops.patches import crop_context, sample_patch_origins, sliding_window_inference
from x2ct.physics.view_angles import batch_angles


def load_coarse_weights(model: nn.Module, path: str) -> None:
    """Start stage 1 from a trained checkpoint (e.g. milestone 1's ``best.pt``): its EMA weights if it kept them,
    else its model weights, read with ``torch.load(weights_only=True)``; the stage must be built alike."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... depending on the damage
        raise ValueError(f"coarse_checkpoint {path}: cannot read it ({str(err).splitlines()[0]})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"coarse_checkpoint {path}: not an x2ct checkpoint (no 'model' weights)")
    weights = state["ema"]["module"] if state.get("ema") else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first_line = str(err).splitlines()[0]
        raise ValueError(f"coarse_checkpoint {path}: its weights do not fit the coarse model built from "
                         f"coarse_model / coarse_kwargs ({first_line}); build it as that run did") from err


class Refiner(nn.Module):
    """One fine stage on an ``n^3`` grid: views + previous (coarser) volume -> volume ``(B, 1, n, n, n)``.

    Split in two so patches can be cut between them: ``view_features`` (whole grid, the views' evidence placed in
    the volume) and ``refine`` (any grid: whole volume, training patch or inference tile).

    Args:
        num_views, view_angles_deg: the views and their gantry angles.
        grid_size: ``n``; divisible by ``2 ** (levels - 1)``.
        channels: width of the view features and of the finest 3D level; level ``i`` has ``channels * 2 ** i``.
        levels: resolution levels of the 3D U-Net (1: no downsampling, one residual dense block).
        norm: the 2D view branch's normalisation (whole views, so any kind).
        refine_norm: the 3D U-Net's (``refine``), which runs on patches in training and on tiles or the whole
            volume at inference: ``"layer"`` (per voxel, over channels) or ``"none"`` keep ``refine(patch)`` equal to
            the whole-volume ``refine`` cropped (away from the receptive field's border); ``"instance"`` normalises
            over whatever extent it is given, so a patch-trained refiner is then another function at inference.
    """

    def __init__(self, num_views: int, view_angles_deg: Sequence[float], grid_size: int, channels: int = 16,
                 levels: int = 2, norm: str = "instance", act: str = "leaky_relu", lift: str = "parallel",
                 geometry: dict | None = None, volume_fov_mm: Sequence[float] | None = None,
                 refine_norm: str = "layer") -> None:
        super().__init__()
        self.grid_size = grid_size
        self.multiple = 2 ** (levels - 1)  # patch and tile origins on the strided levels' grid
        chans = [channels * 2**i for i in range(levels)]
        # 2D: the stem sees the views at their own resolution, the residual block at the stage's
        self.stem = ConvNormAct(2, 1, channels, norm=norm, act=act)
        self.view_block = ResidualBlock(2, channels, norm=norm, act=act)
        # into the volume: parameter-free backprojection (parallel copy or true cone beam), cheap at 256^3
        self.lift = ViewLift(view_angles_deg, lift, channels, grid_size, geometry=geometry, fov_mm=volume_fov_mm)
        self.fuse = ViewFusion(channels, num_views, mode="mean")
        # 3D U-Net on [view features, previous volume]
        body = dict(norm=refine_norm, act=act)
        self.inlet = ConvNormAct(3, channels + 1, chans[0], **body)
        self.encoder = nn.ModuleList([ResidualDenseBlock3D(c, **body) for c in chans[:-1]])
        self.down = nn.ModuleList([Downsample(3, chans[i], chans[i + 1], **body) for i in range(levels - 1)])
        self.bottleneck = ResidualDenseBlock3D(chans[-1], **body)
        self.up = nn.ModuleList([Upsample(3, chans[i + 1], chans[i], **body) for i in range(levels - 1)])
        self.merge = nn.ModuleList([ConvNormAct(3, 2 * c, c, kernel_size=1, **body) for c in chans[:-1]])
        self.decoder = nn.ModuleList([ResidualDenseBlock3D(c, **body) for c in chans[:-1]])
        self.head = nn.Conv3d(chans[0], 1, kernel_size=1)
        nn.init.zeros_(self.head.weight)  # start as the identity on the upsampled previous volume
        nn.init.zeros_(self.head.bias)

    def view_maps(self, views: Tensor) -> Tensor:
        """``(B, V, 1, S, S)`` -> ``(B, V, c, n, n)``: per-view 2D features at the stage's grid size."""
        b, v = views.shape[:2]
        x = self.stem(views.flatten(0, 1))                                   # (B*V, c, S, S)
        return self.view_block(resize2d(x, self.grid_size)).unflatten(0, (b, v))

    def lift_features(self, maps: Tensor, angles_deg: Tensor | Sequence[float] | None = None,
                      region: tuple[Tensor, Sequence[int]] | None = None) -> Tensor:
        """``view_maps`` ``(B, V, c, n, n)`` -> ``(B, c, n, n, n)`` lifted along the rays and averaged over the views
        that see each voxel (the geometric lift's mask); with ``region`` ``(origins (B, 3), (d, h, w))`` only at
        one patch per sample, ``(B, c, d, h, w)``, equal to the whole result cropped (``ViewLift``)."""
        return self.fuse(*self.lift(maps, angles_deg, return_mask=True, region=region))

    def view_features(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> Tensor:
        """``(B, V, 1, S, S)`` -> ``(B, c, n, n, n)``: per-view 2D features, backprojected and averaged."""
        return self.lift_features(self.view_maps(views), angles_deg)

    def refine(self, features: Tensor, context: Tensor) -> Tensor:
        """``features`` ``(B, c, d, h, w)`` and ``context`` (the upsampled previous volume, ``(B, 1, d, h, w)``) on
        the same grid -> ``context + residual`` ``(B, 1, d, h, w)``; sides divisible by ``2 ** (levels - 1)``."""
        # the lifted features are contiguous, whatever the 3D convolutions' layout
        y = self.inlet(cat_like([features, context], 1, like=self.inlet.conv.weight))
        skips = []
        for enc, down in zip(self.encoder, self.down, strict=True):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.bottleneck(y)
        for i in reversed(range(len(self.decoder))):
            y = self.decoder[i](self.merge[i](torch.cat([self.up[i](y), skips[i]], dim=1)))
        return context + self.head(y)

    def upsample(self, previous: Tensor) -> Tensor:
        """``(B, 1, m, m, m)`` -> ``(B, 1, n, n, n)``, trilinear with ``align_corners=False`` (as ``crop_context``)."""
        return F.interpolate(previous, scale_factor=self.grid_size / previous.shape[-1], mode="trilinear",
                             align_corners=False)

    def forward(self, views: Tensor, previous: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> Tensor:
        """Whole volume: views ``(B, V, 1, S, S)``, previous ``(B, 1, m, m, m)`` -> ``(B, 1, n, n, n)``."""
        return self.refine(self.view_features(views, angles_deg), self.upsample(previous))


class MultiResCascade(ReconstructionModel):
    """Views ``(B, V, 1, view_size, view_size)`` -> volume ``(B, 1, volume_size, volume_size, volume_size)``.

    Args:
        num_views, view_size, volume_size, view_angles_deg: as the data set gives them (the trainer fills them in).
        coarse_model: registered name of stage 1 (``x2ct.models.registry.MODELS``).
        coarse_kwargs: its other constructor arguments (its ``volume_size`` is ``stage_sizes[0]``).
        stage_sizes: grid side of each stage, coarse first; the last is ``volume_size``, each divides the next.
        refiner_channels, refiner_levels: width and resolution levels of each fine stage's ``Refiner``.
        freeze_coarse: stage 1 keeps its weights (no gradients) and stays in eval mode (trained stage by stage,
            e.g. from a milestone-1 checkpoint loaded into ``.coarse``).
        train_patch_size: train on one random patch per sample: an int ``p`` patches the last stage (``p^3``), a list
            gives each fine stage its side or None (whole volume), e.g. ``[64, 64]`` for 64 -> 128 -> 256; once a
            stage is patched every later one is (its context is the earlier patch, which covers it).
        checkpointing: recompute a fine stage's lift and 3D U-Net in the backward pass instead of keeping their
            activations (activation checkpointing): True / False for every fine stage, or one per fine stage; the
            coarse model has its own key in ``coarse_kwargs``.
        lift: ``"parallel"`` (the fine stages copy view features along parallel rays), ``"geometric"`` (true
            cone-beam back-projection in the fine stages and, unless ``coarse_kwargs`` sets its own lift, the coarse
            model; needs ``geometry`` and ``volume_fov_mm``, filled in by the trainer) or ``"learned"`` (the coarse
            model's lift unless ``coarse_kwargs`` sets its own; the fine stages copy in parallel).
        infer_patch_size: run the fine stages tile by tile in eval mode, tiles of this side (capped at each
            stage's size) overlapping by ``infer_overlap`` (None: whole volume at once).
        norm: the normalisation of the refiners' 2D view branch (the coarse model's is in ``coarse_kwargs``).
        refiner_norm: the refiners' 3D normalisation (``Refiner.refine_norm``): ``"layer"`` (default) or ``"none"``
            so that patches and tiles compute what the whole volume does; ``"instance"`` normalises over each
            patch or tile, so they compute another function than the whole volume.
    """

    def __init__(self, num_views: int = 2, view_size: int = 128, volume_size: int = 128,
                 view_angles_deg: Sequence[float] = (0.0, 90.0), coarse_model: str = "hybrid_vit",
                 coarse_kwargs: Mapping[str, Any] | None = None, stage_sizes: Sequence[int] = (64, 128),
                 refiner_channels: int = 16, refiner_levels: int = 2, freeze_coarse: bool = False,
                 train_patch_size: int | Sequence[int | None] | None = None, infer_patch_size: int | None = None,
                 infer_overlap: float = 0.5, norm: str = "instance", refiner_norm: str = "layer",
                 act: str = "leaky_relu",
                 coarse_checkpoint: str | None = None, lift: str = "parallel", geometry: dict | None = None,
                 volume_fov_mm: Sequence[float] | None = None, checkpointing: bool | Sequence[bool] = False) -> None:
        super().__init__()
        check_lift(lift, "MultiResCascade")
        stage_sizes = [int(s) for s in stage_sizes]
        _check_settings(num_views, volume_size, view_angles_deg, stage_sizes, refiner_levels,
                        _patch_sizes(train_patch_size, len(stage_sizes) - 1), infer_patch_size, infer_overlap)
        self.num_views, self.view_size, self.volume_size = num_views, view_size, volume_size
        self._stage_sizes, self.freeze_coarse = tuple(stage_sizes), freeze_coarse
        self.checkpointing = ([bool(checkpointing)] * (len(stage_sizes) - 1) if isinstance(checkpointing, bool)
                              else [bool(c) for c in checkpointing])
        if len(self.checkpointing) != len(stage_sizes) - 1:
            raise ValueError(f"MultiResCascade (conf/model/multires.yaml): checkpointing {checkpointing} needs one "
                             f"entry per fine stage ({len(stage_sizes) - 1}) or one bool")
        self.train_patch_size = train_patch_size  # plain attributes: a caller may switch patching per run
        self.infer_patch_size, self.infer_overlap = infer_patch_size, infer_overlap

        coarse_kwargs = dict(coarse_kwargs or {})
        if lift != "parallel":  # the lift group's choice reaches the coarse model, unless its kwargs say otherwise
            coarse_kwargs.setdefault("lift", lift)
        if coarse_kwargs.get("lift") == "geometric":
            coarse_kwargs.update(geometry=geometry, volume_fov_mm=volume_fov_mm)
        self.coarse = model_from_name(coarse_model, num_views=num_views, view_size=view_size,
                                      volume_size=stage_sizes[0], view_angles_deg=view_angles_deg, **coarse_kwargs)
        refiner_lift = "geometric" if lift == "geometric" else "parallel"
        self.refiners = nn.ModuleList([
            Refiner(num_views, view_angles_deg, n, refiner_channels, refiner_levels, norm=norm, act=act,
                    refine_norm=refiner_norm, lift=refiner_lift, geometry=geometry, volume_fov_mm=volume_fov_mm)
            for n in stage_sizes[1:]])
        if coarse_checkpoint:
            load_coarse_weights(self.coarse, coarse_checkpoint)
        if freeze_coarse:
            self.coarse.requires_grad_(False)
            self.coarse.eval()

    @property
    def train_patch_sizes(self) -> list[int | None]:
        """Each fine stage's training patch side (None: whole volume), coarse to fine."""
        return _patch_sizes(self.train_patch_size, len(self.refiners))

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """Each stage's grid side, coarse first."""
        return self._stage_sizes

    @property
    def min_views(self) -> int:
        """The fewest views a batch may hold: the coarse model's (its cross-view attention needs 2)."""
        return self.coarse.min_views

    @property
    def any_view_count(self) -> bool:
        """Whether the cascade takes any number of views: its refiners do (mean fusion), so its coarse model decides."""
        return self.coarse.any_view_count

    def train(self, mode: bool = True) -> MultiResCascade:
        """As ``nn.Module.train``, but a frozen coarse stage stays in eval mode (its norms and dropout fixed)."""
        super().train(mode)
        if self.freeze_coarse:
            self.coarse.eval()
        return self

    def forward(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> Reconstruction:
        """``views`` (B, V, 1, S, S); ``angles_deg`` (V,) or (B, V) (equal rows), default the constructor's."""
        if views.shape[2:] != (1, self.view_size, self.view_size) or (
                angles_deg is None and views.shape[1] != self.num_views):
            raise ValueError(f"MultiResCascade expects views (B, {self.num_views}, 1, {self.view_size}, "
                             f"{self.view_size}), got {tuple(views.shape)}")
        if not self.training:
            return Reconstruction(self.stage_outputs(views, angles_deg)[-1])
        angles_deg = None if angles_deg is None else batch_angles(angles_deg)  # read once for every stage's lift
        volume, coarse_aux = self._coarse(views, angles_deg)
        origins = self._patch_origins(views.shape[0], views.device)  # per fine stage: (B, 3) or None (whole)
        volumes, regions = [volume], [None]                          # coarse first; a patch's origins or None
        for k in range(len(self.refiners)):
            volumes.append(self._train_stage(k, views, volumes[-1], regions[-1], origins[k], angles_deg))
            regions.append(origins[k])
        regions_of_aux = None
        if any(r is not None for r in regions[:-1]):  # a patched earlier stage: the loss crops its target too
            regions_of_aux = [None if r is None else (r, n) for r, n in
                              zip(regions[-2::-1], self.stage_sizes[-2::-1], strict=True)] + [None] * len(coarse_aux)
        return Reconstruction(volumes[-1], deep_supervision=volumes[-2::-1] + coarse_aux,
                              deep_supervision_regions=regions_of_aux, patch_origins=regions[-1],
                              patch_size=None if regions[-1] is None else self.train_patch_sizes[-1])

    def stage_outputs(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> list[Tensor]:
        """Eval mode: every stage's volume, clamped to [0, 1], coarse first: ``[(B, 1, n_k, n_k, n_k), ...]``."""
        if self.training:
            raise RuntimeError("MultiResCascade.stage_outputs gives the eval-mode volumes: call model.eval() first")
        angles_deg = None if angles_deg is None else batch_angles(angles_deg)
        volumes = [self._coarse(views, angles_deg)[0]]
        for refiner in self.refiners:
            volumes.append(self._infer_stage(refiner, views, volumes[-1], angles_deg).clamp(0.0, 1.0))
        return volumes

    @torch.no_grad()
    def initialise_prior(self, mean_volume: Tensor) -> None:
        """Hand a mean CT ``(1, N, N, N)`` (or ``(1, 1, N, N, N)``), area-averaged to stage 1's grid, to a coarse
        model with a template volume (``BaselineUNet``); a frozen coarse stage keeps its own."""
        if self.freeze_coarse:
            return
        n = self.stage_sizes[0]
        volume = mean_volume.reshape(1, 1, *mean_volume.shape[-3:]).float()
        self.coarse.initialise_prior(F.interpolate(volume, size=(n, n, n), mode="area"))

    def _coarse(self, views: Tensor, angles_deg=None) -> tuple[Tensor, list[Tensor]]:
        """Stage 1 -> (volume ``(B, 1, n_1^3)``, its own deep-supervision outputs, finest first)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_coarse):
            out = self.coarse(views, angles_deg=angles_deg)
        return out.volume, list(out.deep_supervision)

    def _patch_origins(self, batch: int, device: torch.device) -> list[Tensor | None]:
        """Each fine stage's patch origins ``(B, 3)`` (None: whole volume), drawn finest first: the last stage's
        uniformly on its refiner's strided grid, each earlier patch uniformly among the aligned ones that hold the
        coarse voxels the next patch's context interpolates from (``crop_context``)."""
        sizes = self.train_patch_sizes
        origins: list[Tensor | None] = [None] * len(sizes)
        for k in reversed(range(len(sizes))):
            if sizes[k] is None:
                continue
            n, p, step = self.stage_sizes[k + 1], sizes[k], self.refiners[k].multiple
            if k == len(sizes) - 1:
                origins[k] = sample_patch_origins((n, n, n), (p, p, p), batch, multiple=step).to(device)
                continue
            fine, q, scale = origins[k + 1], sizes[k + 1], self.stage_sizes[k + 2] / n
            low = ((fine + 0.5) / scale - 0.5).floor().clamp(0, n - 1)          # coarse voxels the context reads
            high = ((fine + q - 0.5) / scale - 0.5).ceil().clamp(0, n - 1)
            first = (high - p + 1).clamp(min=0).div(step).ceil() * step         # aligned origins holding them
            last = low.clamp(max=n - p).div(step).floor() * step
            choices = (last - first).div(step) + 1
            draw = (torch.rand(choices.shape, device=device) * choices).floor().clamp(max=choices - 1)
            origins[k] = (first + draw * step).long()
        return origins

    def _train_stage(self, k: int, views: Tensor, previous: Tensor, previous_origins: Tensor | None,
                     origins: Tensor | None, angles_deg=None) -> Tensor:
        """Fine stage ``k`` in training: the whole ``(B, 1, n, n, n)`` or one patch per sample ``(B, 1, p, p, p)``
        at ``origins``; ``previous`` is the stage before's volume, or its patches at ``previous_origins``. The view
        features are lifted at the patch's voxels alone, the context read from the previous volume there."""
        refiner, n = self.refiners[k], self.stage_sizes[k + 1]
        maps = refiner.view_maps(views)                                       # (B, V, c, n, n): 2D, cheap
        if origins is None:
            region, context = None, refiner.upsample(previous)
        else:
            p = (self.train_patch_sizes[k],) * 3
            region = (origins, p)
            whole = None if previous_origins is None else (self.stage_sizes[k],) * 3
            context = crop_context(previous, origins, p, scale=n / self.stage_sizes[k],
                                   coarse_origins=previous_origins, coarse_shape=whole)

        def stage(maps: Tensor, context: Tensor) -> Tensor:
            return refiner.refine(refiner.lift_features(maps, angles_deg, region), context)

        if self.checkpointing[k] and torch.is_grad_enabled():
            return checkpoint(stage, maps, context, use_reentrant=False)
        return stage(maps, context)

    def _infer_stage(self, refiner: Refiner, views: Tensor, previous: Tensor, angles_deg=None) -> Tensor:
        """Eval-mode output of one fine stage ``(B, 1, n, n, n)``, whole or tile by tile (each tile lifts the view
        features at its own voxels: no whole-grid feature volume)."""
        if self.infer_patch_size is None:
            return refiner(views, previous, angles_deg)
        n, b = refiner.grid_size, views.shape[0]
        p = (min(self.infer_patch_size, n),) * 3
        maps = refiner.view_maps(views)                                       # (B, V, c, n, n)
        scale = n / previous.shape[-1]

        def predict(region: tuple[slice, slice, slice]) -> Tensor:
            origin = torch.tensor([s.start for s in region], device=views.device)
            features = refiner.lift_features(maps, angles_deg, (origin.expand(b, 3), p))
            return refiner.refine(features, crop_context(previous, origin, p, scale))

        return sliding_window_inference(predict, (n, n, n), p, self.infer_overlap, multiple=refiner.multiple)


def _patch_sizes(train_patch_size: int | Sequence[int | None] | None, stages: int) -> list[int | None]:
    """``train_patch_size`` as one entry per fine stage: an int patches the last stage only."""
    if train_patch_size is None or isinstance(train_patch_size, int):
        return [None] * (stages - 1) + [train_patch_size]
    sizes = [None if p is None else int(p) for p in train_patch_size]
    if len(sizes) != stages:
        raise ValueError(f"MultiResCascade (conf/model/multires.yaml): train_patch_size {list(train_patch_size)} "
                         f"needs one entry (a side or null) per fine stage, {stages}")
    return sizes


def _check_settings(num_views: int, volume_size: int, view_angles_deg: Sequence[float], stage_sizes: list[int],
                    refiner_levels: int, train_patch_sizes: list[int | None], infer_patch_size: int | None,
                    infer_overlap: float) -> None:
    """Clear errors for settings the cascade cannot build or tile."""
    where = "MultiResCascade (conf/model/multires.yaml)"
    if len(view_angles_deg) != num_views:
        raise ValueError(f"{where}: view_angles_deg has {len(view_angles_deg)} angles {list(view_angles_deg)} but "
                         f"num_views={num_views}")
    if len(stage_sizes) < 2:
        raise ValueError(f"{where}: stage_sizes needs a coarse and at least one fine stage, got {stage_sizes} "
                         f"(for one stage use the coarse model itself)")
    if stage_sizes[-1] != volume_size:
        raise ValueError(f"{where}: the last of stage_sizes {stage_sizes} must equal volume_size={volume_size}")
    for coarse, fine in itertools.pairwise(stage_sizes):
        if coarse < 1 or fine <= coarse or fine % coarse:
            raise ValueError(f"{where}: stage_sizes {stage_sizes} must increase, each dividing the next "
                             f"({coarse} -> {fine})")
    if refiner_levels < 1:
        raise ValueError(f"{where}: refiner_levels must be >= 1, got {refiner_levels}")
    multiple = 2 ** (refiner_levels - 1)
    sizes = [("fine stage size", s) for s in stage_sizes[1:]] + [("train_patch_size", p) for p in train_patch_sizes]
    for name, size in [*sizes, ("infer_patch_size", infer_patch_size)]:
        if size is not None and (size < 1 or size % multiple):
            raise ValueError(f"{where}: {name} {size} must be a positive multiple of 2**(refiner_levels - 1) = "
                             f"{multiple}")
    for k, p in enumerate(train_patch_sizes):
        if p is not None and p > stage_sizes[k + 1]:
            raise ValueError(f"{where}: train_patch_size {p} is larger than its stage's size {stage_sizes[k + 1]} "
                             f"(stage_sizes {stage_sizes})")
    for k, (p, q) in enumerate(itertools.pairwise(train_patch_sizes)):
        if p is not None and q is None:
            raise ValueError(f"{where}: train_patch_size {train_patch_sizes} patches a stage but not the one after it "
                             f"(that stage's context would be a patch); patch every stage after the first patched one")
        scale = stage_sizes[k + 2] // stage_sizes[k + 1]
        if p is not None and p < -(-q // scale) + 2 + multiple:
            raise ValueError(f"{where}: train_patch_size {train_patch_sizes}: a {q}^3 patch at stage size "
                             f"{stage_sizes[k + 2]} reads a {-(-q // scale) + 2}^3 context from the stage before, "
                             f"whose patch ({p}) must hold it with {multiple} voxels to spare for alignment")
    if not 0.0 <= infer_overlap < 1.0:
        raise ValueError(f"{where}: infer_overlap must be in [0, 1), got {infer_overlap}")
