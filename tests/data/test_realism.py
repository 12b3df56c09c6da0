"""x2ct/data/realism.py: each effect's statistic measured in the image equals the value set (scatter-to-primary
ratio, edge-response width, noise variance, heel ratio, pose, tone curve and unsharp gain, shutters, markers),
through the whole chain (line integrals in and out); draws repeat by seed and stay in their ranges; bad settings
are refused naming the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from x2ct.data.realism import (
    BODY_LINE_INTEGRAL,
    GLYPHS,
    Blur,
    Collimation,
    Display,
    Heel,
    Marker,
    Noise,
    Pose,
    RadiographRealism,
    Scatter,
    apply_effects,
    body_mask,
    marker_coverage,
)

PRESET = Path(__file__).resolve().parents[2] / "conf" / "realism" / "default.yaml"


def preset() -> dict:
    """The preset as the trainer reads it (OmegaConf's YAML)."""
    return OmegaConf.to_container(OmegaConf.load(PRESET).realism)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chest(rows: int = 64, cols: int = 64) -> torch.Tensor:
    """A DRR-like image ``(rows, cols)`` float64: an elliptic body (line integrals up to ~5) in air, two lungs."""
    r = torch.linspace(-1, 1, rows, dtype=torch.float64)[:, None]
    c = torch.linspace(-1, 1, cols, dtype=torch.float64)[None, :]
    body = (1 - (r / 0.85) ** 2 - (c / 0.7) ** 2).clamp(min=0).sqrt() * 5.0
    lungs = sum((1 - ((r + 0.1) / 0.5) ** 2 - ((c - x) / 0.22) ** 2).clamp(min=0).sqrt() * 2.0 for x in (-0.3, 0.3))
    return body - lungs


def only(effect: str, **settings) -> RadiographRealism:
    return RadiographRealism.from_config({effect: settings})


@pytest.mark.parametrize("spr", [0.05, 0.5, 1.3])
def test_the_scatter_to_primary_ratio_measured_over_the_body_is_the_set_one(spr):
    p = chest()
    out = only("scatter", spr=spr, sigma_mm=60.0)(p[None], (8.0, 8.0), gen())[0]
    primary, recorded = torch.exp(-p), torch.exp(-out)
    body = p > BODY_LINE_INTEGRAL
    measured = (recorded - primary)[body].sum() / primary[body].sum()
    assert measured.item() == pytest.approx(spr, rel=1e-9)
    assert torch.equal(body_mask(primary), body)


def test_scatter_is_a_smooth_image_that_comes_from_the_body_not_from_air():
    p = torch.zeros(128, 128, dtype=torch.float64)
    p[40:88, 40:88] = 3.0  # a block of body in the middle of a large air field
    primary = torch.exp(-p)
    scatter = Scatter(spr=0.5, sigma_mm=16.0).scatter(primary, (2.0, 2.0))  # sigma 8 pixels
    # low-pass: almost none of its energy above 1/(pi sigma) cycles per pixel (where the kernel passes exp(-2) of
    # the amplitude), where the primary's edges put a tenth of theirs
    def high_share(image):
        spectrum = torch.fft.fft2(image - image.mean()).abs() ** 2
        f = torch.fft.fftfreq(128, dtype=torch.float64)
        radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
        return (spectrum[radius > 1 / (math.pi * 8)].sum() / spectrum.sum()).item()

    assert high_share(scatter) < 1e-3 and high_share(primary) > 0.05
    # rays through air scatter nothing: far from the body (> 4 sigma of the kernel) there is none
    assert scatter[:4].abs().max().item() == 0.0
    assert scatter[64, 64] > scatter[64, 30] > 0


def test_the_detector_blur_measured_from_an_edge_response_is_the_set_sigma():
    p = torch.full((32, 96), -math.log(0.8), dtype=torch.float64)
    p[:, 48:] = -math.log(0.2)
    out = only("blur", sigma_mm=6.0)(p[None], (2.0, 2.0), gen())[0]
    edge = torch.exp(-out)[16]  # the edge response, 0.8 -> 0.2
    lsf = edge[:-1] - edge[1:]
    x = torch.arange(95, dtype=torch.float64) + 0.5
    mean = (lsf * x).sum() / lsf.sum()
    sigma_px = ((lsf * (x - mean) ** 2).sum() / lsf.sum()).sqrt()
    assert (sigma_px * 2.0).item() == pytest.approx(6.0, rel=0.01)
    assert mean.item() == pytest.approx(47.5, abs=1e-6)  # the step lies between pixels 47 and 48
    assert edge[0].item() == pytest.approx(0.8, abs=1e-12) and edge[-1].item() == pytest.approx(0.2, abs=1e-12)


@pytest.mark.parametrize(("photons", "electronic"), [(1e3, 0.0), (1e3, 400.0), (1e4, 0.0), (1e5, 4000.0)])
def test_noise_variance_matches_the_closed_form(photons, electronic):
    t, spacing = 0.3, (2.0, 2.0)
    area = spacing[0] * spacing[1]
    p = torch.full((1, 256, 256), -math.log(t), dtype=torch.float64)
    out = only("noise", photons_per_mm2=photons, electronic_quanta_per_mm2=electronic)(p, spacing, gen(3))[0]
    recorded = torch.exp(-out)
    n = photons * area
    expected = t / n + electronic * area / n**2
    assert recorded.var().item() == pytest.approx(expected, rel=0.03)  # 5 standard errors of the estimate
    assert recorded.mean().item() == pytest.approx(t, abs=4 * math.sqrt(expected / recorded.numel()))


@pytest.mark.parametrize("direction", ["up", "down", "left", "right"])
def test_the_heel_ratio_across_the_field_is_the_set_one_brighter_toward_the_cathode(direction):
    p = torch.zeros(1, 40, 50, dtype=torch.float64)
    out = only("heel", ratio=1.2, directions=[direction])(p, (8.0, 8.0), gen())[0]
    intensity = torch.exp(-out)
    edges = {"up": (intensity[0], intensity[-1]), "down": (intensity[-1], intensity[0]),
             "left": (intensity[:, 0], intensity[:, -1]), "right": (intensity[:, -1], intensity[:, 0])}
    cathode, anode = edges[direction]
    assert (cathode / anode).mean().item() == pytest.approx(1.2, rel=1e-12)
    assert intensity.log().mean().item() == pytest.approx(0.0, abs=1e-12)  # the exposure stays the same


def test_a_pose_shift_of_whole_pixels_moves_the_image_by_them():
    p = chest(48, 48)
    out = Pose(rotation_deg=0.0, shift_mm=(8.0, -12.0)).apply(p, (4.0, 4.0), gen())  # 2 rows down, 3 cols left
    torch.testing.assert_close(out[2:, :-3], p[:-2, 3:], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[:2, 5], p[0, 8].expand(2), atol=1e-12, rtol=0)  # edges continued


@pytest.mark.parametrize("angle", [-3.0, 2.0, 10.0])
def test_a_pose_rotation_turns_the_image_counter_clockwise_by_the_set_angle(angle):
    r = torch.arange(96, dtype=torch.float64)[:, None] - 47.5
    c = torch.arange(96, dtype=torch.float64)[None, :] - 47.5
    bar = torch.exp(-0.5 * ((c / 20) ** 2 + (r / 4) ** 2))  # elongated along the columns
    out = Pose(rotation_deg=angle, shift_mm=(0.0, 0.0)).apply(bar, (1.0, 1.0), gen())
    x, y = c.expand(96, 96), -r.expand(96, 96)  # screen axes, y up
    w = out / out.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    cxx, cyy, cxy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum(), (w * (x - mx) * (y - my)).sum()
    measured = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy))
    assert measured == pytest.approx(angle, abs=0.1)


