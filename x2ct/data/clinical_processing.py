"""A fixed, deterministic clinical-style processing chain for scoring: ``evaluate.py --view-processing clinical``.

It stands for "a real radiograph as a console delivers it, mapped back to line integrals" (linearly onto its own
window, `x2ct.data.realism.display_frame`), so that a model can be scored on views that are not clean DRRs. It is
deliberately not the training augmentation of `x2ct.data.realism`: the physics (scatter, heel, blur, noise) uses
the same models at single typical values, but the display processing is of other families than the augmentation's:

- **multi-scale contrast enhancement** (MUSICA-like, Vuylsteke & Schoeters, Proc. SPIE 2167, 1994): the log image
  is split into band-pass details at four scales plus a low-pass residue, and each detail ``d`` is amplified by a
  power law ``|d| ** power`` (power < 1), so faint details gain more than strong ones. The augmentation's unsharp
  masking is linear (its gain does not depend on a detail's amplitude) and works at one scale;
- an **S-shaped (film-emulating) tone curve** (a logistic), the default look of CR/DX chest consoles (Prokop,
  Neitzel & Schaefer-Prokop, J Thorac Imaging 18:148-164, 2003). The augmentation's gamma curves are convex or
  concave over the whole window; the S-curve has an inflection.

Every value below was chosen before any model was scored with it and is not to be tuned on results (a change
makes another chain: give it another name). Noise is drawn from a generator seeded by the view's own bytes, so the
same DRR always gets the same noise, in any order, on any rank. No pose error is applied: this chain is
processing, the geometry stays the DRR's.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from x2ct.data.realism import (
    Blur,
    Collimation,
    Domain,
    Effect,
    Heel,
    Marker,
    Noise,
    Scatter,
    apply_effects,
    display_frame,
    gaussian_blur,
)

Tensor = torch.Tensor


def multiscale_contrast(x: Tensor, sigmas_px: Sequence[Sequence[float]], power: float,
                        linear_below: float) -> Tensor:
    """Multi-scale contrast enhancement of ``x`` ``(rows, cols)`` (a log image scaled to its window, [0, 1]).

    Details ``d_k = G_{k-1} x - G_k x`` (``G_0 x = x``, ``G_k`` a Gaussian of ``sigmas_px[k-1]`` (rows, cols)
    pixels) and the residue ``G_K x`` add up to ``x``; each detail becomes ``sign(d) |d| ** power`` (1 is a
    detail as large as the whole window), below ``linear_below`` a straight line through 0 that meets the curve
    there (the power law's slope grows without bound at 0 and would amplify noise without limit).
    ``power=1`` returns ``x``.
    """
    levels = [x] + [gaussian_blur(x, sigma) for sigma in sigmas_px]
    out = levels[-1].clone()
    slope = linear_below ** (power - 1)
    for fine, coarse in itertools.pairwise(levels):
        d = fine - coarse
        out = out + torch.where(d.abs() < linear_below, slope * d, d.sign() * d.abs() ** power)
    return out


def s_curve(x: Tensor, slope: float) -> Tensor:
    """Logistic tone curve of ``x`` clipped to [0, 1], centred on 0.5 and rescaled so that 0 -> 0 and 1 -> 1;
    ``slope`` is the logistic's steepness (the curve's slope at 0.5 is ``slope / 4`` over its rescaled range)."""
    def logistic(v):
        return torch.sigmoid(slope * (v - 0.5))

    ends = logistic(torch.tensor([0.0, 1.0], dtype=x.dtype))
    return (logistic(x.clamp(0.0, 1.0)) - ends[0]) / (ends[1] - ends[0])


@dataclass(frozen=True)
class MultiscaleDisplay:
    """The chain's display processing in `display_frame`: `multiscale_contrast`, the result windowed again
    between the same quantiles, then `s_curve`."""

    window: tuple[float, float]
    sigmas_mm: tuple[float, ...]
    power: float
    linear_below: float
    lut_slope: float
    domain: ClassVar[Domain] = "line_integral"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        sigmas_px = [[sigma / s for s in spacing_mm] for sigma in self.sigmas_mm]

        def process(x: Tensor) -> Tensor:
            enhanced = multiscale_contrast(x, sigmas_px, self.power, self.linear_below)
            # the tone curve takes the enhanced image's own values of interest, as a console windows its output
            q = torch.tensor(self.window, dtype=x.dtype)
            lo, hi = torch.quantile(enhanced.flatten(), q)
            return s_curve((enhanced - lo) / (hi - lo), self.lut_slope) if hi > lo else enhanced

        return display_frame(image, self.window, process)


@dataclass(frozen=True)
class ClinicalProcessing:
    """A fixed chain (`x2ct.data.realism.ViewEffects`): scatter, heel, blur, noise, display, shutters, marker, in
    that order; deterministic. ``CLINICAL_CHAIN`` is the one evaluate.py uses."""

    scatter: Scatter
    heel: Heel
    blur: Blur
    noise: Noise
    display: MultiscaleDisplay
    collimation: Collimation
    marker: Marker

    @property
    def effects(self) -> list[Effect]:
        """The chain in the order the effects happen."""
        return [self.scatter, self.heel, self.blur, self.noise, self.display, self.collimation, self.marker]

    def __call__(self, line_integrals: Tensor, pixel_spacing_mm: Sequence[float],
                 generator: torch.Generator | None = None) -> Tensor:
        """``(V, rows, cols)`` line integrals -> the same, processed; ``generator`` is not used (deterministic)."""
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        return torch.stack([apply_effects(view, self.effects, spacing, self.noise_generator(view))
                            for view in line_integrals])

    @staticmethod
    def noise_generator(view: Tensor) -> torch.Generator:
        """A generator seeded by the view's bytes: the same image always gets the same noise."""
        return torch.Generator().manual_seed(zlib.crc32(view.detach().cpu().contiguous().numpy().tobytes()))

    def to_dict(self) -> dict[str, Any]:
        """Every value of the chain, as plain JSON types (recorded in evaluate.py's summary)."""
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self)}


