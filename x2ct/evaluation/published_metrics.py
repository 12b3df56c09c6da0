"""Metrics as published papers compute them, reproduced so that our numbers can sit beside a paper's table.

X2CT-GAN (Ying et al., CVPR 2019; the authors' test script and ``metrics_np.py``). Their test loop takes the
predicted and true CT in [0, 1], clips the prediction to [0, 1], and computes:

- ``ssim_slice_d``, ``ssim_slice_h``, ``ssim_slice_w``: scikit-image ``structural_similarity`` with its defaults
  (7x7 uniform window, sample covariance ``NP / (NP - 1)`` with ``NP = 49``, ``K1 = 0.01``, ``K2 = 0.03``) and
  ``data_range = 1`` on every 2D slice of the **[0, 1] float volumes** along one axis (a slice along D is an
  (H, W) image, and so on), averaged over the slices of that axis. ``ssim_slice`` is the mean of the three.
  Their script computes SSIM *before* the integer conversion below, so the data range is 1, not 4095.
- then maps both volumes to ``[0, 2500]`` (``CT_MIN_MAX``) and casts to int32, truncating toward zero (the
  scaling happens in the input's float dtype, as theirs did in float32), and with ``PIXEL_MAX = 4095``:
- ``psnr_3d = 20 log10(4095 / sqrt(MSE))``, MSE over the whole integer volume;
- ``psnr_slice_d``, ``psnr_slice_h``, ``psnr_slice_w``: the same PSNR for every 2D slice along one axis, averaged
  over the slices; ``psnr_slice`` is the mean of the three. A slice (or volume) with zero MSE counts as 100 dB.
- ``mae``: mean absolute difference of the integer volumes, on the [0, 2500] scale (their ``MAE``).

How these compare with this project's metrics (``x2ct.ops.metrics``, data range 1 on [0, 1]):

- The peak 4095 exceeds the 2500 range the data can span, so ``psnr_3d`` is our ``psnr`` plus
  ``20 log10(4095 / 2500) = 4.29 dB`` (up to the integer truncation, whose error is ~0.4 units of 2500). A paper
  PSNR computed this way is therefore ~4.3 dB higher than the true PSNR of the same reconstruction.
- The slice average is a mean of logarithms: by Jensen's inequality it is at least the 3D PSNR of the same axis
  when no slice matches exactly, and every exact slice (e.g. all-air border slices after clipping) adds 100 dB.
- Slice SSIM is a 2D metric: each 7x7 flat window lies within one slice and sees no through-plane neighbours, and
  every slice counts (only 3 pixels are cropped in-plane). ``ssim3d`` uses one 3D Gaussian window (sigma 1.5,
  11 voxels wide), population statistics, and leaves out a 5-voxel shell on every face. The two are different
  numbers for the same pair and neither bounds the other: report which one a table holds.

Errors and SSIM statistics are computed in float64 in torch; ``slice_ssim`` matches scikit-image slice by slice
to ~1e-12.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from x2ct.ops.metrics import SSIM_K1, SSIM_K2

X2CT_GAN_RANGE = 2500  # CT_MIN_MAX = [0, 2500]: [0, 1] volumes are scaled to this integer range
X2CT_GAN_PEAK = 4095.0  # PIXEL_MAX in their PSNR (a 12-bit peak, larger than the range the data spans)
X2CT_GAN_ZERO_MSE_PSNR = 100.0  # dB given to a slice or volume that matches exactly
X2CT_GAN_SSIM_WINDOW = 7  # scikit-image's default win_size
X2CT_GAN_SSIM_DATA_RANGE = 1.0  # SSIM is taken on the [0, 1] floats, before the integer scaling
AXIS_NAMES = ("d", "h", "w")


def x2ct_gan_metrics(pred01: Tensor, target01: Tensor) -> dict[str, float]:
    """X2CT-GAN's test metrics for one predicted and one true volume ``(D, H, W)`` in [0, 1].

    Both are clipped to [0, 1] first. Returns ``psnr_3d``, ``psnr_slice``, ``ssim_slice``, the per-axis
    ``psnr_slice_{d,h,w}`` and ``ssim_slice_{d,h,w}``, and ``mae`` (on the [0, 2500] scale); see the module
    docstring for what each one is and how it relates to ``psnr`` / ``ssim3d``.
    """
    _check_pair(pred01, target01)
    pred01, target01 = pred01.clamp(0.0, 1.0), target01.clamp(0.0, 1.0)
    out: dict[str, float] = {}
    for axis, name in enumerate(AXIS_NAMES):
        out[f"ssim_slice_{name}"] = slice_ssim(pred01, target01, axis, X2CT_GAN_SSIM_DATA_RANGE).mean().item()
    pred_int, target_int = _to_integer_scale(pred01), _to_integer_scale(target01)
    squared_error = (pred_int.double() - target_int.double()).square()
    out["psnr_3d"] = _psnr_or_cap(squared_error.mean()).item()
    for axis, name in enumerate(AXIS_NAMES):
        in_plane = tuple(a for a in range(3) if a != axis)
        out[f"psnr_slice_{name}"] = _psnr_or_cap(squared_error.mean(dim=in_plane)).mean().item()
    out["psnr_slice"] = sum(out[f"psnr_slice_{n}"] for n in AXIS_NAMES) / len(AXIS_NAMES)
    out["ssim_slice"] = sum(out[f"ssim_slice_{n}"] for n in AXIS_NAMES) / len(AXIS_NAMES)
    out["mae"] = (pred_int.double() - target_int.double()).abs().mean().item()
    order = ["psnr_3d", "psnr_slice", "ssim_slice", *(f"psnr_slice_{n}" for n in AXIS_NAMES),
             *(f"ssim_slice_{n}" for n in AXIS_NAMES), "mae"]
    return {key: out[key] for key in order}


def slice_ssim(pred: Tensor, target: Tensor, axis: int, data_range: float,
               win_size: int = X2CT_GAN_SSIM_WINDOW) -> Tensor:
    """Mean 2D SSIM of every slice along ``axis`` of two ``(D, H, W)`` volumes: ``(n_slices,)`` float64.

    Each value equals ``skimage.metrics.structural_similarity(t, p, data_range=data_range, win_size=win_size)``
    on that slice: a ``win_size`` square uniform window, sample covariance, mean over the slice less
    ``(win_size - 1) // 2`` pixels per edge. scikit-image filters with reflected borders before that crop, but no
    window centred in the kept region reaches the border, so an unpadded ("valid") filter gives the same values.
    """
    _check_pair(pred, target, min_size=win_size)
    if axis not in (0, 1, 2):
        raise ValueError(f"slice_ssim: axis must be 0, 1 or 2 (D, H, W), got {axis}")
    if win_size < 2:
        raise ValueError(f"slice_ssim: win_size must be at least 2 (sample covariance), got {win_size}")
    x = pred.double().movedim(axis, 0)[:, None]  # (N, 1, a, b): slices as a batch of images
    y = target.double().movedim(axis, 0)[:, None]
    box = torch.full((win_size,), 1.0 / win_size, dtype=torch.float64, device=x.device)
    moments = torch.cat([x, y, x * x, y * y, x * y])
    moments = F.conv2d(F.conv2d(moments, box.view(1, 1, -1, 1)), box.view(1, 1, 1, -1))
    mu_x, mu_y, xx, yy, xy = moments.chunk(5)
    n_window = win_size**2
    sample = n_window / (n_window - 1)
    var_x, var_y, cov = sample * (xx - mu_x**2), sample * (yy - mu_y**2), sample * (xy - mu_x * mu_y)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def _to_integer_scale(volume01: Tensor) -> Tensor:
    """[0, 1] -> int32 in [0, X2CT_GAN_RANGE], truncating toward zero as numpy's ``astype(np.int32)``."""
    return (volume01 * X2CT_GAN_RANGE).to(torch.int32)


def _psnr_or_cap(mse: Tensor) -> Tensor:
    """``20 log10(peak / sqrt(mse))`` elementwise, with ``X2CT_GAN_ZERO_MSE_PSNR`` where ``mse == 0``."""
    psnr = 20.0 * torch.log10(X2CT_GAN_PEAK / mse.sqrt())
    return torch.where(mse == 0, torch.full_like(psnr, X2CT_GAN_ZERO_MSE_PSNR), psnr)


def _check_pair(pred: Tensor, target: Tensor, min_size: int = X2CT_GAN_SSIM_WINDOW) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"X2CT-GAN metrics: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in "
                         f"shape")
    if pred.ndim != 3:
        raise ValueError(f"X2CT-GAN metrics: expected one volume (D, H, W), got shape {tuple(pred.shape)}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(f"X2CT-GAN metrics: expected float volumes in [0, 1], got {pred.dtype} and {target.dtype}")
    if min(pred.shape) < min_size:
        raise ValueError(f"X2CT-GAN metrics: volume {tuple(pred.shape)} is smaller than the {min_size}-pixel SSIM "
                         f"window along some axis")


__all__ = ["X2CT_GAN_PEAK", "X2CT_GAN_RANGE", "slice_ssim", "x2ct_gan_metrics"]