def test_display_at_the_full_window_gamma_1_and_no_sharpening_is_the_identity():
    p = chest()
    out = Display(window=(0.0, 1.0), gamma=1.0, unsharp_amount=0.0, unsharp_sigma_mm=16.0).apply(p, (8, 8), gen())
    torch.testing.assert_close(out, p, atol=1e-12, rtol=0)


def test_display_gamma_is_the_tone_curve_over_the_window():
    p = chest()
    lo, hi = p.min(), p.max()
    out = Display(window=(0.0, 1.0), gamma=1.4, unsharp_amount=0.0, unsharp_sigma_mm=16.0).apply(p, (8, 8), gen())
    torch.testing.assert_close(out, lo + (hi - lo) * ((p - lo) / (hi - lo)) ** 1.4, atol=1e-12, rtol=0)


def test_display_window_clips_the_set_share_of_pixels():
    p = torch.rand(100, 100, generator=gen(1), dtype=torch.float64)
    out = Display(window=(0.1, 0.95), gamma=1.0, unsharp_amount=0.0, unsharp_sigma_mm=8.0).apply(p, (8, 8), gen())
    assert (out == out.min()).double().mean().item() == pytest.approx(0.10, abs=2e-4)
    assert (out == out.max()).double().mean().item() == pytest.approx(0.05, abs=2e-4)


