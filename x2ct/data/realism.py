"""Radiograph realism for training: randomised effects that make a DRR look like a processed clinical radiograph.

A DRR is an ideal line-integral image ``p`` ``(V, rows, cols)``. A clinical chest radiograph differs by, in the
order they happen (and the order they are applied here):

1. ``pose``: the patient stands a few degrees / millimetres off the nominal pose (in-plane rotation and shift on
   the detector, bilinear, edges continued);
2. ``scatter``: scattered photons add a smooth image ``S`` to the primary transmission ``P = exp(-p)``;
3. ``heel``: the anode heel effect makes the beam brighter toward the cathode (a gradient across the field);
4. ``blur``: the detector's point-spread function (a Gaussian) blurs the recorded intensity;
5. ``noise``: quantum (Poisson) noise of the detected photons and the detector's electronic (Gaussian) noise;
6. ``display``: the console's processing of the log image: a window (values of interest), unsharp masking and a
   gamma look-up table;
7. ``collimation``: the collimator's shutters: flat outside a rectangle (white or black, as consoles mask them);
8. ``markers``: a lead side marker or text burned into the image (a small bright glyph).

Effects 2-5 act on the intensity ``I / I0``, the others on line integrals; every effect returns the image in the
domain it took, and the chain as a whole takes and returns line integrals ``(V, rows, cols)`` of the input's dtype.
The data set then turns them into the model's view convention as it does for clean DRRs (`normalise_views` or
`to_intensity`), so a model trained with realism takes the same kind of input as one trained without it: a
processed radiograph mapped back to line integrals by the inference pipeline. ``display`` maps its output back
linearly onto the window it chose (the values of interest keep their line-integral range): the tone curve's shape
stays in the view (so the model tolerates an inexact inverse of a console's curve) and so does the frequency
processing, which no global intensity mapping undoes.

Config (``data.realism``, null: off; `RadiographRealism.from_config`): one entry per effect, each with a
``probability`` (default 1) of being applied to a view and its ranges ``[low, high]`` (a single number fixes
the value), drawn uniformly per view (``photons_per_mm2`` log-uniformly), or its choices (a list, drawn uniformly).
The preset ``conf/realism/default.yaml`` documents every value. Every draw comes from the ``torch.Generator``
passed in, so an item's effects repeat exactly for the same seed (see `PatientDRRDataset` for where it comes from).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Domain = Literal["line_integral", "intensity"]
HEEL_DIRECTIONS = ("up", "down", "left", "right")
COLLIMATION_FILLS = ("max", "zero")
# Pixels whose ray crossed the body: a line integral above 0.1 (about 5 mm of water at 0.0193 /mm). The
# scatter-to-primary ratio is defined over them, as scatter measurements behind the patient report it.
BODY_LINE_INTEGRAL = 0.1

# 5 x 7 bitmaps of the letters a lead side marker or a burned-in view label uses
GLYPHS: dict[str, tuple[str, ...]] = {
    "L": ("1....", "1....", "1....", "1....", "1....", "1....", "11111"),
    "R": ("1111.", "1...1", "1...1", "1111.", "1.1..", "1..1.", "1...1"),
    "A": (".111.", "1...1", "1...1", "11111", "1...1", "1...1", "1...1"),
    "P": ("1111.", "1...1", "1...1", "1111.", "1....", "1....", "1...."),
}


class ViewEffects(Protocol):
    """What `PatientDRRDataset` applies to an item's line integrals before normalising them: the training
    realism (`RadiographRealism`) or the fixed scoring chain (`x2ct.data.clinical_processing`)."""

    def __call__(self, line_integrals: Tensor, pixel_spacing_mm: Sequence[float],
                 generator: torch.Generator) -> Tensor:
        """``(V, rows, cols)`` line integrals -> the same shape and dtype; ``pixel_spacing_mm`` (rows, cols)."""
        ...


class Effect(Protocol):
    """One effect with fixed values: applied to one image ``(rows, cols)`` float64 in its ``domain``."""

    domain: ClassVar[Domain]

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor: ...


# ---------------------------------------------------------------------------------------------- image operations


def gaussian_blur(image: Tensor, sigma_px: Sequence[float]) -> Tensor:
    """``(..., rows, cols)`` convolved with a sampled, normalised Gaussian of ``sigma_px`` (rows, cols) pixels.

    Separable, truncated at 4 sigma, edges continued (replicated): a flat image stays flat. A sigma of 0 leaves
    that axis untouched.
    """
    out = image
    for axis, sigma in ((-2, float(sigma_px[0])), (-1, float(sigma_px[1]))):
        if sigma > 0:
            out = _blur_axis(out, sigma, axis)
    return out


def _blur_axis(image: Tensor, sigma: float, axis: int) -> Tensor:
    radius = max(1, math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    moved = image.movedim(axis, -1)
    flat = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (radius, radius), mode="replicate")
    return F.conv1d(flat, kernel.view(1, 1, -1)).reshape(moved.shape).movedim(-1, axis)


def display_frame(p: Tensor, window_quantiles: Sequence[float], process: Callable[[Tensor], Tensor]) -> Tensor:
    """A console's display processing of a log image ``p`` ``(rows, cols)``, mapped back onto its window.

    The window is the values of interest, ``[lo, hi]`` = the ``window_quantiles`` of ``p`` (what a CR/DX system's
    exposure recognition finds); ``x = (p - lo) / (hi - lo)`` goes through ``process`` (frequency processing and
    the tone curve), is clipped to [0, 1] (the display range) and returned as ``lo + (hi - lo) * y``. A flat
    image is returned unchanged.
    """
    q = torch.tensor([float(v) for v in window_quantiles], dtype=p.dtype)
    lo, hi = torch.quantile(p.flatten(), q)
    if not hi > lo:
        return p
    x = (p - lo) / (hi - lo)
    return lo + (hi - lo) * process(x).clamp(0.0, 1.0)


def heel_field(shape: Sequence[int], ratio: float, direction: str) -> Tensor:
    """``(rows, cols)`` float64 relative beam intensity ``ratio ** u``, ``u`` running from -1/2 to 1/2 over the
    pixel centres toward ``direction`` (the cathode side): the last pixel on that side is ``ratio`` times the first
    on the other, and the field's geometric mean is 1 (the exposure stays the same)."""
    rows, cols = (int(n) for n in shape)
    along = rows if direction in ("up", "down") else cols
    u = torch.linspace(-0.5, 0.5, along, dtype=torch.float64) if along > 1 else torch.zeros(1, dtype=torch.float64)
    if direction in ("up", "left"):
        u = -u
    profile = float(ratio) ** u
    return (profile[:, None].expand(rows, cols) if direction in ("up", "down") else
            profile[None, :].expand(rows, cols)).clone()


