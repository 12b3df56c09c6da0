from __future__ import annotations

import pickle
import re

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.view_selection import ViewSubsetCollate, evenly_spread_views

# The benchmark layout (conf/data/benchmark.yaml): 24 views every 7.5 degrees over 180, 0 = PA.
BENCHMARK_ANGLES = [7.5 * i for i in range(24)]


@pytest.mark.parametrize(("n", "expected_angles"), [
    (2, [0, 90]),
    (4, [0, 45, 90, 135]),
    (6, [0, 30, 60, 90, 120, 150]),
    (8, [0, 22.5, 45, 67.5, 90, 112.5, 135, 157.5]),
])
def test_evenly_spread_views_of_the_benchmark_layout(n, expected_angles):
    indices = evenly_spread_views(BENCHMARK_ANGLES, n)
    assert indices == [round(a / 7.5) for a in expected_angles]
    assert [BENCHMARK_ANGLES[i] for i in indices] == expected_angles


def test_evenly_spread_views_match_any_stored_order_within_tolerance_and_modulo_360():
    angles = [90.0, 360.0, 45.0004, 135.0]
    assert evenly_spread_views(angles, 4) == [1, 2, 0, 3]
    assert evenly_spread_views([0, 120, 240], 3, arc_deg=360) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"missing \[45\]"):
        evenly_spread_views(angles, 4, tol_deg=1e-4)


def test_missing_angles_are_listed_with_the_stored_ones():
    with pytest.raises(ValueError) as info:
        evenly_spread_views(BENCHMARK_ANGLES, 10)
    message = str(info.value)
    assert "10 views evenly spread over 180 degrees need views at [0, 18, 36, 54, 72, 90, 108, 126, 144, 162]" \
        in message
    assert "missing [18, 36, 54, 72, 108, 126, 144, 162]" in message
    assert "stores views at [0, 7.5, 15, " in message and "172.5]" in message
    with pytest.raises(ValueError, match=r"missing \[45, 135\].*stores views at \[0, 90\]"):
        evenly_spread_views([0.0, 90.0], 4)
    with pytest.raises(ValueError, match="positive integer"):
        evenly_spread_views(BENCHMARK_ANGLES, 0)


def fake_sample(num_views: int = 6, index: int = 0, size: int = 3) -> dict:
    """View i is filled with the value i and sits at 10 * i degrees."""
    views = torch.arange(num_views, dtype=torch.float32).view(num_views, 1, 1, 1).expand(num_views, 1, size, size)
    return {"views": views.clone(), "angles_deg": 10.0 * torch.arange(num_views, dtype=torch.float32),
            "ct": torch.full((1, 2, 2, 2), float(index)), "patient_id": f"p{index}"}


def kept_positions(batch: dict) -> torch.Tensor:
    """The view positions a collated batch kept, read back from the fill values; checks samples agree."""
    values = batch["views"][:, :, 0, 0, 0]  # (B, k)
    assert (batch["views"] == values[:, :, None, None, None]).all()
    assert (values == values[0]).all(), "every sample of a batch keeps the same views"
    torch.testing.assert_close(batch["angles_deg"], 10.0 * values)
    return values[0].long()


def test_collate_shapes_bounds_and_consistency():
    collate = ViewSubsetCollate(min_views=2, max_views=5)
    samples = [fake_sample(6, b) for b in range(3)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        batch = collate(samples)
        k = batch["views"].shape[1]
        assert batch["views"].shape == (3, k, 1, 3, 3) and batch["angles_deg"].shape == (3, k)
        assert 2 <= k <= 5
        positions = kept_positions(batch)
        assert positions.tolist() == sorted(set(positions.tolist()))  # stored order, no repeats
        assert batch["patient_id"] == ["p0", "p1", "p2"]
        torch.testing.assert_close(batch["ct"][:, 0, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
        seen.add(k)
    assert seen == {2, 3, 4, 5}
    assert samples[0]["views"].shape[0] == 6  # the samples themselves are not cut


def test_collate_default_max_is_all_views_and_always_is_kept():
    collate = ViewSubsetCollate(min_views=1, always=[0])
    samples = [fake_sample(4, b) for b in range(2)]
    torch.manual_seed(1)
    seen, subsets = set(), set()
    for _ in range(200):
        positions = kept_positions(collate(samples))
        assert positions[0] == 0
        seen.add(len(positions))
        subsets.add(tuple(positions.tolist()))
    assert seen == {1, 2, 3, 4}
    assert len(subsets) == 8  # every subset that holds view 0


def test_collate_is_reproducible_under_manual_seed_and_picklable():
    collate = pickle.loads(pickle.dumps(ViewSubsetCollate(min_views=1, max_views=6, always=(2,))))
    samples = [fake_sample(6, b) for b in range(2)]
    torch.manual_seed(7)
    first = [kept_positions(collate(samples)).tolist() for _ in range(20)]
    torch.manual_seed(7)
    second = [kept_positions(collate(samples)).tolist() for _ in range(20)]
    assert first == second
    assert len({tuple(p) for p in first}) > 5
    assert all(2 in p for p in first)


class FakeViews(Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> dict:
        return fake_sample(8, index)


def test_collate_inside_a_dataloader():
    torch.manual_seed(3)
    loader = DataLoader(FakeViews(), batch_size=2, num_workers=0, collate_fn=ViewSubsetCollate(min_views=3))
    batches = list(loader)
    assert [b["views"].shape[0] for b in batches] == [2, 2, 1]
    for batch in batches:
        assert 3 <= len(kept_positions(batch)) <= 8


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_views": 0}, "min_views must be an integer >= 1, got 0"),
    ({"min_views": 3, "max_views": 2}, r"max_views must be None \(all views\) or an integer >= min_views \(3\)"),
    ({"min_views": 1, "always": [0, 1]}, r"always keeps 2 views \[0, 1\], more than min_views \(1\)"),
    ({"min_views": 2, "always": [1, 1]}, "distinct view positions"),
])
def test_collate_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ViewSubsetCollate(**kwargs)


def test_collate_refuses_batches_it_cannot_cut():
    samples = [fake_sample(4, 0)]
    with pytest.raises(ValueError, match="max_views=6 but the samples hold only 4 views"):
        ViewSubsetCollate(min_views=2, max_views=6)(samples)
    with pytest.raises(ValueError, match="min_views=5 but the samples hold only 4 views"):
        ViewSubsetCollate(min_views=5)(samples)
    with pytest.raises(ValueError, match=re.escape("always=[4] names a view position out of range")):
        ViewSubsetCollate(min_views=1, always=[4])(samples)
    with pytest.raises(ValueError, match=re.escape("different numbers of views [3, 4]")):
        ViewSubsetCollate(min_views=1)([fake_sample(4, 0), fake_sample(3, 1)])


def test_collate_cuts_each_samples_geometry_with_its_views(tiny_dataset):
    ds = PatientDRRDataset(tiny_dataset, "train")
    collate = ViewSubsetCollate(min_views=1, max_views=1)
    torch.manual_seed(0)
    kept = set()
    for _ in range(10):
        batch = collate([ds[0], ds[1]])
        assert batch["views"].shape[1] == 1
        for b, geometry in enumerate(batch["geometry"]):
            assert geometry.angles_deg == tuple(batch["angles_deg"][b].tolist())
            assert geometry.with_angles(ds.geometry.angles_deg) == ds.geometry
        kept.add(batch["geometry"][0].angles_deg)
    assert kept == {(0.0,), (90.0,)}