@pytest.mark.parametrize(("amount", "sigma_mm", "period_px"), [(1.0, 16.0, 8), (0.5, 8.0, 16), (0.8, 40.0, 32)])
def test_unsharp_masking_gain_of_a_sinusoid_matches_the_closed_form(amount, sigma_mm, period_px):
    c = torch.arange(256, dtype=torch.float64)
    p = (2.0 + 0.1 * torch.sin(2 * math.pi * c / period_px))[None, :].expand(8, 256).clone()
    p[:, 0], p[:, -1] = 1.0, 3.0  # the window (0, 1) quantiles leave the sinusoid unclipped
    out = Display(window=(0.0, 1.0), gamma=1.0, unsharp_amount=amount, unsharp_sigma_mm=sigma_mm).apply(
        p, (8.0, 8.0), gen())
    inner = out[4, 96:160]
    sigma_px = sigma_mm / 8.0
    expected = 1 + amount * (1 - math.exp(-2 * math.pi**2 * sigma_px**2 / period_px**2))
    assert ((inner.max() - inner.min()) / 0.2).item() == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("fill", ["max", "zero"])
def test_collimation_is_flat_outside_the_rectangle_and_untouched_inside(fill):
    p = chest(50, 40)
    effect = Collimation(margins=(0.1, 0.2, 0.05, 0.25), fill=fill)
    out = effect.apply(p, (8.0, 8.0), gen())
    top, bottom, left, right = effect.box(p.shape)
    assert (top, bottom, left, right) == (5, 40, 2, 30)
    inside = torch.zeros_like(p, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert torch.equal(out[inside], p[inside])
    assert torch.all(out[~inside] == (p.max() if fill == "max" else 0.0))


def test_a_marker_burns_in_its_glyphs_at_the_image_maximum_and_nothing_else():
    p = chest(64, 64)
    marker = Marker(text="LR", height_mm=14 * 4.0, position=(0.5, 0.0))  # 14 pixels: each bitmap cell 2x2 pixels
    out = marker.apply(p, (4.0, 4.0), gen())
    top, left, coverage = marker.placed(p.shape, (4.0, 4.0))
    assert coverage.shape == (14, 22) and set(coverage.unique().tolist()) == {0.0, 1.0}
    ink = sum(row.count("1") for letter in "LR" for row in GLYPHS[letter])
    changed = out != p
    assert (top, left) == (25, 0) and changed.sum().item() == 4 * ink
    assert torch.all(out[top:top + 14, left:left + 22][coverage == 1] == p.max())
    assert not changed[:top].any() and not changed[top + 14:].any() and not changed[:, left + 22:].any()


def test_a_marker_smaller_than_its_bitmap_blends_by_coverage():
    coverage = marker_coverage("R", height_px=3.0)
    assert coverage.shape == (3, 2)
    assert 0 < coverage.min() and coverage.max() <= 1 and ((coverage > 0) & (coverage < 1)).any()


def test_effects_at_zero_strength_return_the_input():
    p = chest()[None].float()
    realism = RadiographRealism.from_config({
        "pose": {"rotation_deg": 0.0, "shift_mm": 0.0}, "scatter": {"spr": 0.0, "sigma_mm": 50.0},
        "heel": {"ratio": 1.0, "directions": ["up"]}, "blur": {"sigma_mm": 0.0},
        "display": {"window_low_quantile": 0.0, "window_high_quantile": 1.0, "gamma": 1.0, "unsharp_amount": 0.0,
                    "unsharp_sigma_mm": 10.0},
        "collimation": {"margin": 0.0, "fill": ["zero"]}})
    torch.testing.assert_close(realism(p, (8.0, 8.0), gen()), p, atol=1e-6, rtol=0)
    view = p[0]
    assert apply_effects(view, [], (8.0, 8.0), gen()) is view  # no effect drawn: the very tensor, no round trip


def test_the_preset_keeps_shape_and_dtype_and_repeats_by_seed():
    realism = RadiographRealism.from_config(preset())
    p = torch.stack([chest(), chest()]).float()  # two identical views
    a = realism(p, (8.0, 8.0), gen(7))
    assert a.shape == p.shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, realism(p, (8.0, 8.0), gen(7)))
    assert not torch.allclose(a, realism(p, (8.0, 8.0), gen(8)))
    assert not torch.allclose(a[0], a[1])  # every view draws its own effects


