"""Spatially correlated HU texture: a sum of random plane waves in world mm, averaged over each voxel.

A field of K waves with random directions, phases and wavelengths around a central one has unit variance as a
continuous function; each wave is damped by the voxel's box filter (a sinc per axis), so the texture a coarse
grid shows is the average of the fine one, as partial volume does for edges. Separable per axis, the field
costs one (D*H, K) @ (K, W) complex product.
"""

from __future__ import annotations

import numpy as np

_WAVELENGTH_SPREAD = (0.6, 1.6)  # around the drawn central wavelength


def plane_wave_field(rng: np.random.Generator, axes: tuple[np.ndarray, np.ndarray, np.ndarray],
                     spacing: tuple[float, float, float], wavelength_mm: float, waves: int) -> np.ndarray:
    """Unit-variance (before voxel averaging) random field on the grid with world axes (z (D,), y (H,), x (W,)).

    Returns float32 (D, H, W); zeros when ``waves`` is 0.
    """
    z, y, x = (np.asarray(a, dtype=np.float64) for a in axes)
    if waves == 0:
        return np.zeros((z.size, y.size, x.size), dtype=np.float32)
    direction = rng.normal(size=(waves, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = 2.0 * np.pi / (wavelength_mm * rng.uniform(*_WAVELENGTH_SPREAD, waves))
    kvec = direction * k[:, None]  # (K, 3) as (z, y, x)
    phase = rng.uniform(0.0, 2.0 * np.pi, waves)
    damp = np.prod(np.sinc(kvec * np.asarray(spacing) / (2.0 * np.pi)), axis=1)  # np.sinc(t) = sin(pi t)/(pi t)
    weight = np.sqrt(2.0 / waves) * damp * np.exp(1j * phase)
    ez = np.exp(1j * np.outer(z, kvec[:, 0])) * weight  # (D, K)
    ey = np.exp(1j * np.outer(y, kvec[:, 1]))  # (H, K)
    ex = np.exp(1j * np.outer(x, kvec[:, 2]))  # (W, K)
    zy = (ez[:, None, :] * ey[None, :, :]).reshape(-1, waves).astype(np.complex64)
    field = (zy @ ex.T.astype(np.complex64)).real
    return field.reshape(z.size, y.size, x.size).astype(np.float32)