def marker_coverage(text: str, height_px: float) -> Tensor:
    """``(h, w)`` float64 share of each pixel that the glyphs of ``text`` cover, the text ``height_px`` pixels
    tall (supersampled 8x, so a marker smaller than its bitmap blends in as it would after resampling)."""
    columns = []
    for i, letter in enumerate(text):
        if i:
            columns.append(torch.zeros(7, 1, dtype=torch.float64))
        columns.append(torch.tensor([[float(c == "1") for c in row] for row in GLYPHS[letter]], dtype=torch.float64))
    bitmap = torch.cat(columns, dim=1)
    h = max(1, round(height_px))
    w = max(1, round(height_px * bitmap.shape[1] / 7))
    fine = F.interpolate(bitmap[None, None], size=(8 * h, 8 * w), mode="nearest")
    return F.avg_pool2d(fine, 8)[0, 0]


# ------------------------------------------------------------------------------- effects with fixed values


@dataclass(frozen=True)
class Pose:
    """In-plane rotation (degrees, counter-clockwise as displayed) about the detector centre, then a shift
    ``(rows, cols)`` in mm on the detector (down, right positive)."""

    rotation_deg: float
    shift_mm: tuple[float, float]
    domain: ClassVar[Domain] = "line_integral"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        rows, cols = image.shape
        sr, sc = spacing_mm
        r = (torch.arange(rows, dtype=torch.float64) - (rows - 1) / 2) * sr - self.shift_mm[0]
        c = (torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2) * sc - self.shift_mm[1]
        y_up, x = torch.meshgrid(-r, c, indexing="ij")  # screen axes: x right, y up
        theta = math.radians(self.rotation_deg)
        # each output pixel shows the input point the rotation carried there: rotate back by -theta
        x_in = math.cos(theta) * x + math.sin(theta) * y_up
        y_in = -math.sin(theta) * x + math.cos(theta) * y_up
        grid = torch.stack([x_in / (sc * max(cols - 1, 1) / 2), -y_in / (sr * max(rows - 1, 1) / 2)], dim=-1)
        return F.grid_sample(image[None, None], grid[None].to(image.dtype), mode="bilinear", padding_mode="border",
                             align_corners=True)[0, 0]


