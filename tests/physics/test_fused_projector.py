"""The fused Triton projector against ``render_drr``'s grid_sample path, closed-form chords and autograd.

Triton decides whether a kernel is interpreted when the kernel is defined (``TRITON_INTERPRET`` at the first
import of x2ct/physics/fused_projector.py), and pytest imports every test module into one process; so each slow
test runs its ``check_*`` function in a fresh Python with ``TRITON_INTERPRET=1`` (the kernels then run on CPU
tensors) instead of setting the variable for every module here. With CUDA the same checks run in-process on the
GPU (``gpu`` marker). The interpreter is slow (milliseconds per Triton operation), hence the small volumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import DRRProjector, plan_rays, render_drr
from x2ct.physics.volume_projections import render_projections

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(find_spec("triton") is None,
                                  reason="the fused projector needs Triton: pip install triton")
# float32 sums of up to 40 planes in another order than grid_sample's: relative to the image's maximum
RTOL_FLOAT32 = 1e-5
RTOL_FLOAT64 = 1e-12


def _cases() -> list[tuple[ProjectionGeometry, tuple[int, int, int], tuple[float, float, float], int]]:
    """(geometry, volume shape (D, H, W), spacing (D, H, W) mm, batch): cone and parallel beams, non-cubic
    volumes with anisotropic voxels, several views, and between them rays along each of the three world axes."""
    return [
        (ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0, 33.0, 200.0), detector_shape=(10, 12),
                            pixel_spacing_mm=(3.0, 2.5), source_to_isocenter_mm=200.0, source_to_detector_mm=350.0,
                            detector_offset_mm=(2.0, -3.0)), (16, 20, 24), (1.0, 1.1, 0.9), 2),
        (ProjectionGeometry(kind="parallel", angles_deg=(30.0, 120.0, 300.0), detector_shape=(12, 10),
                            pixel_spacing_mm=(2.0, 2.5)), (20, 16, 18), (1.2, 1.5, 1.0), 3),
        # source close to a tall volume: the outer detector rows see it through rays that run mostly along z
        (ProjectionGeometry(kind="cone", angles_deg=(0.0, 70.0), detector_shape=(12, 6), pixel_spacing_mm=(7.0, 3.0),
                            source_to_isocenter_mm=10.0, source_to_detector_mm=20.0), (40, 12, 12),
         (1.0, 1.0, 1.0), 1),
    ]


def _tiny_case() -> tuple[ProjectionGeometry, tuple[int, int, int], tuple[float, float, float], int]:
    """Two ray groups of one Triton program each, for checks that render many times."""
    geometry = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(6, 8),
                                  pixel_spacing_mm=(3.0, 3.0), source_to_isocenter_mm=200.0,
                                  source_to_detector_mm=350.0)
    return geometry, (8, 10, 12), (1.0, 1.1, 0.9), 2


def _assert_close_to_max(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    scale = expected.abs().max()
    assert scale > 0, f"{what}: the reference is all zeros"
    error = ((actual.double() - expected.double()).abs().max() / scale).item()
    assert error <= rtol, f"{what}: max difference {error:.2e} of the reference's maximum (allowed {rtol:.0e})"


def check_matches_grid_sample(device: str) -> None:
    """Forward and volume gradient (random upstream gradient) of backend='triton' equal the grid_sample path's."""
    torch.manual_seed(0)
    axes = set()
    for geometry, shape, spacing, batch in _cases():
        axes |= {group.world_axis for group in plan_rays(geometry, shape, spacing, device=device).groups}
        for dtype, rtol in ((torch.float32, RTOL_FLOAT32), (torch.float64, RTOL_FLOAT64)):
            volume = torch.rand(batch, 1, *shape, dtype=dtype, device=device, requires_grad=True)
            expected = render_drr(volume, spacing, geometry)
            fused = render_drr(volume, spacing, geometry, backend="triton")
            what = f"{geometry.kind} {shape} {dtype}"
            assert fused.dtype == dtype and fused.shape == (batch, geometry.num_views, *geometry.detector_shape)
            _assert_close_to_max(fused, expected, rtol, f"{what} forward")
            upstream = torch.randn_like(expected)
            (grad_expected,) = torch.autograd.grad(expected, volume, upstream)
            (grad_fused,) = torch.autograd.grad(fused, volume, upstream)
            _assert_close_to_max(grad_fused, grad_expected, rtol, f"{what} volume gradient")
    assert axes == {0, 1, 2}, f"the cases march along world axes {sorted(axes)} only"


