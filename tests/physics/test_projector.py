"""The projector against independent references: closed-form chords, skimage's Radon transform, autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import radon

from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import DRRProjector, plan_rays, render_drr


def voxelised_ellipsoid(shape, spacing, semi_axes, supersample=4):
    """Fraction of each voxel inside the ellipsoid x^2/a^2 + y^2/b^2 + z^2/c^2 <= 1 (centred), ``(D, H, W)``.

    ``semi_axes`` are (a, b, c) along world (x, y, z) = (W, H, D) in mm. Supersampling gives partial volumes,
    so the voxel model integrates like the continuous ellipsoid.
    """
    a, b, c = semi_axes
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = []
    for n, s in zip(shape, spacing, strict=True):
        centres = (np.arange(n) - (n - 1) / 2) * s
        axes.append((centres[:, None] + offsets[None, :] * s).ravel())
    z, y, x = axes
    inside = ((x[None, None, :] / a) ** 2 + (y[None, :, None] / b) ** 2 + (z[:, None, None] / c) ** 2) <= 1
    d, h, w = shape
    k = supersample
    return inside.reshape(d, k, h, k, w, k).mean(axis=(1, 3, 5))


def ellipsoid_chords(origins, directions, semi_axes):
    """Exact chord length of each ray through the ellipsoid, by the quadratic in t (closed form), and the
    ray's closest approach to the centre in units of the ellipsoid (> 1: the ray misses)."""
    scale = np.asarray(semi_axes, dtype=np.float64)
    o = origins / scale
    d = directions / scale
    qa = (d * d).sum(-1)
    qb = 2 * (o * d).sum(-1)
    qc = (o * o).sum(-1) - 1
    disc = qb * qb - 4 * qa * qc
    dt = np.sqrt(np.clip(disc, 0, None)) / qa
    closest = np.sqrt(np.clip((o * o).sum(-1) - (o * d).sum(-1) ** 2 / qa, 0, None))
    return dt * np.linalg.norm(directions, axis=-1), closest


def assert_matches_ellipsoid_chords(image: np.ndarray, geometry: ProjectionGeometry, semi_axes, mu: float, *,
                                    max_relative: float, miss_margin: float, min_rays: tuple[int, int],
                                    what: str = "") -> None:
    """``image`` ``(V, rows, cols)`` of a uniform ellipsoid of ``mu`` against its exact chords: within
    ``max_relative`` on the rays through the centre and off it, up to 80% of the way to the rim (where the chord is
    60% of the longest), and zero on the rays that miss the ellipsoid by more than ``miss_margin`` (in units of the
    ellipsoid: the interpolation's reach); ``min_rays`` = the least number of rays of each kind."""
    origins, directions = (r.numpy() for r in geometry.rays(dtype=torch.float64))
    chords, closest = ellipsoid_chords(origins, directions, semi_axes)
    expected = mu * chords
    inner = expected > 0.6 * expected.max()
    assert inner.sum() > min_rays[0], what
    relative = np.abs(image[inner] - expected[inner]) / expected[inner]
    assert relative.max() < max_relative, f"{what}: max relative error {relative.max():.4f}"
    missing = closest > miss_margin
    assert missing.sum() > min_rays[1], what
    assert np.abs(image[missing]).max() < 1e-12, what


def sphere_central_rays(mu: float, radius: float, device: str = "cpu", backend: str = "grid_sample") -> torch.Tensor:
    """The central pixel of two cone-beam views of a voxelised uniform sphere ``(2,)``: exactly ``mu * 2 * radius``
    for the continuous sphere."""
    volume = torch.from_numpy(voxelised_ellipsoid((33, 33, 33), (1.0,) * 3, (radius,) * 3, supersample=6) * mu)
    geometry = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(3, 3),
                                  pixel_spacing_mm=(1, 1), source_to_isocenter_mm=300.0, source_to_detector_mm=500.0)
    return render_drr(volume[None, None].to(device), (1.0, 1.0, 1.0), geometry, backend=backend)[0, :, 1, 1]


@pytest.mark.parametrize("kind", ["cone", "parallel"])
@pytest.mark.parametrize(
    ("shape", "spacing", "semi_axes"),
    [
        ((64, 64, 64), (1.0, 1.0, 1.0), (28.0, 28.0, 28.0)),  # sphere, isotropic voxels
        ((56, 72, 64), (1.5, 0.8, 1.0), (28.0, 26.0, 36.0)),  # ellipsoid, anisotropic voxels
    ],
)
def test_line_integrals_match_closed_form_chords(kind, shape, spacing, semi_axes):
    mu = 0.02
    vol = torch.from_numpy(voxelised_ellipsoid(shape, spacing, semi_axes) * mu)[None, None]
    extra = {"source_to_isocenter_mm": 400.0, "source_to_detector_mm": 700.0} if kind == "cone" else {}
    geom = ProjectionGeometry(kind=kind, angles_deg=(0.0, 90.0, 33.0, 200.0), detector_shape=(41, 41),
                              pixel_spacing_mm=(2.5, 2.5), detector_offset_mm=(0.7, -1.3), **extra)
    img = render_drr(vol.double(), spacing, geom)[0].numpy()
    assert_matches_ellipsoid_chords(img, geom, semi_axes, mu, max_relative=0.01, miss_margin=1.1,
                                    min_rays=(200, 100))