@dataclass(frozen=True)
class Scatter:
    """Scatter ``S = k * G(sigma_mm) * (P p)``: the primary ``P`` weighted by its line integral ``p = -log P`` (the
    amplitude of kernel scatter models, zero for rays through air, e.g. Star-Lack et al., SPIE 7258, 2009) and
    low-passed by a Gaussian kernel; ``k`` is set so that the scatter-to-primary ratio summed over the body's
    pixels (line integral above ``BODY_LINE_INTEGRAL``; the whole image if none) equals ``spr``."""

    spr: float
    sigma_mm: float
    domain: ClassVar[Domain] = "intensity"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        return image + self.scatter(image, spacing_mm)

    def scatter(self, primary: Tensor, spacing_mm: tuple[float, float]) -> Tensor:
        """The scatter image ``S`` ``(rows, cols)`` of the primary transmission ``primary``."""
        p = -torch.log(primary.clamp(min=torch.finfo(primary.dtype).tiny))
        low = gaussian_blur(primary * p, [self.sigma_mm / s for s in spacing_mm])
        body = body_mask(primary)
        denominator = low[body].sum()
        if not denominator > 0:
            return torch.zeros_like(primary)
        return low * (self.spr * primary[body].sum() / denominator)


def body_mask(primary: Tensor) -> Tensor:
    """``(rows, cols)`` bool: the pixels whose ray crossed the body (see ``BODY_LINE_INTEGRAL``); all pixels when
    none did."""
    body = primary < math.exp(-BODY_LINE_INTEGRAL)
    return body if body.any() else torch.ones_like(body)


@dataclass(frozen=True)
class Heel:
    """The anode heel effect: intensity times `heel_field` (``ratio`` >= 1 between the cathode-side and the
    anode-side edge, brighter toward ``direction``)."""

    ratio: float
    direction: str
    domain: ClassVar[Domain] = "intensity"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        return image * heel_field(image.shape, self.ratio, self.direction).to(image.dtype)


@dataclass(frozen=True)
class Blur:
    """The detector's point-spread function: a Gaussian of ``sigma_mm`` (its edge response is ``Phi(x / sigma)``)."""

    sigma_mm: float
    domain: ClassVar[Domain] = "intensity"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        return gaussian_blur(image, [self.sigma_mm / s for s in spacing_mm])


@dataclass(frozen=True)
class Noise:
    """Quantum and electronic noise of the intensity ``t = I / I0``, both per unit area, so that one setting means
    the same detector at any pixel size.

    ``N = photons_per_mm2 * A`` photons (noise-equivalent quanta; ``A`` the pixel's area in mm^2) reach an
    unattenuated pixel; the detector counts ``Poisson(N t)`` plus Gaussian electronic noise of variance
    ``electronic_quanta_per_mm2 * A`` (in squared quanta: a dark image's variance per mm^2), so ``t`` becomes
    ``counts / N`` with variance ``t / N + electronic_quanta_per_mm2 * A / N**2``. At least one count is kept, so
    the log stays finite.
    """

    photons_per_mm2: float
    electronic_quanta_per_mm2: float
    domain: ClassVar[Domain] = "intensity"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        area = spacing_mm[0] * spacing_mm[1]
        photons = self.photons_per_mm2 * area
        counts = torch.poisson(image.clamp(min=0.0) * photons, generator=generator)
        electronic = math.sqrt(self.electronic_quanta_per_mm2 * area) * torch.randn(
            image.shape, generator=generator, dtype=image.dtype)
        return ((counts + electronic) / photons).clamp(min=1.0 / photons)


