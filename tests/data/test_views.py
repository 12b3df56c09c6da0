"""Rendering real anatomy: the example CT's DRRs put organs where a radiologist expects them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from x2ct.data.readers import read_nifti
from x2ct.data.views import render_views, resized_geometry, view_names
from x2ct.physics.geometry import ProjectionGeometry

# TotalSegmentator ids in the example CT's mask.nii.gz (structures.csv beside it)
LIVER, HEART, SPINAL_CORD, STERNUM = 5, 51, 79, 116
GEOMETRY = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(96, 96),
                              pixel_spacing_mm=(6.0, 6.0), source_to_isocenter_mm=1000.0,
                              source_to_detector_mm=1500.0)


def image_centroid(image: torch.Tensor) -> tuple[float, float]:
    w = image.double().clamp(min=0)
    rows, cols = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


@pytest.mark.realdata
def test_real_ct_drrs_show_organs_where_a_radiologist_expects_them(example_ct, example_ct_file):
    # every 4th voxel in-plane (nearest neighbour, so label ids stay ids): 133 x 128 x 128 voxels of
    # 2.5 x 2.8 x 2.8 mm; the projector takes anisotropic voxels as they are
    labels = read_nifti(example_ct_file.parent / "mask.nii.gz").hu[:, ::4, ::4].astype(int)
    sd, sh, sw = example_ct.spacing
    ct = dataclasses.replace(example_ct, hu=example_ct.hu[:, ::4, ::4], spacing=(sd, 4 * sh, 4 * sw))
    drr = render_views(ct, GEOMETRY, mu_water=0.0193)
    assert drr.shape == (2, 96, 96) and torch.isfinite(drr).all()
    # the chest attenuates: lots of pixels well above zero, and the mediastinum brighter than the lungs
    assert (drr > 1.0).float().mean() > 0.3

    def organ_views(label_id):
        # the organ's mask rendered with the same geometry: its shadow on each view
        mask = dataclasses.replace(ct, hu=(labels == label_id).astype(np.float32) * 1000.0 - 1000.0)
        return render_views(mask, GEOMETRY, mu_water=0.0193)

    heart, cord, sternum, liver = (organ_views(i) for i in (HEART, SPINAL_CORD, STERNUM, LIVER))
    # PA: patient's left on the image right, so the heart's shadow is right of the spinal cord, liver left
    assert image_centroid(heart[0])[1] > image_centroid(cord[0])[1] + 3
    assert image_centroid(liver[0])[1] < image_centroid(cord[0])[1] - 3
    # left lateral: anterior on the image left: sternum left of the heart, heart left of the spinal cord
    assert image_centroid(sternum[1])[1] < image_centroid(heart[1])[1] < image_centroid(cord[1])[1]
    # head at the top in both views: the liver below the heart
    for v in (0, 1):
        assert image_centroid(liver[v])[0] > image_centroid(heart[v])[0] + 3


def test_resized_geometry_covers_the_same_detector_area():
    g = resized_geometry(GEOMETRY, (48, 32))
    assert g.detector_shape == (48, 32)
    assert g.pixel_spacing_mm == (12.0, 18.0)
    assert resized_geometry(GEOMETRY, None) is GEOMETRY


def test_view_names():
    assert view_names(["PA", "lateral", 45, 22.5]) == ["pa", "lateral", "angle_45", "angle_22.5"]
