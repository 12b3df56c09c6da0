"""x2ct/data/clinical_processing.py: the scoring chain is deterministic, its parts follow their definitions, and it
is not the training augmentation: its display processing differs from every setting the preset
(conf/realism/default.yaml) can draw in two named ways, the tone-curve family and amplitude-dependent gain."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.data.test_realism import chest
from x2ct.data.clinical_processing import CLINICAL_CHAIN, multiscale_contrast, s_curve
from x2ct.data.realism import Display, Noise, Scatter, gaussian_blur

PRESET = Path(__file__).resolve().parents[2] / "conf" / "realism" / "default.yaml"


def display_preset() -> dict:
    """The preset's display settings as the trainer reads them (OmegaConf's YAML)."""
    return OmegaConf.to_container(OmegaConf.load(PRESET).realism.display)


def test_the_chain_is_deterministic_whatever_the_random_state():
    views = torch.stack([chest(), 0.9 * chest()]).float()
    torch.manual_seed(0)
    a = CLINICAL_CHAIN(views, (8.0, 8.0))
    torch.manual_seed(1)
    b = CLINICAL_CHAIN(views, (8.0, 8.0), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert a.shape == views.shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    # the noise is seeded by the image itself: the same image, alone or beside another, gets the same noise
    assert torch.equal(CLINICAL_CHAIN(views[1:], (8.0, 8.0))[0], a[1])
    seeds = {CLINICAL_CHAIN.noise_generator(view).initial_seed() for view in views}
    assert len(seeds) == 2
    quiet = replace(CLINICAL_CHAIN, noise=Noise(photons_per_mm2=1e15, electronic_quanta_per_mm2=0.0))
    assert (quiet(views, (8.0, 8.0)) - a).abs().max() > 1e-3  # and there is noise to see


def test_multiscale_contrast_with_power_1_returns_its_input():
    x = torch.rand(48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(multiscale_contrast(x, [[1, 1], [2, 2], [4, 4]], power=1.0, linear_below=0.005), x,
                               atol=1e-12, rtol=0)


def test_the_s_curve_maps_the_window_onto_itself_monotonically_with_its_stated_mid_slope():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    y = s_curve(x, 5.0)
    assert y[0].item() == pytest.approx(0.0, abs=1e-15) and y[-1].item() == pytest.approx(1.0, abs=1e-15)
    assert torch.all(y[1:] > y[:-1])
    mid = (y[501] - y[499]) / (x[501] - x[499])
    assert mid.item() == pytest.approx(5.0 / 4 / (2 * torch.sigmoid(torch.tensor(2.5)).item() - 1), rel=1e-5)


def test_the_chain_tone_curve_is_not_of_the_augmentations_gamma_family():
    """Named difference 1: the chain's tone curve has an inflection (its curvature changes sign within the window);
    every gamma curve the augmentation can draw is convex or concave over the whole window."""
    x = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)

    def curvature_signs(y):
        second = y[2:] - 2 * y[1:-1] + y[:-2]
        return set(torch.sign(second[second.abs() > 1e-12]).tolist())

    assert curvature_signs(s_curve(x, CLINICAL_CHAIN.display.lut_slope)) == {-1.0, 1.0}
    low, high = display_preset()["gamma"]
    for gamma in torch.linspace(low, high, 15).tolist():
        assert len(curvature_signs(x**gamma)) <= 1, gamma


def test_the_chain_amplifies_faint_detail_beyond_the_augmentations_reach_and_by_amplitude():
    """Named difference 2: the chain's multi-scale enhancement gives a faint detail (1% of the window) more gain
    than unsharp masking at the augmentation's strongest setting gives any detail, and its gain depends on the
    detail's amplitude; unsharp masking's does not (it is linear)."""
    spacing = 8.0
    sigmas_px = [[s / spacing] * 2 for s in CLINICAL_CHAIN.display.sigmas_mm]
    preset = display_preset()
    strongest = preset["unsharp_amount"][1]
    c = torch.arange(192, dtype=torch.float64)

    def gain(process, amplitude, period):
        x = (0.5 + amplitude * torch.sin(2 * math.pi * c / period))[None, :].expand(16, 192)
        inner = process(x)[8, 64:128]
        return ((inner.max() - inner.min()) / (2 * amplitude)).item()

    def chain(x):
        return multiscale_contrast(x, sigmas_px, CLINICAL_CHAIN.display.power, CLINICAL_CHAIN.display.linear_below)

    for period in (4, 8, 16):
        faint, strong = gain(chain, 0.01, period), gain(chain, 0.2, period)
        assert faint > 1 + strongest  # no unsharp mask of the preset reaches this gain at any frequency
        assert faint / strong > 1.5
        for sigma_mm in preset["unsharp_sigma_mm"]:
            def unsharp(x, sigma_mm=sigma_mm):
                return x + strongest * (x - gaussian_blur(x, [sigma_mm / spacing] * 2))

            assert gain(unsharp, 0.01, period) == pytest.approx(gain(unsharp, 0.2, period), rel=1e-9)
            assert gain(unsharp, 0.01, period) <= 1 + strongest + 1e-9


def test_the_chains_physics_are_the_realism_effects_at_fixed_values():
    """The scatter the chain adds is the realism's scatter at the chain's SPR: measured over the body."""
    p = chest()
    primary = torch.exp(-p)
    scatter = CLINICAL_CHAIN.scatter.scatter(primary, (8.0, 8.0))
    body = p > 0.1
    assert (scatter[body].sum() / primary[body].sum()).item() == pytest.approx(CLINICAL_CHAIN.scatter.spr, rel=1e-9)
    assert isinstance(CLINICAL_CHAIN.scatter, Scatter) and not isinstance(CLINICAL_CHAIN.display, Display)


def test_the_chain_parameters_are_recorded_as_plain_json():
    recorded = json.loads(json.dumps(CLINICAL_CHAIN.to_dict()))
    assert list(recorded) == ["scatter", "heel", "blur", "noise", "display", "collimation", "marker"]
    assert recorded["scatter"] == {"spr": 0.5, "sigma_mm": 60.0}
    assert recorded["display"]["sigmas_mm"] == [8.0, 16.0, 32.0, 64.0] and recorded["display"]["power"] == 0.7
