"""3D patches for the fine stages of the multi-resolution cascade: sampling, cropping, and blended tiled inference.

A 256^3 refiner does not fit on one GPU for training, so fine stages train on random patches (with the matching
coarse context and the patch's position in the volume) and infer on the whole volume tile by tile.
Models (the cascade, the lifts' patch coordinates) and losses (the target cropped where the model's patch
lies) share these functions, so both sides of the crop contract use one definition.

Coordinate convention (one for every function here, the one of ``F.interpolate(..., align_corners=False)`` and
``F.grid_sample(..., align_corners=False)``): voxel ``i`` of an axis of size ``N`` is the cell ``[i, i + 1)`` with its
centre at ``i + 0.5``. A volume at ``scale`` times the resolution of a coarser one covers the same extent, so fine
voxel ``i`` sits at coarse coordinate ``(i + 0.5) / scale - 0.5`` (in coarse voxel indices), and at normalised
coordinate ``2 * (i + 0.5) / N - 1`` in ``(-1, 1)``. Origins are the index of a patch's first voxel, ``(D, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Shape3 = tuple[int, int, int]
Region = tuple[slice, slice, slice]

NNUNET_SIGMA_SCALE = 1.0 / 8.0  # Gaussian blend sigma as a fraction of the patch size, per axis (nnU-Net's choice)
_FLOAT_TOLERANCE = 1e-6  # so that 10 * (1 - 0.3) = 6.9999... gives a stride of 7, and 5 * 2.4 = 12.000...1 fits 12


def _check_fits(volume_shape: Sequence[int], patch_size: Sequence[int], where: str) -> None:
    if len(volume_shape) != 3 or len(patch_size) != 3:
        raise ValueError(f"{where}: volume_shape and patch_size must have 3 entries (D, H, W), "
                         f"got {tuple(volume_shape)} and {tuple(patch_size)}")
    if any(p < 1 or p > s for p, s in zip(patch_size, volume_shape, strict=True)):
        raise ValueError(f"{where}: patch_size {tuple(patch_size)} must be >= 1 and fit in volume_shape "
                         f"{tuple(volume_shape)} on every axis")


def _batch_origins(origins: Tensor, batch: int, where: str) -> Tensor:
    """``(3,)`` (one origin for every sample) or ``(B, 3)`` -> ``(B, 3)`` long."""
    if origins.dim() == 1:
        origins = origins.expand(batch, -1)
    if origins.shape != (batch, 3):
        raise ValueError(f"{where}: origins must be (3,) or (B={batch}, 3), got {tuple(origins.shape)}")
    return origins.long()


def _out_of_range(origins: Tensor, high: Sequence[int]) -> bool:
    """Whether any ``(B, 3)`` origin lies outside ``[0, high]`` per axis. Not checked while ``torch.compile``
    traces (reading the values would break the graph; the cascade's origins come from ``sample_patch_origins``)."""
    if torch.compiler.is_compiling():
        return False
    return bool((origins < 0).any() or (origins > origins.new_tensor(high)).any())


def sample_patch_origins(volume_shape: Shape3, patch_size: Shape3, count: int,
                         generator: torch.Generator | None = None, multiple: int = 1) -> Tensor:
    """``(count, 3)`` long origins, uniform over every origin whose patch lies inside the volume.

    Each axis independently in ``[0, volume - patch]`` inclusive, so every voxel can be drawn; with ``multiple``
    only origins divisible by it (a network that downsamples ``k`` times by 2 sees a patch on the whole volume's
    strided grid only at multiples of ``2 ** k``). Pass a seeded ``generator`` for reproducible patches.
    """
    _check_fits(volume_shape, patch_size, "sample_patch_origins")
    if multiple < 1:
        raise ValueError(f"sample_patch_origins: multiple must be >= 1, got {multiple}")
    axes = [torch.randint(0, (s - p) // multiple + 1, (count,), generator=generator) * multiple
            for s, p in zip(volume_shape, patch_size, strict=True)]
    return torch.stack(axes, dim=1)


def crop_patches(volume: Tensor, origins: Tensor, patch_size: Shape3) -> Tensor:
    """``(B, C, D, H, W)`` -> ``(B, C, d, h, w)``: sample ``b``'s patch starts at ``origins[b]`` (or all at ``(3,)``).

    One gather with broadcast index grids (no loop over samples or voxels); differentiable w.r.t. ``volume``.
    """
    if volume.dim() != 5:
        raise ValueError(f"crop_patches: volume must be (B, C, D, H, W), got {tuple(volume.shape)}")
    _check_fits(volume.shape[2:], patch_size, "crop_patches")
    origins = _batch_origins(origins, volume.shape[0], "crop_patches").to(volume.device)
    high = tuple(s - p for s, p in zip(volume.shape[2:], patch_size, strict=True))
    if _out_of_range(origins, high):
        raise ValueError(f"crop_patches: origins must lie in [0, volume - patch] = [0, {high}] "
                         f"for volume {tuple(volume.shape[2:])} and patch {tuple(patch_size)}, got {origins.tolist()}")
    d, h, w = (torch.arange(p, device=volume.device) for p in patch_size)
    batch = torch.arange(volume.shape[0], device=volume.device)[:, None, None, None]
    index_d = (origins[:, 0, None] + d)[:, :, None, None]
    index_h = (origins[:, 1, None] + h)[:, None, :, None]
    index_w = (origins[:, 2, None] + w)[:, None, None, :]
    patches = volume.permute(0, 2, 3, 4, 1)[batch, index_d, index_h, index_w]  # (B, d, h, w, C)
    return patches.permute(0, 4, 1, 2, 3).contiguous()


def _normalised_centres(origins: Tensor, patch_size: Shape3, extent: Sequence[float]) -> Tensor:
    """``(B, 3)`` origins -> ``(B, 3, d, h, w)``: ``2 * (i + 0.5) / extent - 1`` per axis, channels (D, H, W)."""
    axes = [2.0 * (origins[:, k, None].double() + torch.arange(p, device=origins.device) + 0.5) / extent[k] - 1.0
            for k, p in enumerate(patch_size)]  # each (B, p_k)
    batch, (d, h, w) = origins.shape[0], patch_size
    grids = (axes[0][:, :, None, None].expand(batch, d, h, w), axes[1][:, None, :, None].expand(batch, d, h, w),
             axes[2][:, None, None, :].expand(batch, d, h, w))
    return torch.stack(grids, dim=1)


def patch_coordinates(origins: Tensor, patch_size: Shape3, volume_shape: Shape3) -> Tensor:
    """``(B, 3)`` or ``(3,)`` origins -> ``(B, 3, d, h, w)`` (B = 1 for ``(3,)``): where each patch voxel is.

    Normalised voxel-centre coordinates ``2 * (i + 0.5) / N - 1`` in ``(-1, 1)``, channels in ``(D, H, W)`` order, so
    a refiner trained on patches knows where in the body it is. ``coords.flip(1).permute(0, 2, 3, 4, 1)`` is the
    ``(x, y, z)`` grid that ``F.grid_sample(full_volume, grid, align_corners=False)`` samples the patch with.
    """
    _check_fits(volume_shape, patch_size, "patch_coordinates")
    origins = _batch_origins(origins, 1 if origins.dim() == 1 else origins.shape[0], "patch_coordinates")
    return _normalised_centres(origins, patch_size, [float(s) for s in volume_shape]).float()


def crop_context(coarse: Tensor, origins_fine: Tensor, patch_size_fine: Shape3,
                 scale: float | Sequence[float], coarse_origins: Tensor | None = None,
                 coarse_shape: Sequence[int] | None = None) -> Tensor:
    """``(B, C, d0, h0, w0)`` coarse -> ``(B, C, d, h, w)``: the coarse volume on the fine patch's voxel grid.

    ``scale`` = fine size / coarse size (per axis or one number). Fine voxel ``i`` reads the coarse volume at
    coarse coordinate ``(i + 0.5) / scale - 0.5`` with trilinear interpolation, clamped to the border voxels: exactly
    ``F.interpolate(coarse, scale_factor=scale, mode="trilinear", align_corners=False)`` cropped at the patch,
    without building the upsampled whole volume. The refiner sees its coarse context aligned voxel for voxel.

    ``coarse`` may itself be one patch per sample of a coarse volume of ``coarse_shape``, starting at
    ``coarse_origins`` ``(B, 3)`` (a patch-trained earlier stage): it must hold every coarse voxel the fine patch
    reads (except beyond the coarse volume's own border, where it must touch that border); the result then equals
    the whole coarse volume's.
    """
    if coarse.dim() != 5:
        raise ValueError(f"crop_context: coarse must be (B, C, d0, h0, w0), got {tuple(coarse.shape)}")
    scales = [float(scale)] * 3 if isinstance(scale, int | float) else [float(s) for s in scale]
    if len(scales) != 3 or any(s <= 0 for s in scales):
        raise ValueError(f"crop_context: scale must be a positive number or 3 of them (D, H, W), got {scale}")
    if (coarse_origins is None) != (coarse_shape is None):
        raise ValueError("crop_context: give both coarse_origins and coarse_shape (a coarse patch) or neither")
    whole = tuple(coarse.shape[2:]) if coarse_shape is None else tuple(int(n) for n in coarse_shape)
    fine_extent = [n * s for n, s in zip(whole, scales, strict=True)]
    origins = _batch_origins(origins_fine, coarse.shape[0], "crop_context").to(coarse.device)
    high = tuple(int(e + _FLOAT_TOLERANCE) - p for e, p in zip(fine_extent, patch_size_fine, strict=True))
    if _out_of_range(origins, high):
        raise ValueError(f"crop_context: fine patches {tuple(patch_size_fine)} at {origins.tolist()} must lie inside "
                         f"the fine volume {tuple(fine_extent)} (coarse {whole} x scale {scales})")
    # Coarse coordinate c = (i + 0.5) / s - 0.5 normalises (align_corners=False) to 2 * (i + 0.5) / (s * n0) - 1.
    # Grid and samples in float32 at least (a half-precision volume under autocast would misplace them), rounded once.
    work = torch.promote_types(coarse.dtype, torch.float32)
    grid = _normalised_centres(origins, patch_size_fine, fine_extent)                    # (B, 3, d, h, w) float64
    if coarse_origins is not None:  # whole-volume coordinate u -> the patch's: ((u + 1) * n0 - 2 * o) / p - 1
        start = _batch_origins(coarse_origins, coarse.shape[0], "crop_context").to(coarse.device).double()
        n0 = grid.new_tensor(whole)[None, :, None, None, None]
        size = grid.new_tensor(coarse.shape[2:])[None, :, None, None, None]
        grid = ((grid + 1) * n0 - 2 * start[:, :, None, None, None]) / size - 1
    context = F.grid_sample(coarse.to(work), grid.to(work).flip(1).permute(0, 2, 3, 4, 1), mode="bilinear",
                            padding_mode="border", align_corners=False)
    return context.to(coarse.dtype)


def window_starts(size: int, patch: int, overlap: float, multiple: int = 1) -> list[int]:
    """Patch starts along one axis: every ``floor(patch * (1 - overlap))`` voxels (>= 1), the last at ``size - patch``.

    Snapping the last window to the border covers every voxel without padding the volume. ``multiple``: the stride
    is rounded down to a multiple of it (at least ``multiple``), so that every start is one when ``size`` and
    ``patch`` are (tiles then lie on a strided network's grid, as ``sample_patch_origins(multiple=...)``'s do).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"window_starts: overlap must be in [0, 1), got {overlap}")
    if not 1 <= patch <= size:
        raise ValueError(f"window_starts: patch {patch} must be >= 1 and <= the volume size {size}")
    stride = int(patch * (1.0 - overlap) + _FLOAT_TOLERANCE)
    stride = max(multiple, stride - stride % multiple)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def sliding_window_regions(volume_shape: Shape3, patch_size: Shape3, overlap: float = 0.5,
                           multiple: int = 1) -> list[Region]:
    """Every tile ``(slice_d, slice_h, slice_w)`` of the volume, D outermost: the product of ``window_starts``."""
    _check_fits(volume_shape, patch_size, "sliding_window_regions")
    starts = [window_starts(s, p, overlap, multiple) for s, p in zip(volume_shape, patch_size, strict=True)]
    return [(slice(a, a + patch_size[0]), slice(b, b + patch_size[1]), slice(c, c + patch_size[2]))
            for a in starts[0] for b in starts[1] for c in starts[2]]


def blend_weights(patch_size: Shape3, blend: Literal["gaussian", "constant"] = "gaussian",
                  sigma_scale: float = NNUNET_SIGMA_SCALE) -> Tensor:
    """``(d, h, w)`` float32 weights of one patch's prediction, maximum 1.

    ``"gaussian"``: a separable Gaussian centred on the patch with ``sigma = sigma_scale * patch`` per axis, which
    down-weights the patch borders where a convolutional model sees zero padding instead of context (strictly
    positive, so every covered voxel still gets a weight). ``"constant"``: plain averaging.
    """
    if blend == "constant":
        return torch.ones(patch_size)
    if blend != "gaussian":
        raise ValueError(f"blend_weights: blend must be 'gaussian' or 'constant', got {blend!r}")
    if sigma_scale <= 0:
        raise ValueError(f"blend_weights: sigma_scale must be > 0, got {sigma_scale}")
    axes = []
    for p in patch_size:
        offsets = torch.arange(p, dtype=torch.float64) - (p - 1) / 2.0
        axes.append(torch.exp(-0.5 * (offsets / (sigma_scale * p)) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (weights / weights.max()).float()


def sliding_window_inference(predict: Callable[[Region], Tensor], volume_shape: Shape3, patch_size: Shape3,
                             overlap: float = 0.5, blend: Literal["gaussian", "constant"] = "gaussian",
                             sigma_scale: float = NNUNET_SIGMA_SCALE, multiple: int = 1) -> Tensor:
    """Whole-volume ``(B, C, D, H, W)`` prediction from overlapping patch predictions, blended with weights.

    ``predict(region)`` gets the ``(slice_d, slice_h, slice_w)`` of one tile of the output volume and returns its
    ``(B, C, d, h, w)`` prediction: the caller crops its own inputs (coarse context, coordinates, a halo of extra
    input voxels if it wants exact convolutions at tile borders) and keeps its model. Batch, channels, dtype and
    device come from the first call; the output is at least float32 (weights and blended sums are accumulated in
    float32 even when a model under autocast returns half-precision tiles). Output = sum of weight * prediction /
    sum of weights over the tiles covering a voxel; memory is one output and one weight volume besides a single
    patch. Call it under ``torch.no_grad()`` for inference (otherwise autograd keeps every tile's graph).
    ``multiple``: tile starts divisible by it (``window_starts``).
    """
    weights = blend_weights(patch_size, blend, sigma_scale)
    output: Tensor | None = None
    weight_sum: Tensor | None = None
    for region in sliding_window_regions(volume_shape, patch_size, overlap, multiple):
        prediction = predict(region)
        if output is None:
            if prediction.dim() != 5:
                raise ValueError(f"sliding_window_inference: predict must return (B, C, d, h, w), "
                                 f"got {tuple(prediction.shape)}")
            batch, channels = prediction.shape[:2]
            work = torch.promote_types(prediction.dtype, torch.float32)
            output = prediction.new_zeros((batch, channels, *volume_shape), dtype=work)
            weights = weights.to(device=prediction.device, dtype=work)
            weight_sum = prediction.new_zeros((1, 1, *volume_shape), dtype=work)
        expected = (*output.shape[:2], *patch_size)
        if tuple(prediction.shape) != expected:
            raise ValueError(f"sliding_window_inference: predict returned {tuple(prediction.shape)} for region "
                             f"{region}, expected {expected}")
        output[(..., *region)] += prediction * weights
        weight_sum[(..., *region)] += weights
    return output / weight_sum
