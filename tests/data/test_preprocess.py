"""Preprocessing keeps world geometry exact: spheres keep their radius and centre in mm through every step."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from x2ct.data.ct_volume import CTVolume
from x2ct.data.preprocess import (
    Preprocessing,
    crop_or_pad,
    preprocess_ct,
    remove_bed,
    resample_isotropic,
    resize_to,
)

INSIDE_HU, OUTSIDE_HU = 1000.0, -1000.0


def voxel_centres(ct: CTVolume) -> np.ndarray:
    """World (x, y, z) mm of every voxel centre, shape (D, H, W, 3)."""
    d, h, w = (np.arange(n) for n in ct.shape)
    sd, sh, sw = ct.spacing
    x0, y0, z0 = ct.origin
    dd, hh, ww = np.meshgrid(d, h, w, indexing="ij")
    return np.stack([x0 + ww * sw, y0 + hh * sh, z0 + dd * sd], axis=-1)


def sphere_ct(shape, spacing, origin, centre, radius) -> CTVolume:
    """A ball of ``radius`` mm at world ``centre`` (x, y, z), INSIDE_HU in OUTSIDE_HU, with a one-voxel soft edge
    (partial volume) so that the equivalent radius is accurate."""
    ct = CTVolume(hu=np.zeros(shape, np.float32), spacing=spacing, origin=origin)
    dist = np.linalg.norm(voxel_centres(ct) - np.asarray(centre), axis=-1)
    # Linear ramp across one voxel (per axis average) approximates the partial-volume fraction.
    frac = np.clip(radius - dist + np.mean(spacing) / 2, 0, np.mean(spacing)) / np.mean(spacing)
    ct.hu[:] = OUTSIDE_HU + frac * (INSIDE_HU - OUTSIDE_HU)
    return ct


def sphere_stats(ct: CTVolume) -> tuple[np.ndarray, float]:
    """(centroid (x, y, z) mm, equivalent radius mm) of the ball, from the fraction of INSIDE_HU per voxel."""
    frac = np.clip((ct.hu - OUTSIDE_HU) / (INSIDE_HU - OUTSIDE_HU), 0, 1)
    volume = frac.sum() * np.prod(ct.spacing)
    centroid = (voxel_centres(ct) * frac[..., None]).sum(axis=(0, 1, 2)) / frac.sum()
    return centroid, float((3 * volume / (4 * np.pi)) ** (1 / 3))


def centre_of(ct: CTVolume) -> np.ndarray:
    """World (x, y, z) of the grid centre."""
    return np.asarray(ct.origin) + (np.array(ct.shape[::-1]) - 1) / 2 * np.array(ct.spacing[::-1])


@pytest.fixture
def ball() -> tuple[CTVolume, np.ndarray, float]:
    centre, radius = np.array([6.0, -9.0, 14.0]), 18.0
    ct = sphere_ct(shape=(30, 90, 110), spacing=(2.5, 0.8, 0.7), origin=(-40.0, -45.0, -20.0), centre=centre,
                   radius=radius)
    return ct, centre, radius


def test_sphere_fixture_is_accurate(ball):
    ct, centre, radius = ball
    got_centre, got_radius = sphere_stats(ct)
    np.testing.assert_allclose(got_centre, centre, atol=0.05)
    assert got_radius == pytest.approx(radius, abs=0.1)


def test_resample_isotropic_keeps_extent_centre_and_sphere(ball):
    ct, centre, radius = ball
    out = resample_isotropic(ct, 1.5)
    assert out.spacing == (1.5, 1.5, 1.5)
    assert out.shape == (50, 48, 51)  # round(75 / 1.5), round(72 / 1.5), round(77 / 1.5)
    np.testing.assert_allclose(centre_of(out), centre_of(ct), atol=1e-9)
    np.testing.assert_allclose(out.extent_mm, ct.extent_mm, atol=1.5)
    got_centre, got_radius = sphere_stats(out)
    np.testing.assert_allclose(got_centre, centre, atol=0.15)
    assert got_radius == pytest.approx(radius, abs=0.2)
    assert out.hu.dtype == np.float32


def test_resample_identity_spacing_is_exact():
    rng = np.random.default_rng(0)
    ct = CTVolume(hu=rng.normal(size=(5, 6, 7)).astype(np.float32), spacing=(2.0, 2.0, 2.0), origin=(1.0, 2.0, 3.0))
    out = resample_isotropic(ct, 2.0)
    np.testing.assert_allclose(out.hu, ct.hu, atol=1e-6)
    assert out.origin == ct.origin


def test_resample_linear_ramp_is_reproduced():
    """Linear interpolation reproduces a linear function of world position exactly (away from the edges)."""
    ct = CTVolume(hu=np.zeros((12, 20, 16), np.float32), spacing=(3.0, 1.0, 1.5), origin=(5.0, -3.0, 2.0))
    ramp = lambda xyz: 0.5 * xyz[..., 0] - 2.0 * xyz[..., 1] + 3.0 * xyz[..., 2]  # noqa: E731
    ct.hu[:] = ramp(voxel_centres(ct))
    out = resample_isotropic(ct, 1.2)
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(out.hu[inner], ramp(voxel_centres(out))[inner], atol=1e-3)


def test_resize_to_keeps_extent_and_sphere(ball):
    ct, centre, radius = ball
    iso = resample_isotropic(ct, 1.0)
    out = resize_to(iso, (40, 50, 60))
    assert out.shape == (40, 50, 60)
    np.testing.assert_allclose(out.extent_mm, iso.extent_mm, rtol=1e-12)
    np.testing.assert_allclose(centre_of(out), centre_of(iso), atol=1e-9)
    got_centre, got_radius = sphere_stats(out)
    np.testing.assert_allclose(got_centre, centre, atol=0.2)
    assert got_radius == pytest.approx(radius, abs=0.3)


def test_resize_to_exact_extent(ball):
    ct, centre, _ = ball
    fov = crop_or_pad(resample_isotropic(ct, 1.3), fov_mm=(80.0, 96.0, 96.0))
    assert fov.extent_mm != pytest.approx((80.0, 96.0, 96.0))  # 62 * 1.3 = 80.6, 74 * 1.3 = 96.2
    out = resize_to(fov, (40, 48, 48), extent_mm=(80.0, 96.0, 96.0))
    np.testing.assert_allclose(out.spacing, (2.0, 2.0, 2.0), rtol=1e-12)
    np.testing.assert_allclose(centre_of(out), centre_of(fov), atol=1e-9)
    np.testing.assert_allclose(sphere_stats(out)[0], centre, atol=0.3)
    with pytest.raises(ValueError, match="more than one voxel on axis D"):
        resize_to(fov, (40, 48, 48), extent_mm=(90.0, 96.0, 96.0))


def test_crop_or_pad_shape_values_and_origin():
    hu = np.arange(20 * 10 * 8, dtype=np.float32).reshape(20, 10, 8)
    ct = CTVolume(hu=hu, spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    out = crop_or_pad(ct, fov_mm=(24.0, 32.0, 16.0), pad_hu=-1234.0)  # D: 20 -> 12, H: 10 -> 16, W: 8 -> 8
    assert out.shape == (12, 16, 8)
    np.testing.assert_array_equal(out.hu[:, 3:13, :], hu[4:16])  # D cropped by 4 each side, H padded by 3
    assert np.all(out.hu[:, :3] == -1234.0) and np.all(out.hu[:, 13:] == -1234.0)
    # Every kept voxel keeps its world position: new voxel (0, 3, 0) is old voxel (4, 0, 0).
    assert out.origin == (0.0, -6.0, 8.0)
    np.testing.assert_allclose(centre_of(out), centre_of(ct), atol=1.0)  # within half a voxel per axis


def test_crop_or_pad_scalar_fov_and_sphere(ball):
    ct = ball[0]
    iso = resample_isotropic(ct, 1.0)
    out = crop_or_pad(iso, fov_mm=100.0)
    assert out.shape == (100, 100, 100)
    assert np.all(out.hu[:10] == -1000.0)  # D (75 mm) padded with the default pad value
    got_centre, got_radius = sphere_stats(out)
    np.testing.assert_allclose(got_centre, sphere_stats(iso)[0], atol=1e-6)
    assert got_radius == pytest.approx(sphere_stats(iso)[1], abs=1e-6)


def body_and_table_ct() -> tuple[CTVolume, dict[str, np.ndarray]]:
    """Elliptic body (40 HU) with two lungs (-850 HU) inside, 6 mm of air above (anterior of) a 200 HU table slab,
    and a 1 mm table cover sheet touching the body's back. Returns the CT and boolean masks of each part."""
    shape, spacing = (10, 80, 100), (2.0, 1.0, 1.0)
    _, h, w = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    body = ((h - 45) / 25.0) ** 2 + ((w - 50) / 40.0) ** 2 <= 1  # H from 20 to 70: posterior side at low H
    lungs = body & ((((h - 47) / 12.0) ** 2 + ((np.abs(w - 50) - 18) / 10.0) ** 2) <= 1)
    slab = (h >= 8) & (h < 14) & (w >= 5) & (w < 95)
    cover = (h == 20) & (w >= 5) & (w < 95) & ~body
    hu = np.full(shape, -1000.0, np.float32)
    hu[slab | cover] = 200.0
    hu[body] = 40.0
    hu[lungs] = -850.0
    # The opening restores cover voxels within its radius of the back; far from the contact the cover must go.
    far_cover = cover & (np.abs(w - 50) > 25)
    masks = {"body": body, "lungs": lungs, "slab": slab, "cover": cover, "far_cover": far_cover}
    return CTVolume(hu=hu, spacing=spacing), masks