@dataclass(frozen=True)
class Display:
    """Console processing in `display_frame`: unsharp masking ``x + amount (x - G(sigma_mm) x)`` then a gamma look-up
    table ``y = x ** gamma``, on the window between the ``window`` quantiles (low, high) of the log image."""

    window: tuple[float, float]
    gamma: float
    unsharp_amount: float
    unsharp_sigma_mm: float
    domain: ClassVar[Domain] = "line_integral"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        sigma_px = [self.unsharp_sigma_mm / s for s in spacing_mm]

        def process(x: Tensor) -> Tensor:
            sharpened = x + self.unsharp_amount * (x - gaussian_blur(x, sigma_px)) if self.unsharp_amount else x
            return sharpened.clamp(0.0, 1.0) ** self.gamma

        return display_frame(image, self.window, process)


@dataclass(frozen=True)
class Collimation:
    """Outside the rectangle that leaves ``margins`` (top, bottom, left, right; shares of the image's rows and
    columns) the image is flat: ``fill="max"`` the image's largest line integral (a white shutter), ``"zero"`` 0
    (a black one)."""

    margins: tuple[float, float, float, float]
    fill: str
    domain: ClassVar[Domain] = "line_integral"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        top, bottom, left, right = self.box(image.shape)
        value = image.max() if self.fill == "max" else torch.zeros((), dtype=image.dtype)
        out = torch.full_like(image, float(value))
        out[top:bottom, left:right] = image[top:bottom, left:right]
        return out

    def box(self, shape: Sequence[int]) -> tuple[int, int, int, int]:
        """First and one-past-last row and column ``(top, bottom, left, right)`` of the open field."""
        rows, cols = shape
        top, left = round(self.margins[0] * rows), round(self.margins[2] * cols)
        return top, max(top + 1, rows - round(self.margins[1] * rows)), left, max(left + 1, cols - round(
            self.margins[3] * cols))


@dataclass(frozen=True)
class Marker:
    """``text`` burned in ``height_mm`` tall, as bright as the image's largest line integral, its box's top-left
    corner at ``position`` (row, col; 0 to 1 of the room the box leaves)."""

    text: str
    height_mm: float
    position: tuple[float, float]
    domain: ClassVar[Domain] = "line_integral"

    def apply(self, image: Tensor, spacing_mm: tuple[float, float], generator: torch.Generator) -> Tensor:
        top, left, coverage = self.placed(image.shape, spacing_mm)
        h, w = coverage.shape
        out = image.clone()
        patch = out[top:top + h, left:left + w]
        out[top:top + h, left:left + w] = (1 - coverage) * patch + coverage * image.max()
        return out

    def placed(self, shape: Sequence[int], spacing_mm: tuple[float, float]) -> tuple[int, int, Tensor]:
        """``(top, left, coverage (h, w))`` of the glyphs on an image of ``shape`` (cropped to fit)."""
        rows, cols = shape
        coverage = marker_coverage(self.text, self.height_mm / spacing_mm[0])[:rows, :cols]
        h, w = coverage.shape
        return round(self.position[0] * (rows - h)), round(self.position[1] * (cols - w)), coverage


def apply_effects(line_integrals: Tensor, effects: Sequence[Effect], spacing_mm: tuple[float, float],
                  generator: torch.Generator) -> Tensor:
    """One image ``(rows, cols)`` through ``effects`` in order, each in its domain; line integrals in and out
    (float64 inside, the input's dtype out). No effect: the input itself."""
    image, domain = line_integrals.double(), "line_integral"
    for effect in effects:
        if effect.domain != domain:
            image = torch.exp(-image) if effect.domain == "intensity" else -torch.log(image)
            domain = effect.domain
        image = effect.apply(image, spacing_mm, generator)
    if domain == "intensity":
        image = -torch.log(image)
    return image.to(line_integrals.dtype) if effects else line_integrals


# ---------------------------------------------------------------------------------------- randomised settings