def check_volume_projections_take_the_backend(device: str) -> None:
    """``render_projections`` (the projection loss's and the projection discriminator's renderer) with
    backend='triton' equals its grid_sample default, forward and volume gradient."""
    torch.manual_seed(2)
    geometry, shape, spacing, batch = _tiny_case()
    volume = torch.rand(batch, 1, *shape, device=device, requires_grad=True)
    settings = {"hu_window": (-1000.0, 1000.0), "mu_water": 0.02, "spacing_mm": spacing, "geometry": geometry,
                "normalisation": "fixed", "scale": 3.0}
    expected = render_projections(volume, **settings)
    fused = render_projections(volume, **settings, backend="triton")
    _assert_close_to_max(fused, expected, RTOL_FLOAT32, "render_projections forward")
    upstream = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad(expected, volume, upstream)
    (grad_fused,) = torch.autograd.grad(fused, volume, upstream)
    _assert_close_to_max(grad_fused, grad_expected, RTOL_FLOAT32, "render_projections volume gradient")


def check_layouts_precisions_and_plans(device: str) -> None:
    """A strided volume is read in place, bf16 renders in float32, a cached plan and ``DRRProjector`` agree."""
    torch.manual_seed(1)
    geometry, shape, spacing, batch = _cases()[0]
    reference = torch.rand(batch, 1, *shape, device=device)
    expected = render_drr(reference, spacing, geometry)
    # the same values with W outermost in memory
    strided = reference.transpose(2, 4).contiguous().transpose(2, 4).requires_grad_(True)
    assert not strided.is_contiguous()
    fused = render_drr(strided, spacing, geometry, backend="triton")
    _assert_close_to_max(fused, expected, RTOL_FLOAT32, "strided volume forward")
    upstream = torch.randn_like(expected)
    (grad_strided,) = torch.autograd.grad(fused, strided, upstream)
    (grad_expected,) = torch.autograd.grad(render_drr(reference.requires_grad_(True), spacing, geometry),
                                           reference, upstream)
    _assert_close_to_max(grad_strided, grad_expected, RTOL_FLOAT32, "strided volume gradient")

    low = reference.detach().bfloat16().requires_grad_(True)
    fused_low = render_drr(low, spacing, geometry, backend="triton")
    assert fused_low.dtype == torch.float32
    _assert_close_to_max(fused_low, render_drr(low.detach().float(), spacing, geometry), RTOL_FLOAT32, "bf16")
    fused_low.sum().backward()
    assert low.grad.dtype == torch.bfloat16

    plan = plan_rays(geometry, shape, spacing, device=device)
    volume = reference.detach()
    assert torch.equal(render_drr(volume, spacing, geometry, plan=plan, backend="triton"),
                       render_drr(volume, spacing, geometry, backend="triton"))
    # the module renders from rays it caches in the volume's dtype
    assert torch.equal(DRRProjector(geometry, spacing, backend="triton")(volume),
                       render_drr(volume, spacing, geometry, rays=geometry.rays(device=device), backend="triton"))