def test_remove_bed_keeps_body_and_lungs_removes_table():
    ct, m = body_and_table_ct()
    out = remove_bed(ct)
    np.testing.assert_array_equal(out.hu[m["body"]], ct.hu[m["body"]])  # soft tissue and lungs untouched
    assert np.all(out.hu[m["lungs"]] == -850.0)
    assert np.all(out.hu[m["slab"] | m["far_cover"]] == -1000.0)
    assert np.all(out.hu[~m["body"] & ~m["cover"]] == -1000.0)


def test_remove_bed_without_opening_keeps_a_touching_cover():
    ct, m = body_and_table_ct()
    out = remove_bed(ct, opening_mm=0.0)
    assert np.all(out.hu[m["slab"]] == -1000.0)  # the detached slab goes
    assert np.all(out.hu[m["cover"]] == 200.0)  # the cover, connected to the body, stays


def test_remove_bed_rejects_empty_volume():
    ct = CTVolume(hu=np.full((4, 4, 4), -1000.0, np.float32), spacing=(1.0, 1.0, 1.0), source="air.nii.gz")
    with pytest.raises(ValueError, match=r"air\.nii\.gz"):
        remove_bed(ct)


def test_preprocess_ct_pipeline(ball):
    ct, centre, radius = ball
    cfg = Preprocessing(spacing_mm=1.0, fov_mm=(80.0, 96.0, 96.0), size=(40, 48, 48), hu_window=(-1000, 1000))
    out = preprocess_ct(ct, cfg)
    assert out.shape == (40, 48, 48)
    np.testing.assert_allclose(out.spacing, (2.0, 2.0, 2.0))
    got_centre, got_radius = sphere_stats(out)
    np.testing.assert_allclose(got_centre, centre, atol=0.3)
    assert got_radius == pytest.approx(radius, abs=0.4)
    record = json.loads(json.dumps(out.metadata))["preprocessing"]
    assert record["input_shape"] == [30, 90, 110]
    assert record["input_spacing"] == [2.5, 0.8, 0.7]
    assert record["fov_mm"] == [80.0, 96.0, 96.0]
    assert record["size"] == [40, 48, 48]
    assert record["hu_window"] == [-1000, 1000]
    assert record["remove_bed"] is False