@dataclass(frozen=True)
class Range:
    """Values drawn uniformly in ``[low, high]`` (``log=True``: log-uniformly); ``low == high`` fixes the value."""

    low: float
    high: float
    log: bool = False

    def draw(self, generator: torch.Generator) -> float:
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)


def _choose(options: Sequence[str], generator: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (), generator=generator))]


# per effect: {key: (kind, lowest allowed, highest allowed)}; kind "range", "log_range" (> 0) or "choice" (the
# allowed values in place of the bounds). Every key is required; "probability" (default 1) is added to all.
_SCHEMA: dict[str, dict[str, tuple[str, Any, Any]]] = {
    "pose": {"rotation_deg": ("range", -45.0, 45.0), "shift_mm": ("range", -math.inf, math.inf)},
    "scatter": {"spr": ("range", 0.0, math.inf), "sigma_mm": ("range", 0.0, math.inf)},
    "heel": {"ratio": ("range", 1.0, math.inf), "directions": ("choice", HEEL_DIRECTIONS, None)},
    "blur": {"sigma_mm": ("range", 0.0, math.inf)},
    "noise": {"photons_per_mm2": ("log_range", 0.0, math.inf),
              "electronic_quanta_per_mm2": ("range", 0.0, math.inf)},
    "display": {"window_low_quantile": ("range", 0.0, 1.0), "window_high_quantile": ("range", 0.0, 1.0),
                "gamma": ("range", 0.0, math.inf), "unsharp_amount": ("range", 0.0, math.inf),
                "unsharp_sigma_mm": ("range", 0.0, math.inf)},
    "collimation": {"margin": ("range", 0.0, 0.45), "fill": ("choice", COLLIMATION_FILLS, None)},
    "markers": {"text": ("choice", None, None), "height_mm": ("range", 0.0, math.inf)},
}
# the order the effects happen in (see the module docstring), whatever the config's order
EFFECT_ORDER = tuple(_SCHEMA)


def _draw_effect(name: str, s: Mapping[str, Any], g: torch.Generator) -> Effect:
    if name == "pose":
        return Pose(s["rotation_deg"].draw(g), (s["shift_mm"].draw(g), s["shift_mm"].draw(g)))
    if name == "scatter":
        return Scatter(s["spr"].draw(g), s["sigma_mm"].draw(g))
    if name == "heel":
        return Heel(s["ratio"].draw(g), _choose(s["directions"], g))
    if name == "blur":
        return Blur(s["sigma_mm"].draw(g))
    if name == "noise":
        return Noise(s["photons_per_mm2"].draw(g), s["electronic_quanta_per_mm2"].draw(g))
    if name == "display":
        return Display((s["window_low_quantile"].draw(g), s["window_high_quantile"].draw(g)), s["gamma"].draw(g),
                       s["unsharp_amount"].draw(g), s["unsharp_sigma_mm"].draw(g))
    if name == "collimation":
        margins = tuple(s["margin"].draw(g) for _ in range(4))
        return Collimation(margins, _choose(s["fill"], g))  # type: ignore[arg-type]
    position = (float(torch.rand((), generator=g)), float(torch.rand((), generator=g)))
    return Marker(_choose(s["text"], g), s["height_mm"].draw(g), position)


