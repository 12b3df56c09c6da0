"""Frequency loss: L1 between 3D Fourier magnitudes, weighted toward high frequencies.

Voxel losses let a network trade fine detail for a smooth average; comparing spectra, with the high
frequencies weighted up, makes missing detail cost directly (focal-frequency-style losses).
"""

from __future__ import annotations

import torch
from torch import Tensor

from x2ct.losses.registry import LossComponent, register_loss_component


def frequency_weights(shape: tuple[int, int, int], alpha: float, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> Tensor:
    """``(D, H, W // 2 + 1)`` weights of the ``rfftn`` half spectrum of a ``(D, H, W)`` volume.

    ``(1 + alpha * |k| / |k|_max) * m / (D * H * W)``: ``k`` the frequency in cycles per voxel, ``|k|_max`` the
    largest on the grid (the corner), ``m`` = 2 for a half-spectrum bin that stands for itself and its conjugate
    (1 for the zero and, for even W, the Nyquist plane). Summing ``weights * f`` over the half spectrum is then the
    mean of ``(1 + alpha |k| / |k|_max) * f`` over the full spectrum, for any ``f`` symmetric under ``k -> -k``.
    """
    d, h, w = shape
    grid = torch.meshgrid(torch.fft.fftfreq(d, dtype=dtype, device=device),
                          torch.fft.fftfreq(h, dtype=dtype, device=device),
                          torch.fft.rfftfreq(w, dtype=dtype, device=device), indexing="ij")
    radius = torch.sqrt(sum(k.square() for k in grid))
    # the largest radius, 0 only for a single voxel; from the shape, not the values (no data-dependent branch)
    emphasis = 1.0 + alpha * radius / radius.max() if (d, h, w) != (1, 1, 1) else torch.ones_like(radius)
    multiplicity = torch.full((w // 2 + 1,), 2.0, dtype=dtype, device=device)
    multiplicity[0] = 1.0
    if w % 2 == 0:
        multiplicity[-1] = 1.0
    return emphasis * multiplicity / (d * h * w)


@register_loss_component("frequency")
class FrequencyLoss(LossComponent):
    """Weighted mean over frequencies of ``| |F pred| - |F target| |`` for ``(B, 1, D, H, W)`` volumes.

    ``F`` is the 3D DFT over (D, H, W) with ``norm="ortho"`` (so a perturbation's spectral energy equals its voxel
    energy, Parseval), computed as ``rfftn`` on the half spectrum; see ``frequency_weights``.

    Args:
        alpha: high-frequency emphasis: the weight grows linearly from 1 at the zero frequency to ``1 + alpha`` at
            the highest. 1.0 makes the finest detail count twice as much as the coarse shape; 0 weighs all
            frequencies equally.

    Magnitudes only: phase (where a structure is) is left to the voxel and SSIM terms. Computed in float32 (half
    precision FFTs are limited to power-of-two sizes).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        if not float(alpha) >= 0:
            raise ValueError(f"frequency loss: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 5 or pred.shape[1] != 1:
            raise ValueError(f"frequency loss: expected pred and target of one shape (B, 1, D, H, W), got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        dtype = torch.promote_types(pred.dtype, torch.float32)
        spectra = torch.fft.rfftn(torch.cat([pred, target]).to(dtype), dim=(-3, -2, -1), norm="ortho").abs()
        pred_spectrum, target_spectrum = spectra.chunk(2)
        weights = frequency_weights(tuple(pred.shape[2:]), self.alpha, dtype=dtype, device=pred.device)
        return ((pred_spectrum - target_spectrum).abs() * weights).sum(dim=(-3, -2, -1)).mean()
