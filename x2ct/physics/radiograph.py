"""From line integrals to the radiograph a model sees: Beer-Lambert intensity, noise, normalisation.

A detector behind the patient counts ``I = I0 * exp(-p)`` photons where ``p`` is the line integral of mu. The
log image ``p = -log(I / I0)`` is what most reconstruction work feeds a network; the published protocols then
divide by a maximum (per image or over the data set).
"""

from __future__ import annotations

from typing import Literal

import torch

Normalisation = Literal["none", "per_image_max", "global_max", "fixed"]


def to_intensity(line_integrals: torch.Tensor, photons_per_pixel: float = 1.0) -> torch.Tensor:
    """Beer-Lambert: expected detector counts ``I0 * exp(-p)`` (``I0 = 1`` gives transmission in (0, 1])."""
    return photons_per_pixel * torch.exp(-line_integrals)


def add_poisson_noise(line_integrals: torch.Tensor, photons_per_pixel: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantum noise for augmentation: draw Poisson counts around ``I0 exp(-p)`` and take the log again.

    Fewer photons means more noise; a pixel that receives no photon is clamped to one count so the log stays
    finite. Not differentiable (sampling), and meant for data, not for losses.
    """
    if photons_per_pixel <= 0:
        raise ValueError(f"photons_per_pixel must be positive, got {photons_per_pixel}")
    expected = to_intensity(line_integrals.detach().double(), photons_per_pixel)
    counts = torch.poisson(expected, generator=generator).clamp(min=1.0)
    return (-torch.log(counts / photons_per_pixel)).to(line_integrals.dtype)


def normalise_views(line_integrals: torch.Tensor, mode: Normalisation, scale: float | None = None) -> torch.Tensor:
    """Scale line integrals ``(..., rows, cols)`` to the range a network sees.

    ``per_image_max`` divides each image by its own maximum (X2CT-GAN); ``global_max`` and ``fixed`` divide by
    ``scale`` (a data set's maximum line integral, or a chosen constant); ``none`` returns the line integrals.
    """
    if mode == "none":
        return line_integrals
    if mode == "per_image_max":
        peak = line_integrals.amax(dim=(-2, -1), keepdim=True)
        return line_integrals / peak.clamp(min=torch.finfo(line_integrals.dtype).tiny)
    if mode in ("global_max", "fixed"):
        if scale is None or not scale > 0:
            raise ValueError(f"normalisation {mode!r} needs a positive scale, got {scale}")
        return line_integrals / scale
    raise ValueError(f"unknown view normalisation {mode!r}; expected none, per_image_max, global_max or fixed")
