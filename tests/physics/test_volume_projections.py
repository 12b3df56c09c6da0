"""Tests for x2ct/physics/volume_projections.py: it reproduces the data set's views and is differentiable."""

from __future__ import annotations

import pytest
import torch

from x2ct.data.dataset import PatientDRRDataset
from x2ct.ops.hu_window import denormalise
from x2ct.physics import volume_projections as projection
from x2ct.physics.attenuation import hu_to_mu
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import render_drr
from x2ct.physics.radiograph import normalise_views
from x2ct.physics.volume_projections import render_projections


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
    with pytest.raises(ValueError, match=r"render_projections: backend must be one of .*got 'fused'"):
        render_projections(ds[0]["ct"][None], geometry=ds.geometry, **_settings(ds), backend="fused")


# --- the ray-plan cache ---------------------------------------------------------------------------------------
SMALL = {"hu_window": (-1000.0, 1000.0), "mu_water": 0.0193, "spacing_mm": (5.0, 5.5, 6.0), "normalisation": "none",
         "scale": None}


def _small_geometry(angles=(0.0, 90.0)) -> ProjectionGeometry:
    return ProjectionGeometry(kind="cone", angles_deg=angles, detector_shape=(12, 10), pixel_spacing_mm=(9.0, 8.0),
                              source_to_isocenter_mm=300.0, source_to_detector_mm=500.0)


@pytest.fixture
def plan_calls(monkeypatch) -> list[tuple]:
    """An empty plan cache, and the (volume shape, dtype, device) of every plan the cache builds."""
    calls = []
    build = projection.plan_rays

    def counting(geometry, volume_shape, spacing_mm, **kwargs):
        calls.append((geometry.angles_deg, tuple(volume_shape), kwargs["dtype"], kwargs["device"]))
        return build(geometry, volume_shape, spacing_mm, **kwargs)

    monkeypatch.setattr(projection, "plan_rays", counting)
    projection._cached_ray_plan.cache_clear()
    yield calls
    projection._cached_ray_plan.cache_clear()  # no plan of the counting builder outlives the test


def test_rays_are_planned_once_and_the_images_equal_the_uncached_ones(plan_calls):
    torch.manual_seed(0)
    geometry = _small_geometry()
    first = render_projections(torch.rand(2, 1, 8, 9, 10), geometry=geometry, **SMALL)
    volume = torch.rand(2, 1, 8, 9, 10, requires_grad=True)
    cached = render_projections(volume, geometry=geometry, **SMALL)
    assert len(plan_calls) == 1  # the second call reused the first call's plan
    assert not torch.equal(first, cached)  # the plan carries no volume values

    mu = hu_to_mu(denormalise(volume, SMALL["hu_window"]), SMALL["mu_water"])
    uncached = normalise_views(render_drr(mu, SMALL["spacing_mm"], geometry), "none", None)
    assert torch.equal(cached, uncached)  # bit for bit
    (grad_cached,) = torch.autograd.grad(cached.square().sum(), volume)
    (grad_uncached,) = torch.autograd.grad(uncached.square().sum(), volume)
    assert torch.equal(grad_cached, grad_uncached)


def test_the_plan_cache_tells_angles_shapes_and_dtypes_apart(plan_calls):
    volume = torch.rand(1, 1, 8, 9, 10)
    at_0 = render_projections(volume, geometry=_small_geometry((0.0,)), **SMALL)
    at_40 = render_projections(volume, geometry=_small_geometry((40.0,)), **SMALL)
    assert not torch.equal(at_0, at_40)
    render_projections(volume[..., :8], geometry=_small_geometry((0.0,)), **SMALL)  # another volume shape
    double = render_projections(volume.double(), geometry=_small_geometry((0.0,)), **SMALL)
    assert double.dtype == torch.float64
    render_projections(volume.bfloat16(), geometry=_small_geometry((0.0,)), **SMALL)  # renders in float32: a hit
    assert [(c[0], c[1][2], c[2]) for c in plan_calls] == [
        ((0.0,), 10, torch.float32), ((40.0,), 10, torch.float32), ((0.0,), 8, torch.float32),
        ((0.0,), 10, torch.float64)]


def test_the_plan_cache_tells_devices_apart(plan_calls, monkeypatch):
    # the key, without a second device: a stand-in builder records the device and returns a token
    monkeypatch.setattr(projection, "plan_rays", lambda *args, device, **kwargs: ("plan on", device))
    args = (_small_geometry(), (8, 9, 10), SMALL["spacing_mm"], torch.float32)
    cpu = projection._cached_ray_plan(*args, torch.device("cpu"))
    assert projection._cached_ray_plan(*args, torch.device("cpu")) is cpu
    assert projection._cached_ray_plan(*args, torch.device("cuda", 0)) == ("plan on", torch.device("cuda", 0))
    assert projection._cached_ray_plan.cache_info().currsize == 2


def test_the_plan_cache_is_bounded(plan_calls):
    volume = torch.rand(1, 1, 4, 4, 4)
    for k in range(projection.RAY_PLAN_CACHE_SIZE + 3):
        render_projections(volume, geometry=_small_geometry((float(k),)), **SMALL)
    assert projection._cached_ray_plan.cache_info().currsize == projection.RAY_PLAN_CACHE_SIZE


def test_a_plan_first_made_under_inference_mode_serves_training(plan_calls):
    geometry = _small_geometry()
    with torch.inference_mode():
        render_projections(torch.rand(1, 1, 8, 9, 10), geometry=geometry, **SMALL)
    volume = torch.rand(1, 1, 8, 9, 10, requires_grad=True)
    render_projections(volume, geometry=geometry, **SMALL).sum().backward()
    assert len(plan_calls) == 1 and volume.grad.abs().sum() > 0


@pytest.mark.slow
def test_the_cache_adds_no_graph_break_under_torch_compile():
    # the only breaks allowed are the projector's own: splitting rays by axis has a data-dependent size
    geometry = _small_geometry()
    explanation = torch._dynamo.explain(lambda v: render_projections(v.sigmoid(), geometry=geometry, **SMALL))(
        torch.randn(1, 1, 8, 9, 10))
    assert all("nonzero" in str(b.reason) for b in explanation.break_reasons), explanation.break_reasons
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cached_plans_are_per_device(plan_calls):
    volume = torch.rand(1, 1, 8, 9, 10)
    cpu = render_projections(volume, geometry=_small_geometry(), **SMALL)
    gpu = render_projections(volume.cuda(), geometry=_small_geometry(), **SMALL)
    assert len(plan_calls) == 2 and gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
