from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from x2ct.data.collate import collate_samples
from x2ct.data.dataset import DatasetError, PatientDRRDataset
from x2ct.data.layout import DatasetLayout
from x2ct.data.views import render_views
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.radiograph import normalise_views


def test_items_have_documented_shapes_and_ranges(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    assert len(ds) == len(DatasetLayout(tiny_dataset).split_file("train").read_text().split())
    item = ds[0]
    assert item["views"].shape == (2, 1, 32, 32) and item["views"].dtype == torch.float32
    assert item["ct"].shape == (1, 24, 24, 24) and item["ct"].dtype == torch.float32
    assert 0.0 <= item["ct"].min() and item["ct"].max() <= 1.0
    assert 0.0 <= item["views"].min() and item["views"].max() <= 1.0 + 1e-6
    # lungs are dark, the body bright: the normalised CT spans most of [0, 1]
    assert item["ct"].max() - item["ct"].min() > 0.5
    torch.testing.assert_close(item["angles_deg"], torch.tensor([0.0, 90.0]))


def test_views_are_scaled_by_the_data_set_maximum(tiny_dataset):
    layout = DatasetLayout(tiny_dataset)
    scale = json.loads(layout.manifest.read_text())["views"]["scale"]
    ds = PatientDRRDataset(tiny_dataset, "test")
    pid = ds.patient_ids[0]
    raw = np.load(layout.drr(pid))
    np.testing.assert_allclose(ds[0]["views"][:, 0].numpy(), raw / scale, rtol=1e-6)


def test_view_selection_by_name_and_index(tiny_dataset):
    full = PatientDRRDataset(tiny_dataset, "train")[0]["views"]
    lateral = PatientDRRDataset(tiny_dataset, "train", views=["lateral"])[0]
    assert lateral["views"].shape == (1, 1, 32, 32)
    torch.testing.assert_close(lateral["views"][0], full[1])
    swapped = PatientDRRDataset(tiny_dataset, "train", views=[1, 0])[0]["views"]
    torch.testing.assert_close(swapped, full.flip(0))
    with pytest.raises(DatasetError, match=r"view 'ap' is not in the data set .*\['pa', 'lateral'\]"):
        PatientDRRDataset(tiny_dataset, "train", views=["ap"])


def test_on_the_fly_rendering_matches_stored_views_and_jitter_changes_them(tiny_dataset):
    stored = PatientDRRDataset(tiny_dataset, "val")[0]["views"]
    live = PatientDRRDataset(tiny_dataset, "val", render_on_the_fly=True)[0]["views"]
    torch.testing.assert_close(live, stored, atol=1e-5, rtol=1e-4)
    jittered = PatientDRRDataset(tiny_dataset, "val", render_on_the_fly=True, angle_jitter_deg=5.0)
    torch.manual_seed(0)
    a = jittered[0]
    torch.manual_seed(0)
    b = jittered[0]
    torch.testing.assert_close(a["views"], b["views"])
    assert not torch.allclose(a["views"], stored, atol=1e-3)
    assert (a["angles_deg"] - torch.tensor([0.0, 90.0])).abs().max() <= 5.0


def test_jitter_without_on_the_fly_rendering_is_refused(tiny_dataset):
    with pytest.raises(ValueError, match="render_on_the_fly"):
        PatientDRRDataset(tiny_dataset, "train", angle_jitter_deg=3.0)


def test_poisson_noise_perturbs_views(tiny_dataset):
    clean = PatientDRRDataset(tiny_dataset, "train")[0]["views"]
    noisy = PatientDRRDataset(tiny_dataset, "train", noise_photons=1e4)[0]["views"]
    assert noisy.shape == clean.shape
    assert 0 < (noisy - clean).abs().mean() < 0.05


def test_batches_through_a_dataloader(tiny_dataset):
    loader = DataLoader(PatientDRRDataset(tiny_dataset, "train"), batch_size=2, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["views"].shape == (2, 2, 1, 32, 32)
    assert batch["ct"].shape == (2, 1, 24, 24, 24)
    assert batch["angles_deg"].shape == (2, 2)
    assert len(batch["patient_id"]) == 2
    assert [g.angles_deg for g in batch["geometry"]] == [(0.0, 90.0), (0.0, 90.0)]


def test_item_geometry_renders_the_items_views(tiny_dataset):
    """The geometry an item carries is the one that made its views: stored ones, and jittered on-the-fly ones."""
    stored = PatientDRRDataset(tiny_dataset, "val", views=["lateral", "pa"])
    item = stored[0]
    assert isinstance(item["geometry"], ProjectionGeometry)
    assert item["geometry"].angles_deg == (90.0, 0.0)
    assert item["geometry"].with_angles(stored.geometry.angles_deg) == stored.geometry  # all else is the data set's
    ct = stored._load_ct(item["patient_id"])
    rendered = render_views(ct, item["geometry"], stored.manifest["mu_water"])
    drr = np.load(stored.layout.drr(item["patient_id"]))[[1, 0]]
    torch.testing.assert_close(rendered, torch.from_numpy(drr), atol=1e-4, rtol=1e-4)

    jittered = PatientDRRDataset(tiny_dataset, "val", render_on_the_fly=True, angle_jitter_deg=10.0)
    torch.manual_seed(1)
    item = jittered[0]
    angles = item["geometry"].angles_deg
    torch.testing.assert_close(torch.tensor(angles, dtype=torch.float32), item["angles_deg"])
    assert angles != (0.0, 90.0)
    again = normalise_views(render_views(ct, item["geometry"], jittered.manifest["mu_water"]),
                            jittered.normalisation, jittered.view_scale)
    torch.testing.assert_close(again[:, None].float(), item["views"], atol=1e-5, rtol=1e-4)


def test_missing_view_names_the_file(tiny_dataset, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    ds = PatientDRRDataset(root, "train")
    drr_path = DatasetLayout(root).drr(ds.patient_ids[0])
    np.save(drr_path, np.load(drr_path)[:1])  # the lateral view is gone
    with pytest.raises(DatasetError, match=rf"{drr_path.name}.*missing"):
        ds[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_line_integral_is_refused_even_in_an_unselected_view(tiny_dataset, tmp_path, bad):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    ds = PatientDRRDataset(root, "train", views=["pa"])
    pid = ds.patient_ids[0]
    drr_path = DatasetLayout(root).drr(pid)
    drr = np.load(drr_path)
    drr[1, 3, 4] = bad  # the lateral view, which this selection never feeds a model
    np.save(drr_path, drr)
    with pytest.raises(DatasetError, match=rf"patients/{pid}/drr\.npy: 1 NaN or infinite .*\['lateral'\]"):
        ds[0]


def test_not_a_data_set_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset\.json"):
        PatientDRRDataset(tmp_path, "train")


def test_intensity_radiographs_follow_beer_lambert(tiny_dataset):
    layout = DatasetLayout(tiny_dataset)
    ds = PatientDRRDataset(tiny_dataset, "train", radiograph="intensity")
    raw = np.load(layout.drr(ds.patient_ids[0]))
    views = ds[0]["views"][:, 0].numpy()
    np.testing.assert_allclose(views, np.exp(-raw), rtol=1e-6)
    assert views.max() <= 1.0 and views.min() > 0.0
    with pytest.raises(ValueError, match="radiograph"):
        PatientDRRDataset(tiny_dataset, "train", radiograph="linear")


def test_num_views_picks_evenly_spread_views(tiny_dataset):
    full = PatientDRRDataset(tiny_dataset, "train")
    pa_only = PatientDRRDataset(tiny_dataset, "train", num_views=1)
    assert pa_only.view_names == ["pa"] and pa_only.view_indices == [0]
    torch.testing.assert_close(pa_only[0]["views"], full[0]["views"][:1])
    torch.testing.assert_close(pa_only[0]["angles_deg"], torch.tensor([0.0]))
    assert pa_only.input_spec().geometry.angles_deg == (0.0,)
    both = PatientDRRDataset(tiny_dataset, "train", num_views=2)
    assert both.view_names == ["pa", "lateral"]
    torch.testing.assert_close(both[0]["views"], full[0]["views"])


def test_num_views_the_data_set_lacks_lists_the_missing_angles(tiny_dataset):
    with pytest.raises(DatasetError, match=r"num_views=4: .*missing \[45, 135\].*stores views at \[0, 90\]"
                                           r".*dataset\.json"):
        PatientDRRDataset(tiny_dataset, "train", num_views=4)


def test_views_and_num_views_together_are_refused(tiny_dataset):
    with pytest.raises(ValueError, match=r"views \(\['pa'\]\) or num_views \(2\), not both"):
        PatientDRRDataset(tiny_dataset, "train", views=["pa"], num_views=2)


def test_view_effects_act_on_line_integrals_before_the_views_are_normalised(tiny_dataset):
    """The hook sees the stored line integrals and its output goes through the data set's own normalisation, so
    the views keep the model's convention (log: line integrals / scale; intensity: exp(-p))."""
    from x2ct.data.realism import RadiographRealism

    scatter = RadiographRealism.from_config({"scatter": {"spr": 0.5, "sigma_mm": 60.0}})
    for radiograph in ("log", "intensity"):
        ds = PatientDRRDataset(tiny_dataset, "train", radiograph=radiograph, view_effects=scatter)
        raw = torch.from_numpy(np.load(ds.layout.drr(ds.patient_ids[0])))
        expected = scatter(raw, ds.geometry.pixel_spacing_mm, torch.Generator())  # deterministic: no noise
        expected = torch.exp(-expected) if radiograph == "intensity" else expected / ds.view_scale
        torch.testing.assert_close(ds[0]["views"][:, 0], expected.float(), atol=1e-6, rtol=1e-6)


def test_realism_draws_repeat_by_seed_and_differ_between_accesses(tiny_dataset):
    from x2ct.data.realism import RadiographRealism

    realism = RadiographRealism.from_config({"noise": {"photons_per_mm2": 10.0, "electronic_quanta_per_mm2": 0.0},
                                             "pose": {"rotation_deg": [-3, 3], "shift_mm": [-10, 10]}})
    ds = PatientDRRDataset(tiny_dataset, "train", view_effects=realism)
    clean = PatientDRRDataset(tiny_dataset, "train")[0]["views"]
    torch.manual_seed(0)
    a, b = ds[0]["views"], ds[0]["views"]
    torch.manual_seed(0)
    assert torch.equal(ds[0]["views"], a)
    assert not torch.equal(a, b) and not torch.allclose(a, clean, atol=1e-3)


def test_dataloader_workers_draw_their_own_realism_and_repeat_for_the_same_loader_seed(tiny_dataset):
    """One patient four times through two workers: four different draws (no worker repeats another's), and the
    same four again when the loader's generator is seeded alike (what the trainer does per epoch and rank)."""
    from torch.utils.data import Subset

    from x2ct.data.realism import RadiographRealism

    realism = RadiographRealism.from_config({"noise": {"photons_per_mm2": 10.0, "electronic_quanta_per_mm2": 0.0}})
    ds = Subset(PatientDRRDataset(tiny_dataset, "train", view_effects=realism), [0, 0, 0, 0])

    def views(seed):
        loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate_samples,
                            generator=torch.Generator().manual_seed(seed))
        return [batch["views"] for batch in loader]

    first = views(5)
    assert all(not torch.equal(first[i], first[j]) for i in range(4) for j in range(i + 1, 4))
    assert all(torch.equal(x, y) for x, y in zip(first, views(5), strict=True))
    assert not torch.equal(first[0], views(6)[0])
