"""Tests for x2ct/losses/projection.py: DRRs of the prediction against the input views (and novel views)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import TINY_OVERRIDES, compose_config
from x2ct.data.collate import collate_samples
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.input_spec import InputSpec
from x2ct.losses import build_loss_component
from x2ct.losses.projection import ProjectionConsistencyLoss, ncc_distance
from x2ct.physics.projector import render_drr
from x2ct.physics.view_angles import random_angles
from x2ct.physics.volume_projections import render_projections


@pytest.fixture(scope="module")
def four_view_dataset(tmp_path_factory) -> Path:
    """Like ``tiny_dataset`` but four views over 180 degrees, each divided by its own maximum (under a second)."""
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    root = tmp_path_factory.mktemp("four_views") / "phantom_4v"
    overrides = [*TINY_OVERRIDES, "protocol.geometry.views=null", "protocol.geometry.num_views=4",
                 "protocol.view_normalisation=per_image_max", f"output_dir={root}"]
    report = prepare_dataset(load_prepare_config(compose_config("prepare", overrides)), progress=False)
    assert report.ok, report.failures
    return root


def _batch(ds: PatientDRRDataset, size: int = 2) -> dict:
    return collate_samples([ds[i] for i in range(size)])


def _spacing(spec: InputSpec) -> list[float]:
    return [fov / n for fov, n in zip(spec.ct_fov_mm, spec.ct_size, strict=True)]


def _block(shape, amplitude: float) -> torch.Tensor:
    """A cube of ``amplitude`` in the middle third of a ``(B, 1, D, H, W)`` volume, zero elsewhere."""
    block = torch.zeros(shape)
    d, h, w = (n // 3 for n in shape[2:])
    block[:, :, d:2 * d, h:2 * h, w:2 * w] = amplitude
    return block


@pytest.mark.parametrize("radiograph", ["log", "intensity"])
@pytest.mark.parametrize("metric", ["l1", "ncc"])
@pytest.mark.parametrize("dataset", ["tiny_dataset", "four_view_dataset"])
def test_the_target_volume_explains_its_own_views(request, dataset, metric, radiograph):
    ds = PatientDRRDataset(request.getfixturevalue(dataset), "train", radiograph=radiograph)
    batch = _batch(ds)
    assert batch["views"].shape[1] == (2 if dataset == "tiny_dataset" else 4)
    loss = ProjectionConsistencyLoss(ds.input_spec(), metric=metric)
    value = loss(batch["ct"], batch["views"], batch["angles_deg"])
    assert value.ndim == 0
    assert value.item() < 1e-5
    # the same volume seen at the wrong angles does not explain the views (the check can fail)
    shifted = loss(batch["ct"], batch["views"], batch["angles_deg"] + 30.0)
    assert shifted.item() > 1e-3


def test_l1_grows_linearly_with_an_added_block_as_the_projector_predicts(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    spec, batch = ds.input_spec(), _batch(ds)
    loss = ProjectionConsistencyLoss(spec)
    values = [loss(batch["ct"] + _block(batch["ct"].shape, a), batch["views"], batch["angles_deg"]).item()
              for a in (0.05, 0.1, 0.2)]
    # closed form: +a in [0, 1] is +a * window width HU, i.e. +mu_water * a * width / 1000 per voxel of the block;
    # every pixel's view value rises by that block's line integral over the global scale (all positive)
    width = spec.hu_window[1] - spec.hu_window[0]
    geometry = spec.geometry.with_angles(batch["angles_deg"][0].tolist())
    delta_mu = _block(batch["ct"].shape, spec.mu_water * width / 1000.0)
    per_unit = render_drr(delta_mu, _spacing(spec), geometry).mean().item() / spec.scale
    assert per_unit > 1e-3
    assert values == pytest.approx([a * per_unit for a in (0.05, 0.1, 0.2)], rel=1e-3)


def test_ncc_grows_with_a_block_of_growing_contrast(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    batch = _batch(ds)
    loss = ProjectionConsistencyLoss(ds.input_spec(), metric="ncc")
    values = [loss(batch["ct"] + _block(batch["ct"].shape, a), batch["views"], batch["angles_deg"]).item()
              for a in (0.1, 0.3, 0.9)]
    assert 1e-4 < values[0] < values[1] < values[2] < 2.0


def test_ncc_distance_closed_forms():
    a = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert ncc_distance(3.0 * a + 1.0, a).item() == pytest.approx(0.0, abs=1e-6)  # brightness and contrast
    assert ncc_distance(-a, a).item() == pytest.approx(2.0, abs=1e-6)
    flat = torch.ones(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    value = ncc_distance(flat, a)
    value.backward()
    assert value.item() == pytest.approx(1.0) and torch.isfinite(flat.grad).all()


def _near_flat(dtype: torch.dtype) -> torch.Tensor:
    """Images ``(2, 3, 8, 8)`` around 0.5 with pixel variance about 1e-12 (standard deviation 1e-6)."""
    return 0.5 + 1e-6 * torch.randn(2, 3, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["random", "flat", "near_flat"])
def test_ncc_distance_of_identical_images_is_exactly_zero(kind, dtype):
    images = {"random": lambda: torch.rand(2, 3, 8, 8, dtype=dtype),
              "flat": lambda: torch.full((2, 3, 8, 8), 0.1, dtype=dtype),
              "near_flat": lambda: _near_flat(dtype)}[kind]()
    assert ncc_distance(images, images.clone()).item() == 0.0


@pytest.mark.parametrize("kind", ["random", "near_flat"])
def test_ncc_distance_of_negated_images_is_two(kind):
    a = torch.rand(2, 3, 8, 8, dtype=torch.float64) if kind == "random" else _near_flat(torch.float64)
    assert ncc_distance(-a, a).item() == pytest.approx(2.0, abs=1e-6)


def test_ncc_distance_of_flat_images_is_defined_with_finite_gradients():
    a = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    flat = torch.full((2, 3, 8, 8), 0.3, dtype=torch.float64, requires_grad=True)
    other_flat = torch.full((2, 3, 8, 8), 0.7, dtype=torch.float64, requires_grad=True)
    for x, y, expected in ((flat, flat, 0.0), (flat, other_flat, 0.0), (flat, a, 1.0), (a, other_flat, 1.0)):
        x.grad = y.grad = None
        value = ncc_distance(x, y)
        value.backward()
        assert value.item() == pytest.approx(expected, abs=1e-12)
        grads = [t.grad for t in (x, y) if t.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_ncc_distance_stays_in_zero_to_two():
    torch.manual_seed(0)
    a, b = torch.rand(50, 4, 8, 8), torch.rand(50, 4, 8, 8)
    for x, y in ((a, b), (a, -a), (a, 2.0 * a + 3.0), (a, a[:, :, :, [*range(1, 8), 0]])):
        for pair in zip(x, y, strict=True):
            value = ncc_distance(pair[0][None], pair[1][None]).item()
            assert 0.0 <= value <= 2.0


@pytest.mark.parametrize("metric", ["l1", "ncc"])
def test_gradients_reach_the_prediction_and_a_model(tiny_dataset, metric):
    ds = PatientDRRDataset(tiny_dataset, "train")
    batch = _batch(ds)
    loss = ProjectionConsistencyLoss(ds.input_spec(), metric=metric)
    pred = (0.8 * batch["ct"]).requires_grad_()
    loss(pred, batch["views"], batch["angles_deg"]).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0

    torch.manual_seed(0)
    model = nn.Conv3d(1, 1, kernel_size=3, padding=1)  # a stand-in generator on the true volume
    loss(model(batch["ct"]), batch["views"], batch["angles_deg"]).backward()
    for parameter in model.parameters():
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


def test_novel_view_term_is_the_metric_at_angles_from_the_global_rng(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    spec, batch = ds.input_spec(), _batch(ds)
    target = batch["ct"]
    pred = target + _block(target.shape, 0.1)
    args = (batch["views"], batch["angles_deg"])
    base = ProjectionConsistencyLoss(spec)(pred, *args)
    novel = ProjectionConsistencyLoss(spec, novel_views=3, novel_weight=0.5, novel_arc_deg=90.0)

    torch.manual_seed(7)
    value = novel(pred, *args, target=target)
    torch.manual_seed(7)
    again = novel(pred, *args, target=target)
    other_seed = novel(pred, *args, target=target)  # the RNG moved on: other angles
    torch.manual_seed(7)
    angles = random_angles(None, 3, 0.0, 90.0)
    geometry = spec.geometry.with_angles(angles)
    settings = {"hu_window": spec.hu_window, "mu_water": spec.mu_water, "spacing_mm": _spacing(spec),
                "geometry": geometry, "normalisation": spec.normalisation, "scale": spec.scale}
    expected = (render_projections(pred, **settings) - render_projections(target, **settings)).abs().mean()

    assert value.item() == again.item()
    assert other_seed.item() != value.item()
    assert expected.item() > 1e-3
    assert (value - base).item() == pytest.approx(0.5 * expected.item(), rel=1e-4)
    assert novel(target, *args, target=target).item() < 1e-5  # pred == target: both terms vanish


def test_samples_with_different_angles_are_rendered_at_their_own(tiny_dataset):
    torch.manual_seed(0)
    ds = PatientDRRDataset(tiny_dataset, "train", render_on_the_fly=True, angle_jitter_deg=20.0)
    batch = _batch(ds, 3)
    assert not torch.equal(batch["angles_deg"][0], batch["angles_deg"][1])
    loss = ProjectionConsistencyLoss(ds.input_spec())
    assert loss(batch["ct"], batch["views"], batch["angles_deg"]).item() < 1e-5
    pred = batch["ct"] + _block(batch["ct"].shape, 0.1) * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1, 1)
    together = loss(pred, batch["views"], batch["angles_deg"])
    apart = [loss(pred[i:i + 1], batch["views"][i:i + 1], batch["angles_deg"][i]) for i in range(3)]
    assert together.item() == pytest.approx(torch.stack(apart).mean().item(), rel=1e-5)


def test_angles_of_shape_v_are_shared_by_the_batch(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    batch = _batch(ds)
    loss = ProjectionConsistencyLoss(ds.input_spec())
    pred = batch["ct"] + _block(batch["ct"].shape, 0.1)
    assert loss(pred, batch["views"], batch["angles_deg"][0]).item() == pytest.approx(
        loss(pred, batch["views"], batch["angles_deg"]).item())


def test_errors_name_the_problem(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    spec, batch = ds.input_spec(), _batch(ds)
    ct, views, angles = batch["ct"], batch["views"], batch["angles_deg"]
    with pytest.raises(ValueError, match="input_spec is None"):
        ProjectionConsistencyLoss()(ct, views, angles)
    with pytest.raises(TypeError, match=r"input_spec is a dict; expected an x2ct\.data\.input_spec\.InputSpec"):
        ProjectionConsistencyLoss(spec.to_dict())
    # the trainer fills the spec in after building the component: the same loss as one built with it
    late = ProjectionConsistencyLoss()
    late.input_spec = spec
    assert late(ct + 0.1, views, angles).item() == ProjectionConsistencyLoss(spec)(ct + 0.1, views, angles).item()
    with pytest.raises(ValueError, match=r"unknown metric 'l2'; allowed metrics: \['l1', 'ncc'\]"):
        ProjectionConsistencyLoss(spec, metric="l2")
    small = F.interpolate(views[:, :, 0], size=(16, 16), mode="bilinear")[:, :, None]
    with pytest.raises(ValueError, match=r"rendered DRRs are \(32, 32\).*views are \(16, 16\).*view_size"):
        ProjectionConsistencyLoss(spec)(ct, small, angles)
    with pytest.raises(ValueError, match="novel_views=2 needs the target"):
        ProjectionConsistencyLoss(spec, novel_views=2)(ct, views, angles)
    with pytest.raises(ValueError, match=r"pred must be \(B, 1, \*input_spec\.ct_size\)"):
        ProjectionConsistencyLoss(spec)(ct[:, :, :12], views, angles)
    with pytest.raises(ValueError, match=r"angles_deg must be \(B, V\) = \(2, 2\)"):
        ProjectionConsistencyLoss(spec)(ct, views, angles[:, :1])


def test_the_registry_builds_it_by_name_with_arguments(tiny_dataset):
    spec = PatientDRRDataset(tiny_dataset, "train").input_spec()
    loss = build_loss_component("projection", input_spec=spec, metric="ncc", novel_views=2, novel_weight=0.25)
    assert isinstance(loss, ProjectionConsistencyLoss) and loss.uses_views
    assert (loss.metric, loss.novel_views, loss.novel_weight, loss.input_spec) == ("ncc", 2, 0.25, spec)


def test_the_backend_reaches_the_projector_and_a_bad_one_names_its_key(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    spec, batch = ds.input_spec(), _batch(ds)
    ct, views, angles = batch["ct"], batch["views"], batch["angles_deg"]
    with pytest.raises(ValueError, match=r"backend must be one of .*\(loss.components.projection.backend\), got "
                                         r"'cuda'"):
        ProjectionConsistencyLoss(spec, backend="cuda")
    # the fused kernels run on CUDA tensors or under the Triton interpreter only: a CPU tensor reaching them is
    # refused by render_drr (or, without Triton, its import), which proves the key got there
    with pytest.raises((ValueError, ImportError), match=r"TRITON_INTERPRET=1|pip install triton"):
        ProjectionConsistencyLoss(spec, backend="triton")(ct, views, angles)
    # "auto" on the CPU is the grid_sample path, bit for bit (tests/physics/test_fused_projector.py checks Triton's
    # sums against it under the interpreter)
    pred = (ct + _block(ct.shape, 0.1)).requires_grad_(True)
    auto, default = (ProjectionConsistencyLoss(spec, backend=b)(pred, views, angles) for b in ("auto", "grid_sample"))
    assert torch.equal(auto, default)
    assert torch.equal(*(torch.autograd.grad(value, pred)[0] for value in (auto, default)))


def test_the_shipped_losses_name_the_grid_sample_backend():
    for loss in ("l1", "medical_grade"):
        cfg = compose_config("train", [f"loss={loss}"])
        assert cfg.loss.components.projection.backend == "grid_sample"
        component = build_loss_component("projection", **cfg.loss.components.projection)
        assert component.backend == "grid_sample"