def test_central_ray_of_uniform_sphere_is_its_diameter():
    mu, radius = 0.03, 15.0
    centre = sphere_central_rays(mu, radius)
    torch.testing.assert_close(centre, torch.full_like(centre, mu * 2 * radius), rtol=5e-3, atol=0)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0, 250.0])
def test_parallel_beam_matches_skimage_radon_per_axial_slice(angle):
    rng = np.random.default_rng(0)
    n, slices, spacing = 63, 5, 1.0  # odd n: skimage rotates about pixel n // 2 == (n - 1) / 2
    from scipy.ndimage import gaussian_filter

    vol = gaussian_filter(rng.random((slices, n, n)), sigma=(0, 3, 3))
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    vol *= (np.hypot(xx, yy) < n / 2 - 4)[None]  # zero outside the inscribed circle, as radon(circle=True) needs
    geom = ProjectionGeometry(kind="parallel", angles_deg=(angle,), detector_shape=(slices, n),
                              pixel_spacing_mm=(spacing, spacing))
    img = render_drr(torch.from_numpy(vol)[None, None], (spacing,) * 3, geom)[0, 0].numpy()
    for k in range(slices):
        # skimage's ray direction in (col, row) = (x, y) is (sin t, cos t) and its detector axis is -ours at
        # t = -angle; the top image row is the most superior slice.
        reference = radon(vol[k], theta=[-angle], circle=True)[:, 0][::-1] * spacing
        ours = img[slices - 1 - k]
        err = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
        assert err < 0.01, f"slice {k}: relative L2 error {err:.4f}"


def test_frontal_and_lateral_orientation_as_a_radiologist_reads_them():
    # marker blobs: one at the patient's right (+x), one anterior (+y), one superior (+z)
    d = h = w = 31
    vol = torch.zeros(1, 1, d, h, w, dtype=torch.float64)
    c = 15
    vol[0, 0, c, c, c + 10] = 1.0  # patient right
    vol[0, 0, c, c + 10, c] = 2.0  # anterior
    vol[0, 0, c + 10, c, c] = 4.0  # superior
    geom = ProjectionGeometry(kind="parallel", angles_deg=(0.0, 90.0), detector_shape=(31, 31),
                              pixel_spacing_mm=(1.0, 1.0))
    img = render_drr(vol, (1.0, 1.0, 1.0), geom)[0]
    pa, lat = img[0], img[1]

    def where(image, value):
        r, col = np.unravel_index(np.argmin(np.abs(image.numpy() - value)), image.shape)
        return int(r), int(col)

    # PA: head up, patient's right on the image left
    assert where(pa, 4.0) == (c - 10, c)
    assert where(pa, 1.0) == (c, c - 10)
    # left lateral: head up, anterior on the image left
    assert where(lat, 4.0) == (c - 10, c)
    assert where(lat, 2.0) == (c, c - 10)


def test_gradients_flow_to_the_volume_gradcheck():
    torch.manual_seed(0)
    vol = torch.rand(2, 1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    for geom in (
        ProjectionGeometry(kind="cone", angles_deg=(10.0, 100.0), detector_shape=(3, 4),
                           pixel_spacing_mm=(2.0, 2.5), source_to_isocenter_mm=40.0, source_to_detector_mm=70.0),
        ProjectionGeometry(kind="parallel", angles_deg=(0.0, 45.0, 80.0), detector_shape=(4, 3),
                           pixel_spacing_mm=(1.2, 1.7)),
    ):
        assert torch.autograd.gradcheck(lambda v, g=geom: render_drr(v, (1.0, 1.2, 0.9), g), (vol,))


def _random_cone_case() -> tuple[torch.Tensor, ProjectionGeometry]:
    """A seeded random ``(2, 1, 16, 20, 24)`` volume and three cone-beam views of it, 17 x 19 pixels each."""
    torch.manual_seed(0)
    geom = ProjectionGeometry(kind="cone", angles_deg=(0.0, 45.0, 90.0), detector_shape=(17, 19),
                              pixel_spacing_mm=(2.0, 2.0), source_to_isocenter_mm=200.0, source_to_detector_mm=350.0)
    return torch.rand(2, 1, 16, 20, 24), geom


def test_chunking_does_not_change_the_result():
    vol, geom = _random_cone_case()
    whole = render_drr(vol, (1.0, 1.0, 1.0), geom)
    chunked = render_drr(vol, (1.0, 1.0, 1.0), geom, max_elements=2000)
    torch.testing.assert_close(chunked, whole)
    # each batch item is rendered independently
    torch.testing.assert_close(render_drr(vol[1:], (1.0, 1.0, 1.0), geom), whole[1:])


def test_half_precision_volumes_render_in_float32():
    torch.manual_seed(0)
    vol = torch.rand(1, 1, 32, 32, 32)
    geom = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(24, 24),
                              pixel_spacing_mm=(4.0, 4.0), source_to_isocenter_mm=500.0, source_to_detector_mm=800.0)
    reference = render_drr(vol.bfloat16().float(), (2.0, 2.0, 2.0), geom)
    low = vol.bfloat16().requires_grad_(True)
    out = render_drr(low, (2.0, 2.0, 2.0), geom)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference)
    out.sum().backward()
    assert low.grad.dtype == torch.bfloat16


