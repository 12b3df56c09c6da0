"""Metrics on CT volumes in [0, 1]: pure functions of tensors, batched, on any device.

One definition for training's validation (``x2ct.engine.validation``), the SSIM loss (``x2ct.losses.ssim``) and
the evaluator (``x2ct.evaluation.evaluator``).

Inputs are ``(B, 1, D, H, W)`` or a single ``(D, H, W)`` volume (a batch of one); each metric returns ``(B,)``
values in float64, one per volume.

Definitions (``R`` = ``data_range``, the width of the value range):

- ``psnr = 10 * log10(R^2 / mean((pred - target)^2))`` per volume, in dB; ``inf`` when the volumes are equal.
  Matches ``skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=R)``.
- ``ssim3d``: the mean over the valid region of the local SSIM map (Wang et al. 2004)
  ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with ``C1 = (K1 R)^2``,
  ``C2 = (K2 R)^2``, ``K1 = 0.01``, ``K2 = 0.03``. Local means, variances and the covariance are weighted by a
  separable 3D Gaussian window of standard deviation ``sigma`` truncated at radius ``r = int(3.5 sigma + 0.5)``
  (weights normalised to sum 1; an 11-tap window for sigma 1.5), with population (not sample) statistics:
  ``s_x^2 = G*(x^2) - (G*x)^2``. The valid region is where the whole window fits inside the volume, i.e. the
  volume less ``r`` voxels on every face. Matches ``skimage.metrics.structural_similarity(target, pred,
  gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=R)``, which filters the whole
  volume with reflected borders and then crops the same ``r``-voxel border away.

- ``mae = mean(|pred - target|)`` per volume, in the units of the inputs (pass HU tensors for MAE in HU).

All are computed in float64 (``dtype``) so that they agree with the NumPy references to ~1e-6.

Region masks: every metric takes an optional boolean ``mask`` (keyword-only in ``psnr`` and ``ssim3d``), either
the shape of ``pred`` or one ``(D, H, W)`` mask shared by the whole batch. The metric is then averaged over the
voxels in the mask only: ``psnr`` and ``mae`` use the squared / absolute errors of those voxels; ``ssim3d``
averages its SSIM map over the mask voxels inside the valid region (the mask is cropped by the same ``r``
voxels per face as the map, so a mask that lies wholly within ``r`` voxels of a face counts as empty). A volume
whose (cropped) mask is empty gets NaN rather than an exception, so that one patient without, say, a lung region
does not stop an evaluation: summaries skip and count NaNs (``x2ct.evaluation.summary``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_TRUNCATE = 3.5  # window radius in sigmas, as scikit-image's gaussian_weights=True


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0, dtype: torch.dtype = torch.float64, *,
         mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB, ``(B,)``, over the ``mask`` voxels if given; see the module docstring."""
    pred, target = _as_batch(pred, target, "psnr")
    mask = _as_mask(mask, pred.shape, "psnr")
    mse = _masked_mean((pred.to(dtype) - target.to(dtype)).square(), mask)
    return 10.0 * torch.log10(data_range**2 / mse)


