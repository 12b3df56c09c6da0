"""Scanned-voxel masks: a CT shorter than the grid and one with scanner padding outside its reconstruction circle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import TINY_PROTOCOL, compose_config
from x2ct.data.ct_volume import CTVolume
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.layout import DatasetLayout
from x2ct.data.prepare import load_prepare_config, prepare_dataset
from x2ct.data.readers import read_nifti
from x2ct.data.scanned import load_scanned, scanned_on_grid, scanner_padding
from x2ct.data.verify import verify_dataset

GRID_MM, GRID_N = 352.0, 24  # TINY_PROTOCOL's grid: 24^3 voxels over 352 mm
PADDING_HU = -2048.0
CIRCLE_MM = 150.0  # reconstruction circle radius of the short CT
HALF_LENGTH_MM = 100.0  # the short CT covers z in [-100, 100] mm of the grid's [-176, 176]


def short_ct(padding: bool = True) -> CTVolume:
    """A 200 mm long, 400 mm wide CT: a water cylinder of radius 120 mm in air, -2048 outside a 150 mm circle."""
    spacing = 5.0
    shape = (40, 80, 80)
    centres = [(np.arange(n) - (n - 1) / 2) * spacing for n in shape]
    _, y, x = np.meshgrid(*centres, indexing="ij")
    radius = np.hypot(x, y)
    hu = np.where(radius < 120.0, 40.0, -1000.0).astype(np.float32)
    if padding:
        hu[radius > CIRCLE_MM] = PADDING_HU
    origin = tuple(-(n - 1) / 2 * spacing for n in shape[::-1])  # (x, y, z) of voxel 0: centred on the origin
    return CTVolume(hu=hu, spacing=(spacing,) * 3, origin=origin)


def prepare_short(tmp_path, padding: bool = True, name: str = "ds"):
    folder = tmp_path / f"cts_{name}"
    folder.mkdir()
    short_ct(padding).save_nifti(folder / "short.nii.gz")
    root = tmp_path / name
    cfg = load_prepare_config(compose_config("prepare", [
        *TINY_PROTOCOL, "source=folder", f"source.path={folder}", f"output_dir={root}",
        "split.train=0", "split.val=0", "split.test=1"]))
    report = prepare_dataset(cfg, progress=False)
    assert report.ok, report.failures
    return root


def grid_centres() -> np.ndarray:
    return (np.arange(GRID_N) + 0.5) * GRID_MM / GRID_N - GRID_MM / 2


def test_a_ct_shorter_than_the_grid_marks_its_missing_slices_and_padding_unscanned(tmp_path):
    root = prepare_short(tmp_path)
    layout = DatasetLayout(root)
    mask = load_scanned(layout.scanned("short"))
    ct = read_nifti(layout.ct("short"))
    assert mask.shape == ct.shape == (GRID_N,) * 3
    z = grid_centres()
    along = mask.any(axis=(1, 2))
    np.testing.assert_array_equal(along, np.abs(z) < HALF_LENGTH_MM)  # slices 5..18 of 24
    assert along.sum() == 14
    # unscanned slices hold the pad value (air), not extrapolated anatomy
    assert np.all(ct.hu[~along] == -1000.0)
    # in-plane: inside the reconstruction circle scanned, outside not (one source voxel of slack at its edge)
    yy, xx = np.meshgrid(z, z, indexing="ij")
    radius = np.hypot(xx, yy)
    middle = mask[GRID_N // 2]
    assert middle[radius < CIRCLE_MM - 5].all()
    assert not middle[radius > CIRCLE_MM + 5].any()
    # the padding became air before resampling: nothing below air blends in at the circle's edge
    assert ct.hu.min() >= -1000.0
    meta = json.loads(layout.meta("short").read_text())
    assert meta["scanned"]["fraction"] == pytest.approx(mask.mean())
    assert meta["scanned"]["scan_range_z_mm"] == pytest.approx([-HALF_LENGTH_MM, HALF_LENGTH_MM])
    assert meta["scanned"]["padding_voxels_in_source"] == int(scanner_padding(short_ct()).sum())
    assert "scanned.nii.gz" in meta["checksums"]
    assert json.loads(layout.manifest.read_text())["scanned_masks"] is True
    assert verify_dataset(root).ok


def test_scanner_padding_reaches_the_views_as_air(tmp_path):
    padded, plain = prepare_short(tmp_path, padding=True, name="a"), prepare_short(tmp_path, padding=False, name="b")
    drr_padded = np.load(DatasetLayout(padded).drr("short"))
    drr_plain = np.load(DatasetLayout(plain).drr("short"))
    np.testing.assert_array_equal(drr_padded, drr_plain)
    # the same CT without padding is scanned everywhere in-plane
    assert load_scanned(DatasetLayout(plain).scanned("short"))[GRID_N // 2].all()


def test_the_data_set_returns_the_mask_and_all_voxels_without_one(tmp_path):
    root = prepare_short(tmp_path)
    dataset = PatientDRRDataset(root, "test")
    item = dataset[0]
    assert dataset.has_scanned_masks
    assert item["scanned"].dtype == torch.bool and item["scanned"].shape == item["ct"].shape
    np.testing.assert_array_equal(item["scanned"][0].numpy(), load_scanned(DatasetLayout(root).scanned("short")))
    # a data set prepared before masks were stored: every voxel counts
    manifest = json.loads(DatasetLayout(root).manifest.read_text())
    del manifest["scanned_masks"]
    DatasetLayout(root).manifest.write_text(json.dumps(manifest))
    DatasetLayout(root).scanned("short").unlink()
    old = PatientDRRDataset(root, "test")
    assert not old.has_scanned_masks and old[0]["scanned"].all()


def test_a_missing_or_damaged_mask_is_named(tmp_path):
    from x2ct.data.dataset import DatasetError

    root = prepare_short(tmp_path)
    path = DatasetLayout(root).scanned("short")
    CTVolume(hu=np.full((GRID_N,) * 3, 2.0, np.float32), spacing=(1.0, 1.0, 1.0)).save_nifti(path)
    report = verify_dataset(root, checksums=False)
    assert any(str(path) in p and "0 or 1" in p for p in report.problems)
    path.unlink()
    with pytest.raises(DatasetError, match="scanned-voxel mask missing"):
        PatientDRRDataset(root, "test")[0]


def test_the_centre_rule_on_a_grid_finer_than_the_source():
    """A grid voxel counts as scanned when its centre lies inside the source's extent, edge to edge."""
    source = CTVolume(hu=np.zeros((4, 4, 4), np.float32), spacing=(10.0, 10.0, 10.0), origin=(-15.0, -15.0, -15.0))
    grid = CTVolume(hu=np.zeros((12, 1, 1), np.float32), spacing=(5.0, 60.0, 60.0), origin=(0.0, 0.0, -27.5))
    mask = scanned_on_grid(source, grid)[:, 0, 0]
    centres = -27.5 + 5.0 * np.arange(12)  # the source spans z in [-20, 20]
    np.testing.assert_array_equal(mask, np.abs(centres) < 20.0)