def test_preprocess_ct_spans_the_fov_exactly(ball):
    """spacing_mm that does not divide the field of view: the output still spans fov_mm (spacing fov / size)."""
    ct, centre, radius = ball
    cfg = Preprocessing(spacing_mm=1.3, fov_mm=(80.0, 96.0, 96.0), size=(40, 48, 48), hu_window=(-1000, 1000))
    out = preprocess_ct(ct, cfg)
    np.testing.assert_allclose(out.extent_mm, (80.0, 96.0, 96.0), rtol=1e-12)
    np.testing.assert_allclose(centre_of(out), centre_of(ct), atol=1.3 / 2 + 1e-9)  # within half a voxel
    got_centre, got_radius = sphere_stats(out)
    np.testing.assert_allclose(got_centre, centre, atol=0.3)
    assert got_radius == pytest.approx(radius, abs=0.4)


def test_preprocess_ct_with_bed_removal():
    ct, _ = body_and_table_ct()
    cfg = Preprocessing(spacing_mm=1.0, fov_mm=100.0, size=50, hu_window=(-1000, 1000), remove_bed=True)
    out = preprocess_ct(ct, cfg)
    kept = preprocess_ct(ct, dataclasses.replace(cfg, remove_bed=False))
    assert out.shape == kept.shape == (50, 50, 50)
    y = voxel_centres(out)[..., 1]
    slab = (y >= 9.0) & (y <= 12.0)  # the table slab spans y = 8..13 mm
    assert np.all(out.hu[slab] == -1000.0)
    assert kept.hu[slab].max() == pytest.approx(200.0)
    assert out.metadata["preprocessing"]["remove_bed"] is True


@pytest.mark.parametrize(("field", "value"), [
    ("spacing_mm", 0.0), ("fov_mm", (100.0, -1.0, 100.0)), ("size", (64, 64)), ("size", 0),
    ("hu_window", (100.0, 100.0)),
])
def test_preprocessing_rejects_bad_values(field, value):
    kwargs = {"spacing_mm": 1.0, "fov_mm": 100.0, "size": 64, "hu_window": (-1000.0, 1000.0), field: value}
    with pytest.raises(ValueError, match=field):
        Preprocessing(**kwargs)
