from __future__ import annotations

import math

import pytest
import torch

from x2ct.physics.geometry import ProjectionGeometry

ANGLES = (0.0, 30.0, 90.0, 137.5, 180.0, 271.0)
PIXELS = [(0, 0), (3, 11), (9, 2), (15, 23)]


def geometry(kind: str, **kw) -> ProjectionGeometry:
    args = {"kind": kind, "angles_deg": ANGLES, "detector_shape": (16, 24), "pixel_spacing_mm": (1.5, 2.0)}
    if kind == "cone":
        args.update(source_to_isocenter_mm=400.0, source_to_detector_mm=650.0)
    args.update(kw)
    return ProjectionGeometry(**args)


@pytest.mark.parametrize("kind", ["cone", "parallel"])
@pytest.mark.parametrize("offset", [(0.0, 0.0), (4.5, -7.0)])
def test_points_along_a_pixels_ray_project_onto_that_pixel(kind, offset):
    g = geometry(kind, detector_offset_mm=offset)
    origins, directions = g.rays(dtype=torch.float64)
    # points from near the source (cone) / far in front of the detector (parallel) to beyond the detector
    t = torch.tensor([0.05, 0.3, 0.5, 0.77, 1.0, 1.4], dtype=torch.float64)
    if kind == "parallel":
        t = (t - 0.5) * 600.0  # directions are unit vectors: mm either side of the detector plane
    for r, c in PIXELS:
        pts = origins[:, r, c, None, :] + t[None, :, None] * directions[:, r, c, None, :]  # (V, T, 3)
        proj = g.project(pts)  # (V, V, T, 2): every view's points in every view
        own = proj[torch.arange(g.num_views), torch.arange(g.num_views)]  # (V, T, 2)
        expected = torch.tensor([float(r), float(c)], dtype=torch.float64).expand_as(own)
        torch.testing.assert_close(own, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["cone", "parallel"])
def test_detector_offset_moves_the_projection_by_offset_over_spacing(kind):
    pts = torch.tensor([[10.0, -20.0, 30.0], [-5.0, 3.0, 0.0]], dtype=torch.float64)
    base = geometry(kind).project(pts)
    shifted = geometry(kind, detector_offset_mm=(3.0, -4.0)).project(pts)
    # the detector centre moves (3 mm toward the feet, 4 mm toward image-left): the image moves the opposite way
    delta = torch.tensor([-3.0 / 1.5, 4.0 / 2.0], dtype=torch.float64)
    torch.testing.assert_close(shifted - base, delta.expand_as(base), atol=1e-9, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 211.0])
@pytest.mark.parametrize("kind", ["cone", "parallel"])
def test_offset_in_the_isocentre_plane_is_magnified(angle, kind):
    g = geometry(kind, angles_deg=(angle,))
    e_s, u, v = g.frames(torch.float64)
    centre = torch.tensor([(16 - 1) / 2, (24 - 1) / 2], dtype=torch.float64)
    torch.testing.assert_close(g.project(torch.zeros(3, dtype=torch.float64))[0], centre)
    x = 7.0  # mm, in the plane through the isocentre parallel to the detector
    along_u = g.project(x * u[0])[0]
    along_v = g.project(x * v[0])[0]
    m = g.magnification
    torch.testing.assert_close(along_u, centre + torch.tensor([0.0, x * m / 2.0], dtype=torch.float64))
    torch.testing.assert_close(along_v, centre + torch.tensor([x * m / 1.5, 0.0], dtype=torch.float64))
    # moving along the beam axis changes nothing for a parallel beam, and scales by SDD / depth for a cone
    toward_source = g.project(x * u[0] + 100.0 * e_s[0])[0]
    scale = 1.0 if kind == "parallel" else 650.0 / (400.0 - 100.0)
    torch.testing.assert_close(toward_source, centre + torch.tensor([0.0, x * scale / 2.0], dtype=torch.float64))


def test_projection_follows_the_display_convention():
    # PA (0): patient right (+x) on image left, head (+z) at the top; left lateral (90): anterior (+y) on image left
    g = geometry("parallel", angles_deg=(0.0, 90.0))
    pts = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]], dtype=torch.float64)
    proj = g.project(pts) - torch.tensor([7.5, 11.5], dtype=torch.float64)
    assert proj[0, 0, 1] < 0 and proj[1, 1, 1] < 0  # +x left in PA, +y left in lateral
    assert proj[0, 2, 0] < 0 and proj[1, 2, 0] < 0  # +z toward the top row in both


def test_shapes_dtype_and_points_behind_the_source():
    g = geometry("cone")
    pts = torch.randn(2, 5, 7, 3) * 50.0
    out = g.project(pts)
    assert out.shape == (len(ANGLES), 2, 5, 7, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out, g.project(pts.double()).float())
    assert g.project(torch.zeros(3)).shape == (len(ANGLES), 2)
    # the first view's source sits at 400 * e_s: points on and behind its plane have no projection
    e_s = g.frames(torch.float64)[0][0]
    behind = torch.stack([400.0 * e_s, 500.0 * e_s, 400.0 * e_s + torch.tensor([0.0, 0.0, 30.0],
                                                                                dtype=torch.float64)])
    proj = g.project(behind)
    assert torch.isnan(proj[0]).all()
    # ... while views that look from elsewhere still see them (90 degrees away, all in front of that source)
    assert torch.isfinite(proj[2]).all()
    assert math.isclose(float(g.project(399.0 * e_s)[0, 0]), 7.5, abs_tol=1e-9)


def test_bad_points_are_rejected():
    g = geometry("parallel")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        g.project(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="floating-point"):
        g.project(torch.zeros(4, 3, dtype=torch.long))