def test_draws_stay_in_their_ranges_and_effects_come_with_their_probability():
    config = preset()
    realism = RadiographRealism.from_config(config)
    g = gen(11)
    draws = [realism.draw(g) for _ in range(2000)]
    counts = {name: sum(any(type(e).__name__.lower().startswith(name[:4]) for e in d) for d in draws)
              for name in config}
    assert counts["pose"] == counts["scatter"] == counts["noise"] == 2000
    assert counts["display"] / 2000 == pytest.approx(0.8, abs=0.03)
    assert counts["collimation"] / 2000 == pytest.approx(0.5, abs=0.04)
    assert counts["markers"] / 2000 == pytest.approx(0.5, abs=0.04)
    effects = [e for d in draws for e in d]
    scatter = [e for e in effects if isinstance(e, Scatter)]
    lo, hi = config["scatter"]["spr"]
    assert lo <= min(e.spr for e in scatter) < lo + 0.01 and hi - 0.01 < max(e.spr for e in scatter) <= hi
    noise = [e.photons_per_mm2 for e in effects if isinstance(e, Noise)]
    lo, hi = config["noise"]["photons_per_mm2"]
    median = sorted(noise)[len(noise) // 2]
    assert lo <= min(noise) and max(noise) <= hi and median == pytest.approx(math.sqrt(lo * hi), rel=0.1)  # log
    heel = [e for e in effects if isinstance(e, Heel)]
    assert {e.direction for e in heel} == set(config["heel"]["directions"])
    assert all(1.0 <= e.ratio <= 1.25 for e in heel)
    blur = [e.sigma_mm for e in effects if isinstance(e, Blur)]
    assert 0.0 <= min(blur) and max(blur) <= 6.0
    pose = [e for e in effects if isinstance(e, Pose)]
    assert max(abs(e.rotation_deg) for e in pose) <= 3.0 and max(abs(s) for e in pose for s in e.shift_mm) <= 10


@pytest.mark.parametrize(("config", "message"), [
    ({"scater": {"spr": 0.1}}, "config key data.realism.scater: unknown effect; the effects are"),
    ({"scatter": {"spr": 0.1}}, "config key data.realism.scatter.sigma_mm is missing"),
    ({"scatter": {"spr": 0.1, "sigma_mm": 5, "kernel": "exp"}}, "config key data.realism.scatter.kernel: unknown"),
    ({"scatter": {"spr": [0.5, 0.1], "sigma_mm": 5}}, "config key data.realism.scatter.spr must be finite with "
                                                      "low <= high"),
    ({"scatter": {"spr": -0.1, "sigma_mm": 5}}, "config key data.realism.scatter.spr must lie within [0.0, inf]"),
    ({"blur": {"sigma_mm": "wide"}}, "config key data.realism.blur.sigma_mm must be a number or [low, high]"),
    ({"blur": {"sigma_mm": 1, "probability": 1.5}}, "config key data.realism.blur.probability must be a number in"),
    ({"noise": {"photons_per_mm2": [0, 10], "electronic_quanta_per_mm2": 0}},
     "config key data.realism.noise.photons_per_mm2 must lie > 0"),
    ({"heel": {"ratio": 0.9, "directions": ["up"]}}, "config key data.realism.heel.ratio must lie within [1.0"),
    ({"heel": {"ratio": 1.1, "directions": ["north"]}}, "config key data.realism.heel.directions: 'north' of 'north' "
                                                        "is not one of ['up', 'down', 'left', 'right']"),
    ({"markers": {"text": ["LX"], "height_mm": 10}}, "config key data.realism.markers.text: 'X' of 'LX' is not "
                                                     "letters"),
    ({"collimation": {"margin": [0, 0.6], "fill": ["max"]}}, "config key data.realism.collimation.margin must lie "
                                                             "within [0.0, 0.45]"),
    ({"display": {"window_low_quantile": [0, 0.5], "window_high_quantile": [0.4, 1], "gamma": 1,
                  "unsharp_amount": 0, "unsharp_sigma_mm": 8}}, "config key data.realism.display: window_low_quantile"),
    ({"display": {"window_low_quantile": 0, "window_high_quantile": 1, "gamma": 0,
                  "unsharp_amount": 0, "unsharp_sigma_mm": 8}}, "config key data.realism.display.gamma must be > 0"),
    ({}, "config key data.realism must map effect names to their settings"),
    ({"blur": 3.0}, "config key data.realism.blur must be a mapping"),
])
def test_bad_settings_are_refused_naming_the_key(config, message):
    with pytest.raises(ValueError) as refused:
        RadiographRealism.from_config(config)
    assert str(refused.value).startswith(message), str(refused.value)
