"""Hounsfield units <-> linear attenuation coefficients.

HU is defined by ``HU = 1000 * (mu - mu_water) / mu_water``, so ``mu = mu_water * (1 + HU / 1000)``. Air
(-1000 HU) maps to 0; values below are clipped to 0 since attenuation cannot be negative. ``mu_water`` depends
on the beam energy: 0.0193 /mm (0.193 /cm) is water at about 70 keV, a typical effective energy of a diagnostic
chest beam; it is a config value everywhere it is used.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def hu_to_mu(hu: ArrayT, mu_water: float) -> ArrayT:
    """Linear attenuation in 1/mm from HU (any shape), clipped at 0."""
    if mu_water <= 0:
        raise ValueError(f"mu_water must be positive (1/mm), got {mu_water}")
    mu = mu_water * (1.0 + hu / 1000.0)
    return mu.clamp(min=0.0) if isinstance(mu, torch.Tensor) else np.clip(mu, 0.0, None)


def mu_to_hu(mu: ArrayT, mu_water: float) -> ArrayT:
    """Inverse of ``hu_to_mu`` for mu >= 0."""
    if mu_water <= 0:
        raise ValueError(f"mu_water must be positive (1/mm), got {mu_water}")
    return 1000.0 * (mu - mu_water) / mu_water