def test_projector_module_caches_rays_and_matches_function():
    vol = torch.rand(1, 1, 8, 8, 8)
    geom = ProjectionGeometry(kind="parallel", angles_deg=(0.0, 90.0), detector_shape=(8, 8), pixel_spacing_mm=(1, 1))
    proj = DRRProjector(geom, (1.0, 1.0, 1.0))
    torch.testing.assert_close(proj(vol), render_drr(vol, (1.0, 1.0, 1.0), geom))
    torch.testing.assert_close(proj(vol.bfloat16()), render_drr(vol.bfloat16(), (1.0, 1.0, 1.0), geom))
    assert len(proj._rays) == 1  # float32 and bfloat16 volumes share the float32 rays


def test_a_precomputed_plan_renders_the_same_image_bit_for_bit():
    torch.manual_seed(0)
    vol = torch.rand(2, 1, 16, 20, 24)
    spacing = (1.0, 1.1, 0.9)
    for geom in (
        ProjectionGeometry(kind="cone", angles_deg=(0.0, 45.0, 90.0, 200.0), detector_shape=(17, 19),
                           pixel_spacing_mm=(2.0, 2.0), source_to_isocenter_mm=200.0, source_to_detector_mm=350.0,
                           detector_offset_mm=(3.0, -2.0)),
        ProjectionGeometry(kind="parallel", angles_deg=(30.0, 120.0), detector_shape=(9, 11),
                           pixel_spacing_mm=(2.5, 2.0)),
    ):
        plan = plan_rays(geom, vol.shape[2:], spacing)
        for max_elements in (None, 2000):
            assert torch.equal(render_drr(vol, spacing, geom, plan=plan, max_elements=max_elements),
                               render_drr(vol, spacing, geom, max_elements=max_elements))


def test_a_plan_for_another_call_is_refused():
    geom = ProjectionGeometry(kind="parallel", angles_deg=(0.0, 90.0), detector_shape=(8, 8), pixel_spacing_mm=(1, 1))
    vol = torch.rand(1, 1, 8, 8, 8)
    plan = plan_rays(geom, (8, 8, 8), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="volume shape"):
        render_drr(torch.rand(1, 1, 8, 8, 6), (1.0, 1.0, 1.0), geom, plan=plan)
    with pytest.raises(ValueError, match="spacing"):
        render_drr(vol, (1.0, 2.0, 1.0), geom, plan=plan)
    with pytest.raises(ValueError, match="another geometry"):
        render_drr(vol, (1.0, 1.0, 1.0), geom.with_angles([0.0, 45.0]), plan=plan)
    with pytest.raises(ValueError, match="float64"):
        render_drr(vol.double(), (1.0, 1.0, 1.0), geom, plan=plan)
    with pytest.raises(ValueError, match="not both"):
        render_drr(vol, (1.0, 1.0, 1.0), geom, plan=plan, rays=geom.rays())


@pytest.mark.parametrize(
    ("volume", "spacing", "message"),
    [
        (torch.zeros(8, 8, 8), (1, 1, 1), r"\(B, 1, D, H, W\)"),
        (torch.zeros(1, 2, 8, 8, 8), (1, 1, 1), r"\(B, 1, D, H, W\)"),
        (torch.zeros(1, 1, 8, 8, 8), (1, 0, 1), "spacing_mm"),
        (torch.zeros(1, 1, 8, 8, 8, dtype=torch.int32), (1, 1, 1), "floating-point"),
    ],
)
def test_bad_inputs_are_named(volume, spacing, message):
    geom = ProjectionGeometry(kind="parallel", angles_deg=(0.0,), detector_shape=(4, 4), pixel_spacing_mm=(1, 1))
    with pytest.raises((ValueError, TypeError), match=message):
        render_drr(volume, spacing, geom)


def test_source_inside_the_volume_is_rejected():
    geom = ProjectionGeometry(kind="cone", angles_deg=(0.0,), detector_shape=(4, 4), pixel_spacing_mm=(1, 1),
                              source_to_isocenter_mm=50.0, source_to_detector_mm=400.0)
    with pytest.raises(ValueError, match="source_to_isocenter_mm"):
        render_drr(torch.zeros(1, 1, 8, 128, 128), (1, 1, 1), geom)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_backpropagates():
    vol, geom = _random_cone_case()
    cpu = render_drr(vol, (1.0, 1.1, 0.9), geom)
    gpu_vol = vol.cuda().requires_grad_(True)
    gpu = render_drr(gpu_vol, (1.0, 1.1, 0.9), geom)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    gpu.sum().backward()
    assert gpu_vol.grad is not None and torch.isfinite(gpu_vol.grad).all()