# Why each value (typical, not extreme; chosen before any model was scored with it, none fitted to a result):
# - scatter: SPR 0.5 over the body, 60 mm kernel: a gridded chest PA lies between the lungs' low and the
#   mediastinum's high ratios (Niklason, Sorenson & Nelson, Med Phys 8:677-681, 1981, measured ratios several-fold
#   lower with a grid than without); scatter kernels spread over several centimetres (Boone & Seibert, Med Phys
#   15:721-725, 1988);
# - heel: 1.10 between the image's bottom and top edges, cathode toward the feet (where the chest is thicker), as
#   chest rooms are usually set up; a 43 cm field at 180 cm sees a smaller ratio than at 100 cm;
# - blur: sigma 4 mm: at the benchmark's 8 mm pixels, what the resampling of a full-resolution radiograph (its
#   anti-aliasing) leaves; a detector's own PSF (below 0.2 mm) would not show;
# - noise: 3e4 noise-equivalent quanta per mm^2 (about 1 uGy at the detector with the RQA5 beam's ~3e4 photons per
#   mm^2 per uGy of IEC 62220-1, times a DQE below 1) and electronic noise 2e-4 of the open-field signal;
# - display: window 1st-99th percentile; scales 8, 16, 32, 64 mm (fine detail up to the size of the heart), power
#   0.7 (a strong, visible equalisation), linear below 0.005 of the window; logistic slope 5 (mid-tone slope 1.5
#   over the window: a film-like look that clips little of the anatomy);
# - shutters: 5% of each side, white; an "R" marker 20 mm tall in the top-right corner of the open field.
CLINICAL_CHAIN = ClinicalProcessing(
    scatter=Scatter(spr=0.5, sigma_mm=60.0),
    heel=Heel(ratio=1.10, direction="down"),
    blur=Blur(sigma_mm=4.0),
    noise=Noise(photons_per_mm2=3.0e4, electronic_quanta_per_mm2=200.0),
    display=MultiscaleDisplay(window=(0.01, 0.99), sigmas_mm=(8.0, 16.0, 32.0, 64.0), power=0.7, linear_below=0.005,
                              lut_slope=5.0),
    collimation=Collimation(margins=(0.05, 0.05, 0.05, 0.05), fill="max"),
    marker=Marker(text="R", height_mm=20.0, position=(0.08, 0.92)),
)