def mae(pred: Tensor, target: Tensor, mask: Tensor | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Mean absolute error ``(B,)`` in the units of the inputs, over the ``mask`` voxels if given."""
    pred, target = _as_batch(pred, target, "mae")
    mask = _as_mask(mask, pred.shape, "mae")
    return _masked_mean((pred.to(dtype) - target.to(dtype)).abs(), mask)


def ssim3d(pred: Tensor, target: Tensor, data_range: float = 1.0, sigma: float = 1.5,
           dtype: torch.dtype = torch.float64, *, mask: Tensor | None = None) -> Tensor:
    """Mean 3D structural similarity with a Gaussian window, ``(B,)``; see the module docstring.

    With ``mask``, the mean of the SSIM map over the mask voxels inside the valid region.
    """
    pred, target = _as_batch(pred, target, "ssim3d")
    mask = _as_mask(mask, pred.shape, "ssim3d")
    if sigma <= 0:
        raise ValueError(f"ssim3d: sigma must be positive, got {sigma}")
    window = gaussian_window(sigma, dtype=dtype, device=pred.device)
    if min(pred.shape[2:]) < window.numel():
        raise ValueError(f"ssim3d: volumes of shape {tuple(pred.shape[2:])} are smaller than the "
                         f"{window.numel()}-voxel window (sigma={sigma}) along some axis")
    x, y = pred.to(dtype), target.to(dtype)
    # one filtering pass for all five local moments: (5B, 1, D, H, W)
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y]), window).chunk(5)
    mu_x, mu_y, xx, yy, xy = moments
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    if mask is not None:
        r, (d, h, w) = window.numel() // 2, mask.shape[2:]
        mask = mask[..., r:d - r, r:h - r, r:w - r]  # the map covers the valid region only
    return _masked_mean(ssim_map, mask)


def stage_metric_names(sizes: list[int]) -> list[str]:
    """The keys ``stage_metrics`` gives for earlier stages of these grid sides, known before any volume is seen (so
    every rank all-reduces the same values): ``psnr_stage<k>``, and ``ssim_stage<k>`` where the SSIM window fits."""
    window = gaussian_window(1.5).numel()
    names = []
    for k, n in enumerate(sizes, start=1):
        names += [f"psnr_stage{k}"] + ([f"ssim_stage{k}"] if n >= window else [])
    return names


def stage_metrics(stages: list[Tensor], target: Tensor) -> dict[str, Tensor]:
    """Per-patient scores ``(B,)`` of a cascade's earlier stages: stage ``k`` (from 1) ``(B, 1, n_k, n_k, n_k)``
    against ``target`` (B, 1, N, N, N) area-averaged to its size, named as ``stage_metric_names`` says."""
    out = {}
    names = stage_metric_names([stage.shape[-1] for stage in stages])
    for k, stage in enumerate(stages, start=1):
        coarse = F.interpolate(target.to(stage.dtype), size=stage.shape[-3:], mode="area")
        out[f"psnr_stage{k}"] = psnr(stage, coarse)
        if f"ssim_stage{k}" in names:
            out[f"ssim_stage{k}"] = ssim3d(stage, coarse)
    return out


def gaussian_window(sigma: float, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
                    ) -> Tensor:
    """1D Gaussian weights ``(2r + 1,)`` summing to 1, radius ``r = int(3.5 * sigma + 0.5)`` (as scipy.ndimage)."""
    radius = int(SSIM_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _filter_valid(volumes: Tensor, window: Tensor) -> Tensor:
    """``(N, 1, D, H, W) -> (N, 1, D - 2r, H - 2r, W - 2r)``: separable correlation with ``window``, no padding."""
    n = window.numel()
    for shape in ((n, 1, 1), (1, n, 1), (1, 1, n)):
        volumes = F.conv3d(volumes, window.view(1, 1, *shape))
    return volumes


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, 1, D, H, W) -> (B,)``: mean over all voxels, or over the ``mask`` voxels (NaN where none)."""
    if mask is None:
        return values.flatten(1).mean(dim=1)
    mask = mask.to(values.device)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return total.flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).to(values.dtype)  # 0 / 0 = NaN when empty


def _as_mask(mask: Tensor | None, shape: torch.Size, metric: str) -> Tensor | None:
    """Check a boolean region mask and return it as ``(B, 1, D, H, W)`` for volumes of ``shape``."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise TypeError(f"{metric}: mask must be a boolean tensor, got dtype {mask.dtype}")
    if mask.ndim == 3 and mask.shape == shape[2:]:
        return mask[None, None].expand(shape)
    if mask.ndim == 5 and mask.shape == shape:
        return mask
    raise ValueError(f"{metric}: mask of shape {tuple(mask.shape)} fits neither the volumes {tuple(shape)} nor "
                     f"one (D, H, W) = {tuple(shape[2:])} volume")


def _as_batch(pred: Tensor, target: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """Check shapes and return both as ``(B, 1, D, H, W)``."""
    if pred.shape != target.shape:
        raise ValueError(f"{metric}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.ndim == 3:
        return pred[None, None], target[None, None]
    if pred.ndim != 5 or pred.shape[1] != 1:
        raise ValueError(f"{metric}: expected volumes (B, 1, D, H, W) or (D, H, W), got {tuple(pred.shape)}")
    return pred, target


__all__ = ["gaussian_window", "mae", "psnr", "ssim3d"]