def check_closed_form_chords(device: str) -> None:
    """test_projector.py's exact-integration checks on the fused kernels, at sizes the interpreter affords: a
    coarser voxel model than there, so a looser bound (what the grid_sample path reaches at these sizes)."""
    from tests.physics.test_projector import assert_matches_ellipsoid_chords, sphere_central_rays, voxelised_ellipsoid

    mu = 0.02
    for kind in ("cone", "parallel"):
        extra = {"source_to_isocenter_mm": 400.0, "source_to_detector_mm": 700.0} if kind == "cone" else {}
        geometry = ProjectionGeometry(kind=kind, angles_deg=(0.0, 90.0, 33.0, 200.0), detector_shape=(17, 17),
                                      pixel_spacing_mm=(6.5, 6.5), detector_offset_mm=(0.7, -1.3), **extra)
        for shape, spacing, semi_axes in (((32, 32, 32), (1.75, 1.75, 1.75), (24.5, 24.5, 24.5)),
                                          ((28, 36, 32), (2.0, 1.25, 1.5), (19.0, 18.0, 25.0))):
            volume = torch.from_numpy(voxelised_ellipsoid(shape, spacing, semi_axes) * mu)[None, None].to(device)
            image = render_drr(volume, spacing, geometry, backend="triton")
            _assert_close_to_max(image, render_drr(volume, spacing, geometry), RTOL_FLOAT64, f"{kind} {shape}")
            # more than a voxel of partial volume plus one of interpolation away from the ellipsoid is zero
            assert_matches_ellipsoid_chords(image[0].cpu().numpy(), geometry, semi_axes, mu, max_relative=0.02,
                                            miss_margin=1.25, min_rays=(50, 200), what=f"{kind} {shape}")

    centre = sphere_central_rays(mu, 15.0, device, backend="triton")
    torch.testing.assert_close(centre, torch.full_like(centre, mu * 2 * 15.0), rtol=5e-3, atol=0)


def check_compiles_to_one_node_per_ray_group(device: str) -> None:
    """``torch.compile(fullgraph=True)`` sees the kernel as one op per ray group and computes what eager does."""
    geometry, shape, spacing, batch = _tiny_case()  # opcheck runs the kernels a dozen times
    plan = plan_rays(geometry, shape, spacing, device=device)

    def render(volume: torch.Tensor) -> torch.Tensor:
        return render_drr(volume, spacing, geometry, plan=plan, backend="triton")

    graphs = []

    def aot_eager_recording_graphs(graph_module, example_inputs):
        graphs.append(graph_module)
        return torch._dynamo.lookup_backend("aot_eager")(graph_module, example_inputs)

    torch.manual_seed(2)
    volume = torch.rand(batch, 1, *shape, device=device, requires_grad=True)
    compiled = torch.compile(render, fullgraph=True, backend=aot_eager_recording_graphs)(volume)
    (graph,) = graphs
    calls = [node for node in graph.graph.nodes if "joseph_line_integrals" in str(node.target)]
    assert len(calls) == len(plan.groups) == 2, graph.code

    expected = render(volume)
    _assert_close_to_max(compiled, expected, RTOL_FLOAT32, "aot_eager forward")
    upstream = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad(expected, volume, upstream)
    (grad_compiled,) = torch.autograd.grad(compiled, volume, upstream)
    _assert_close_to_max(grad_compiled, grad_expected, RTOL_FLOAT32, "aot_eager volume gradient")

    # schema, fake tensor, autograd registration and AOT dispatch of the op itself
    group = plan.groups[0]
    planes = torch.rand(shape[2], batch, shape[0], shape[1], device=device, requires_grad=True)
    result = torch.library.opcheck(torch.ops.x2ct.joseph_line_integrals.default,
                                   (planes, group.base, group.slope, group.length_per_plane, group.plane_mm))
    assert all(outcome == "SUCCESS" for outcome in result.values()), result


