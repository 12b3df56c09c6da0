"""Tests for x2ct/adversarial/projection.py: it reproduces the data set's views and is differentiable."""

from __future__ import annotations

import pytest
import torch

from x2ct.adversarial.projection import random_angles, render_projections
from x2ct.data.dataset import PatientDRRDataset


def _settings(ds: PatientDRRDataset) -> dict:
    ct = ds.manifest["ct"]
    spacing = [fov / n for fov, n in zip(ct["fov_mm"], ct["size"], strict=True)]
    return {"hu_window": ds.hu_window, "mu_water": ds.manifest["mu_water"], "spacing_mm": spacing,
            "normalisation": ds.normalisation, "scale": ds.view_scale}


def test_rendering_the_target_reproduces_the_stored_views(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    item = ds[0]
    views = render_projections(item["ct"][None], geometry=ds.geometry.with_angles(item["angles_deg"].tolist()),
                               **_settings(ds))
    expected = item["views"][:, 0][None]  # (1, V, rows, cols)
    assert views.shape == expected.shape
    assert expected.max() > 0.2  # not an empty image that anything would match
    torch.testing.assert_close(views, expected, atol=1e-4, rtol=1e-4)  # a 1% error in mu_water is ~9e-3


def test_gradients_flow_from_projections_to_the_volume_and_a_generator(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    target = ds[0]["ct"][None]
    # a stand-in generator: one learnable scale on the target volume
    gain = torch.tensor(0.9, requires_grad=True)
    volume = (target * gain).requires_grad_()
    volume.retain_grad()
    views = render_projections(volume, geometry=ds.geometry, **_settings(ds))
    views.square().mean().backward()
    assert volume.grad.abs().sum() > 0
    assert gain.grad is not None and gain.grad.abs() > 0


def test_a_new_angle_gives_a_different_image(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    volume = ds[0]["ct"][None]
    at_0 = render_projections(volume, geometry=ds.geometry.with_angles([0.0]), **_settings(ds))
    at_40 = render_projections(volume, geometry=ds.geometry.with_angles([40.0]), **_settings(ds))
    assert at_0.shape == at_40.shape == (1, 1, *ds.geometry.detector_shape)
    assert (at_0 - at_40).abs().max() > 0.05


def test_bad_volume_shape_is_rejected(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        render_projections(ds[0]["ct"], geometry=ds.geometry, **_settings(ds))


def test_random_angles_are_reproducible_and_in_range():
    a = random_angles(torch.Generator().manual_seed(3), 50, low=10.0, high=20.0)
    b = random_angles(torch.Generator().manual_seed(3), 50, low=10.0, high=20.0)
    c = random_angles(torch.Generator().manual_seed(4), 50, low=10.0, high=20.0)
    assert a == b and a != c
    assert len(a) == 50 and all(10.0 <= x < 20.0 for x in a)
    assert max(a) - min(a) > 5.0  # spread over the range, not a constant


def test_random_angles_errors():
    with pytest.raises(ValueError, match="count"):
        random_angles(None, 0)
    with pytest.raises(ValueError, match="high > low"):
        random_angles(None, 2, low=90.0, high=90.0)