def test_prepare_settings_leave_the_default_generator_out_and_refuse_an_unknown_one(tmp_path):
    from tests.helpers import TINY_OVERRIDES

    root = tmp_path / "ph"
    cfg = load_prepare_config(compose_config("prepare", [*TINY_OVERRIDES, "source.num_patients=1",
                                                         f"output_dir={root}"]))
    prepare_dataset(cfg, progress=False)
    assert "generator" not in json.loads((root / "prepare_settings.json").read_text())["source"]
    assert load_scanned(DatasetLayout(root).scanned("phantom_0000")).all()
    with pytest.raises(ValueError, match=r"source\.generator"):
        load_prepare_config(compose_config("prepare", [*TINY_OVERRIDES, "source.generator=v3"]))


@pytest.mark.realdata
def test_the_example_ct_on_the_benchmark_grid_misses_its_end_slices_and_corners(example_ct_file, tmp_path,
                                                                              monkeypatch):
    """The real case the masks are for: 332.5 mm of scan on a 352 mm grid, a 361 mm reconstruction circle."""
    monkeypatch.setenv("X2CT_EXAMPLE_CT_DIR", str(example_ct_file.parent))
    root = tmp_path / "real"
    cfg = load_prepare_config(compose_config("prepare", [
        "source=example_ct", "protocol=benchmark_32", f"output_dir={root}", "workers=1"]))
    assert prepare_dataset(cfg, progress=False).ok
    layout = DatasetLayout(root)
    mask, ct = load_scanned(layout.scanned("example_cxr")), read_nifti(layout.ct("example_cxr"))
    along = mask.any(axis=(1, 2))
    assert not along[0] and not along[-1] and along[1:-1].all()
    assert not mask[16, 0, 0] and mask[16, 16, 16]  # a corner outside the circle, the centre inside
    assert mask.mean() == pytest.approx(0.766, abs=0.005)
    assert ct.hu.min() >= -1024.0  # no padding value (-2048) left; air itself measures down to -1024
    assert np.all(ct.hu[~along] == -1000.0)