def check_refusals(device: str) -> None:
    """No geometry gradient, and ``torch.use_deterministic_algorithms`` is honoured, each with a clear message."""
    geometry, shape, spacing, batch = _tiny_case()
    volume = torch.rand(batch, 1, *shape, device=device, requires_grad=True)
    rays = tuple(r.requires_grad_(True) for r in geometry.rays(device=device))
    with pytest.raises(ValueError, match=r"requires grad.*backend='grid_sample'"):
        render_drr(volume, spacing, geometry, rays=rays, backend="triton")
    with torch.no_grad():  # nothing to differentiate: the geometry's requires_grad does not matter
        _assert_close_to_max(render_drr(volume, spacing, geometry, rays=rays, backend="triton"),
                             render_drr(volume, spacing, geometry), RTOL_FLOAT32, "no_grad forward")

    fused = render_drr(volume, spacing, geometry, backend="triton")
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="not deterministic"):
            torch.autograd.grad(fused.sum(), volume, retain_graph=True)
        torch.use_deterministic_algorithms(True, warn_only=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.autograd.grad(fused.sum(), volume)
        assert any("not deterministic" in str(w.message) for w in caught)
    finally:
        torch.use_deterministic_algorithms(False)


def check_cpu_tensors_need_the_interpreter(device: str) -> None:
    geometry, shape, spacing, batch = _cases()[1]
    with pytest.raises(ValueError, match=r"CUDA tensors.*TRITON_INTERPRET=1"):
        render_drr(torch.rand(batch, 1, *shape, device=device), spacing, geometry, backend="triton")


def _in_fresh_python(check: str, *, interpret: bool) -> None:
    """Run ``check('cpu')`` of this module in a new interpreter, with or without ``TRITON_INTERPRET=1``."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    code = f"import {__name__} as module; module.{check}('cpu')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (f"{check} failed (TRITON_INTERPRET={int(interpret)}):\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-6000:]}")


INTERPRETED_CHECKS = ["check_matches_grid_sample", "check_layouts_precisions_and_plans", "check_closed_form_chords",
                      "check_compiles_to_one_node_per_ray_group", "check_refusals",
                      "check_volume_projections_take_the_backend"]


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("check", INTERPRETED_CHECKS)
def test_fused_projector_under_the_triton_interpreter(check):
    _in_fresh_python(check, interpret=True)


@pytest.mark.slow
@needs_triton
def test_cpu_tensors_without_the_interpreter_are_refused():
    _in_fresh_python("check_cpu_tensors_need_the_interpreter", interpret=False)


@pytest.mark.gpu
@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_projector_on_cuda():
    for check in INTERPRETED_CHECKS:
        globals()[check]("cuda")
    # "auto" is the fused path on CUDA (its forward is deterministic: one ray, one sum), and the grid_sample
    # path where the geometry needs a gradient
    geometry, shape, spacing, batch = _cases()[0]
    volume = torch.rand(batch, 1, *shape, device="cuda")
    assert torch.equal(render_drr(volume, spacing, geometry, backend="auto"),
                       render_drr(volume, spacing, geometry, backend="triton"))
    rays = tuple(r.requires_grad_(True) for r in geometry.rays(device="cuda"))
    auto = render_drr(volume, spacing, geometry, rays=rays, backend="auto")
    assert torch.equal(auto, render_drr(volume, spacing, geometry, rays=rays))
    assert torch.autograd.grad(auto.sum(), rays[1])[0].abs().sum() > 0


def test_auto_on_the_cpu_is_the_grid_sample_path_bit_for_bit():
    geometry, shape, spacing, batch = _cases()[0]
    volume = torch.rand(batch, 1, *shape, requires_grad=True)
    auto = render_drr(volume, spacing, geometry, backend="auto")
    default = render_drr(volume, spacing, geometry)
    assert torch.equal(auto, default)
    upstream = torch.randn_like(auto)
    assert torch.equal(torch.autograd.grad(auto, volume, upstream)[0],
                       torch.autograd.grad(default, volume, upstream)[0])
    assert torch.equal(DRRProjector(geometry, spacing, backend="auto")(volume),
                       render_drr(volume, spacing, geometry, rays=geometry.rays()))


def test_unknown_backends_are_named():
    geometry, shape, spacing, batch = _cases()[1]
    with pytest.raises(ValueError, match=r"backend must be one of.*'cuda'"):
        render_drr(torch.rand(batch, 1, *shape), spacing, geometry, backend="cuda")
    with pytest.raises(ValueError, match="DRRProjector: backend"):
        DRRProjector(geometry, spacing, backend="fused")


def test_missing_triton_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # what `import triton` finds where it is not installed
    monkeypatch.delitem(sys.modules, "x2ct.physics.fused_projector", raising=False)
    geometry, shape, spacing, batch = _cases()[1]
    with pytest.raises(ImportError, match="pip install triton"):
        render_drr(torch.rand(batch, 1, *shape), spacing, geometry, backend="triton")