@dataclass(frozen=True)
class RadiographRealism:
    """The randomised effects of ``data.realism``: per view, each configured effect is applied with its
    ``probability``, its values drawn from its ranges (see the module docstring)."""

    settings: Mapping[str, Mapping[str, Any]]  # effect -> {key: Range | tuple of choices | probability}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], key: str = "data.realism") -> RadiographRealism:
        """Parse and check ``config`` (the plain dict of ``data.realism``); a ValueError names the bad key."""
        if not isinstance(config, Mapping) or not config:
            raise ValueError(f"config key {key} must map effect names to their settings (effects: "
                             f"{list(EFFECT_ORDER)}), got {config!r}; null turns realism off")
        unknown = [name for name in config if name not in _SCHEMA]
        if unknown:
            raise ValueError(f"config key {key}.{unknown[0]}: unknown effect; the effects are {list(EFFECT_ORDER)}")
        return cls({name: _parse_effect(name, config[name], f"{key}.{name}")
                    for name in EFFECT_ORDER if name in config})

    def draw(self, generator: torch.Generator) -> list[Effect]:
        """The effects for one view, in ``EFFECT_ORDER``, with values drawn from ``generator``."""
        effects = []
        for name, settings in self.settings.items():
            applied = float(torch.rand((), generator=generator, dtype=torch.float64)) < settings["probability"]
            effect = _draw_effect(name, settings, generator)  # drawn either way: one view's draws never shift
            if applied:
                effects.append(effect)
        return effects

    def __call__(self, line_integrals: Tensor, pixel_spacing_mm: Sequence[float],
                 generator: torch.Generator) -> Tensor:
        """``(V, rows, cols)`` line integrals -> the same with every view's own draw of the effects."""
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        return torch.stack([apply_effects(view, self.draw(generator), spacing, generator)
                            for view in line_integrals])


def _parse_effect(name: str, config: Any, key: str) -> dict[str, Any]:
    schema = _SCHEMA[name]
    if not isinstance(config, Mapping):
        raise ValueError(f"config key {key} must be a mapping of {sorted(schema)} (and probability), got {config!r}")
    unknown = [k for k in config if k not in schema and k != "probability"]
    if unknown:
        raise ValueError(f"config key {key}.{unknown[0]}: unknown setting; {key} takes {sorted(schema)} and "
                         "probability")
    missing = [k for k in schema if k not in config]
    if missing:
        raise ValueError(f"config key {key}.{missing[0]} is missing; {key} needs {sorted(schema)}")
    probability = config.get("probability", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 <= probability <= 1:
        raise ValueError(f"config key {key}.probability must be a number in [0, 1], got {probability!r}")
    parsed: dict[str, Any] = {"probability": float(probability)}
    for setting, (kind, low, high) in schema.items():
        where = f"{key}.{setting}"
        if kind == "choice":
            allowed = tuple(GLYPHS) if low is None else low
            parsed[setting] = _parse_choices(config[setting], allowed, where, letters=low is None)
        else:
            parsed[setting] = _parse_range(config[setting], low, high, where, log=kind == "log_range")
    if name == "display" and parsed["window_low_quantile"].high >= parsed["window_high_quantile"].low:
        raise ValueError(f"config key {key}: window_low_quantile (up to {parsed['window_low_quantile'].high}) must "
                         f"stay below window_high_quantile (from {parsed['window_high_quantile'].low})")
    if name == "display" and parsed["gamma"].low <= 0:
        raise ValueError(f"config key {key}.gamma must be > 0, got {config['gamma']!r}")
    return parsed


def _parse_range(value: Any, low: float, high: float, key: str, log: bool) -> Range:
    numbers = [value] if isinstance(value, int | float) else value
    if (not isinstance(numbers, Sequence) or isinstance(numbers, str) or len(numbers) not in (1, 2)
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers)):
        raise ValueError(f"config key {key} must be a number or [low, high], got {value!r}")
    lo, hi = float(numbers[0]), float(numbers[-1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"config key {key} must be finite with low <= high, got {value!r}")
    if lo < low or hi > high or (log and lo <= 0):
        bounds = f"> 0 and <= {high}" if log else f"within [{low}, {high}]"
        raise ValueError(f"config key {key} must lie {bounds}, got {value!r}")
    return Range(lo, hi, log=log)


def _parse_choices(value: Any, allowed: tuple[str, ...], key: str, letters: bool) -> tuple[str, ...]:
    options = [value] if isinstance(value, str) else value
    if not isinstance(options, Sequence) or not options or not all(isinstance(o, str) and o for o in options):
        raise ValueError(f"config key {key} must be a non-empty list of strings, got {value!r}")
    for option in options:
        bad = [c for c in option if c not in allowed] if letters else ([] if option in allowed else [option])
        if bad:
            what = f"letters {list(allowed)}" if letters else f"one of {list(allowed)}"
            raise ValueError(f"config key {key}: {bad[0]!r} of {option!r} is not {what}")
    return tuple(options)
