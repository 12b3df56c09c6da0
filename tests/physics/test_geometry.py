from __future__ import annotations

import numpy as np
import pytest
import torch

from x2ct.physics.geometry import ProjectionGeometry, angles_for_views
from x2ct.physics.projector import render_drr


def cone(**kw):
    args = {"kind": "cone", "angles_deg": (0.0, 90.0), "detector_shape": (64, 64), "pixel_spacing_mm": (1.0, 1.0),
            "source_to_isocenter_mm": 500.0, "source_to_detector_mm": 1000.0}
    args.update(kw)
    return ProjectionGeometry(**args)


def test_source_and_detector_sit_where_the_convention_says():
    g = cone()
    origins, directions = g.rays(dtype=torch.float64)
    # PA: source posterior (-y), lateral: source at the patient's right (+x)
    torch.testing.assert_close(origins[0, 0, 0], torch.tensor([0.0, -500.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(origins[1, 0, 0], torch.tensor([500.0, 0.0, 0.0], dtype=torch.float64))
    # every ray ends on the detector plane, source_to_detector_mm from the source along the central axis
    ends = origins + directions
    axis = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    depth = ((ends - origins) * axis[:, None, None, :]).sum(-1)
    torch.testing.assert_close(depth, torch.full_like(depth, 1000.0))


def test_cone_magnification_of_an_off_centre_point_matches_similar_triangles():
    # a small bright cube 20 mm to the patient's right of the isocentre, seen in PA: it lands at
    # -20 * SDD / SID mm along the image columns (image left = patient right), i.e. 40 mm left of centre
    vol = torch.zeros(1, 1, 41, 41, 41, dtype=torch.float64)
    vol[0, 0, 20, 20, 40] = 1.0  # W index 40 -> x = +20 mm at 1 mm voxels
    g = cone(angles_deg=(0.0,), detector_shape=(1, 201), pixel_spacing_mm=(1.0, 0.5))
    img = render_drr(vol, (1.0, 1.0, 1.0), g)[0, 0, 0].numpy()
    cols_mm = (np.arange(201) - 100) * 0.5
    centroid = (img * cols_mm).sum() / img.sum()
    assert centroid == pytest.approx(-20.0 * 1000.0 / 500.0, abs=0.1)
    assert g.magnification == 2.0


def test_detector_offset_shifts_the_image():
    vol = torch.zeros(1, 1, 21, 21, 21, dtype=torch.float64)
    vol[0, 0, 10, 10, 10] = 1.0
    base = ProjectionGeometry(kind="parallel", angles_deg=(0.0,), detector_shape=(21, 21), pixel_spacing_mm=(1, 1))
    shifted = ProjectionGeometry(kind="parallel", angles_deg=(0.0,), detector_shape=(21, 21),
                                 pixel_spacing_mm=(1, 1), detector_offset_mm=(3.0, -2.0))
    a = render_drr(vol, (1, 1, 1), base)[0, 0]
    b = render_drr(vol, (1, 1, 1), shifted)[0, 0]
    ra, ca = np.unravel_index(int(a.argmax()), a.shape)
    rb, cb = np.unravel_index(int(b.argmax()), b.shape)
    # detector centre moved 3 mm toward the feet and 2 mm toward image-left: the point appears higher and right
    assert (ra - rb, cb - ca) == (3, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fan"}, "kind"),
        ({"angles_deg": ()}, "angles_deg"),
        ({"detector_shape": (0, 4)}, "detector_shape"),
        ({"pixel_spacing_mm": (1.0, -1.0)}, "pixel_spacing_mm"),
        ({"source_to_isocenter_mm": None}, "source_to_isocenter_mm"),
        ({"source_to_isocenter_mm": 1200.0}, "source_to_isocenter_mm"),
    ],
)
def test_invalid_geometry_is_rejected_with_the_key_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cone(**kwargs)


def test_dict_round_trip_and_with_angles():
    g = cone(detector_offset_mm=(1.5, -2.0))
    assert ProjectionGeometry.from_dict(g.to_dict()) == g
    assert g.with_angles([10, 20, 30]).angles_deg == (10.0, 20.0, 30.0)
    assert g.with_angles([10]).detector_shape == g.detector_shape


def test_view_names_map_to_angles():
    assert angles_for_views(["pa", "lateral", 45]) == (0.0, 90.0, 45.0)
    with pytest.raises(ValueError, match="unknown view name 'side'"):
        angles_for_views(["side"])
