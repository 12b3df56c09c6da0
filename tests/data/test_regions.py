"""Region maps: legends mapped onto lungs / bone / heart, and carried onto the training grid by world position."""

from __future__ import annotations

import json

import numpy as np
import pytest

from x2ct.data.ct_volume import CTVolume
from x2ct.data.layout import DatasetLayout
from x2ct.data.phantom import LABELS, LABELS_V2
from x2ct.data.readers import read_nifti
from x2ct.data.regions import (
    REGIONS,
    legend_region_map,
    load_regions,
    phantom_region_map,
    regions_on_grid,
    save_regions,
)


def volume(shape, spacing, origin=(0.0, 0.0, 0.0)):
    return CTVolume(hu=np.zeros(shape, np.float32), spacing=spacing, origin=origin)


def test_phantom_labels_map_onto_regions():
    labels = np.array([LABELS[name] for name in ("background", "lung", "pulmonary_vessel", "nodule", "bone",
                                                  "heart", "aorta", "body")], dtype=np.uint8)
    assert phantom_region_map(labels).tolist() == [0, 1, 1, 1, 2, 3, 0, 0]


def test_v2_labels_map_onto_regions_and_keep_v1_ids():
    assert all(LABELS_V2[name] == i for name, i in LABELS.items())
    names = ("clavicle", "scapula", "humerus", "left_ventricle", "right_atrium", "great_vessel", "liver", "table",
             "arm", "nodule", "bone")
    labels = np.array([LABELS_V2[name] for name in names], dtype=np.uint8)
    assert phantom_region_map(labels).tolist() == [2, 2, 2, 3, 3, 0, 0, 0, 0, 1, 2]
    with pytest.raises(ValueError, match="LABELS_V2"):
        phantom_region_map(np.array([max(LABELS_V2.values()) + 1], dtype=np.uint8))


def test_legend_map_uses_name_prefixes_and_leaves_cartilage_out():
    legend = {"lung_upper_lobe_left": 10, "rib_left_1": 92, "costal_cartilages": 118, "heart": 51, "liver": 5}
    labels = np.array([10, 92, 118, 51, 5, 0])
    assert legend_region_map(labels, legend).tolist() == [1, 2, 0, 3, 0, 0]


def test_same_grid_is_the_identity_and_a_shifted_grid_shifts_the_map():
    rng = np.random.default_rng(0)
    regions = rng.integers(0, 4, size=(6, 7, 8)).astype(np.uint8)
    src = volume((6, 7, 8), (2.0, 3.0, 4.0), origin=(10.0, -5.0, 1.0))
    assert np.array_equal(regions_on_grid(regions, src, src), regions)
    # grid starting one voxel further along W (x): voxel i of the grid is voxel i + 1 of the source
    shifted = volume((6, 7, 8), (2.0, 3.0, 4.0), origin=(14.0, -5.0, 1.0))
    out = regions_on_grid(regions, src, shifted)
    assert np.array_equal(out[:, :, :-1], regions[:, :, 1:])
    assert (out[:, :, -1] == 0).all()  # outside the source volume


def test_coarser_grid_takes_the_label_at_each_voxel_centre():
    regions = np.zeros((8, 8, 8), np.uint8)
    regions[4:, :, :] = 2  # superior half is "bone"
    src = volume((8, 8, 8), (1.0, 1.0, 1.0))
    # 2 mm grid over the same extent: centres at source indices 0.5, 2.5, 4.5, 6.5 -> rounded to even 0, 2, 4, 6
    coarse = volume((4, 4, 4), (2.0, 2.0, 2.0), origin=(0.5, 0.5, 0.5))
    out = regions_on_grid(regions, src, coarse)
    assert out[:, 0, 0].tolist() == [0, 0, 2, 2]


def test_save_and_load_keep_values_and_affine(tmp_path):
    regions = np.zeros((5, 6, 7), np.uint8)
    regions[1, 2, 3] = 3
    like = volume((5, 6, 7), (1.5, 2.0, 2.5), origin=(-3.0, 4.0, 5.0))
    path = save_regions(regions, like, tmp_path / "regions.nii.gz")
    assert np.array_equal(load_regions(path), regions)
    assert np.allclose(read_nifti(path).affine, like.affine)
    assert [p.name for p in tmp_path.iterdir()] == ["regions.nii.gz"]


def test_load_refuses_a_ct_posing_as_a_region_map(tmp_path):
    ct = CTVolume(hu=np.full((4, 4, 4), -1000.0, np.float32), spacing=(1.0, 1.0, 1.0))
    ct.save_nifti(tmp_path / "ct.nii.gz")
    with pytest.raises(ValueError, match=r"ct\.nii\.gz: not a region map"):
        load_regions(tmp_path / "ct.nii.gz")


def test_prepared_phantoms_carry_regions_that_hold_their_tissue(tiny_dataset):
    layout = DatasetLayout(tiny_dataset)
    assert json.loads(layout.manifest.read_text())["regions"] == REGIONS
    pid = "phantom_0000"
    regions, ct = load_regions(layout.regions(pid)), read_nifti(layout.ct(pid)).hu
    assert regions.shape == ct.shape
    assert np.median(ct[regions == REGIONS["lungs"]]) < -500
    assert np.median(ct[regions == REGIONS["bone"]]) > 150
    assert -100 < np.median(ct[regions == REGIONS["heart"]]) < 150
    meta = json.loads(layout.meta(pid).read_text())
    assert meta["regions"] == {name: int((regions == label).sum()) for name, label in REGIONS.items()}


def test_verify_notices_a_changed_region_map(tiny_dataset, tmp_path):
    import shutil

    from x2ct.data.verify import verify_dataset

    copy = tmp_path / "ds"
    shutil.copytree(tiny_dataset, copy)
    layout = DatasetLayout(copy)
    regions = load_regions(layout.regions("phantom_0001"))
    save_regions(np.zeros_like(regions), read_nifti(layout.ct("phantom_0001")), layout.regions("phantom_0001"))
    report = verify_dataset(copy)
    assert any("regions.nii.gz: checksum differs" in p for p in report.problems)
