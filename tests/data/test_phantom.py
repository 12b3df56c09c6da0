from __future__ import annotations

import json

import numpy as np
import pytest

from x2ct.data.phantom import LABELS, PhantomConfig, draw_patient, generate_chest_phantom

SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def phantom64():
    return generate_chest_phantom(7, shape=(64, 64, 64), with_labels=True)


@pytest.fixture(scope="module")
def phantom128():
    return generate_chest_phantom(7, shape=(128, 128, 128), with_labels=True)


@pytest.fixture(scope="module")
def small_cohort():
    return {seed: generate_chest_phantom(seed, shape=(48, 48, 48), with_labels=True) for seed in SEEDS}


def _world(ct, mask: np.ndarray) -> np.ndarray:
    """RAS (x, y, z) mm of the centre of mass of ``mask`` (D, H, W), through the volume's NIfTI affine."""
    k, j, i = np.argwhere(mask).mean(axis=0)
    return (ct.affine @ np.array([i, j, k, 1.0]))[:3]


def _volumes_ml(ct, labels) -> dict[str, float]:
    voxel_ml = float(np.prod(ct.spacing)) / 1000.0
    return {name: float((labels == i).sum()) * voxel_ml for name, i in LABELS.items()}


# --- determinism and grid -------------------------------------------------------------------------------
def assert_seed_decides_the_patient(generate, seed: int) -> None:
    """``generate(seed)`` twice gives the identical phantom (HU, labels, metadata), ``seed + 1`` another patient
    (another scanned slab, or HU and labels that differ clearly)."""
    a, la = generate(seed, shape=(40, 40, 40), with_labels=True)
    b, lb = generate(seed, shape=(40, 40, 40), with_labels=True)
    c, lc = generate(seed + 1, shape=(40, 40, 40), with_labels=True)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(la, lb)
    assert a.metadata == b.metadata
    assert a.hu.shape != c.hu.shape or (np.abs(a.hu - c.hu).mean() > 10.0 and (la != lc).mean() > 0.01)
    assert a.metadata["patient"] != c.metadata["patient"]


def test_same_seed_gives_identical_phantom_and_other_seeds_differ():
    assert_seed_decides_the_patient(generate_chest_phantom, 3)


def test_grid_is_centred_with_the_default_field_of_view(phantom64):
    ct, labels = phantom64
    fov = PhantomConfig().fov_mm
    assert ct.hu.shape == labels.shape == (64, 64, 64)
    assert ct.hu.dtype == np.float32 and labels.dtype == np.uint8
    np.testing.assert_allclose(ct.spacing, np.array(fov) / 64)
    # origin is voxel [0,0,0]'s centre as (x, y, z): half a field of view minus half a voxel from the middle
    sd, sh, sw = ct.spacing
    np.testing.assert_allclose(ct.origin, (-fov[2] / 2 + sw / 2, -fov[1] / 2 + sh / 2, -fov[0] / 2 + sd / 2))
    centre = ct.affine @ np.array([31.5, 31.5, 31.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_explicit_spacing_is_honoured():
    ct = generate_chest_phantom(1, shape=(20, 30, 40), spacing_mm=(8.0, 7.0, 6.0))
    assert ct.hu.shape == (20, 30, 40)
    assert ct.spacing == (8.0, 7.0, 6.0)
    np.testing.assert_allclose(ct.extent_mm, (160.0, 210.0, 240.0))


# --- densities ---------------------------------------------------------------------------------------------
def test_hu_ranges_per_label(phantom64):
    ct, labels = phantom64
    hu = ct.hu
    corners = hu[np.ix_([0, -1], [0, -1], [0, -1])]
    assert (corners == -1000.0).all()
    assert -900.0 <= hu[labels == LABELS["lung"]].mean() <= -750.0
    assert hu[labels == LABELS["bone"]].mean() > 300.0
    assert 0.0 <= hu[labels == LABELS["heart"]].mean() <= 80.0
    assert 0.0 <= hu[labels == LABELS["aorta"]].mean() <= 80.0
    assert -150.0 <= hu[labels == LABELS["body"]].mean() <= 100.0
    assert hu[labels == LABELS["airway"]].mean() < -300.0  # mostly air in the lumen
    assert np.isfinite(hu).all()
    assert set(np.unique(labels)) <= set(LABELS.values())


def test_a_fixed_range_gives_exactly_that_value():
    config = PhantomConfig(lung_hu=(-850.0, -850.0), nodule_count=(0, 0))
    ct, labels = generate_chest_phantom(2, shape=(48, 48, 48), config=config, with_labels=True)
    assert ct.metadata["patient"]["lung_hu"] == -850.0
    lung = ct.hu[labels == LABELS["lung"]]
    # interior lung voxels see no edge at all, so they hold the drawn value exactly
    assert np.median(lung) == -850.0


# --- anatomy and orientation ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_anatomy_sits_where_ras_says(small_cohort, seed):
    ct, labels = small_cohort[seed]
    W = labels.shape[2]
    x_mm = ct.origin[0] + np.arange(W) * ct.spacing[2]
    heart = _world(ct, labels == LABELS["heart"])
    # midline bone in the lowest slices, below the sternum and with no ribs near the midline: the spine
    spine_mask = (labels == LABELS["bone"]) & (np.abs(x_mm) < 15.0)[None, None, :]
    spine_mask[labels.shape[0] // 8 :] = False
    spine = _world(ct, spine_mask)
    # heart: toward the patient's left (-x in RAS) and in front of (+y) the spine
    assert heart[0] < -5.0
    assert heart[1] > spine[1] + 40.0
    # spine: posterior half of the volume, i.e. low H index
    assert spine[1] < 0.0
    assert np.argwhere(spine_mask)[:, 1].mean() < labels.shape[1] / 2
    # right lung (+x side) is the bigger one; the left one makes room for the heart
    lung = labels == LABELS["lung"]
    right, left = lung[:, :, x_mm > 0].sum(), lung[:, :, x_mm < 0].sum()
    assert right > left > 0.5 * right
    # descending aorta, below the arch, runs left of the spine
    aorta = labels == LABELS["aorta"]
    low = np.zeros_like(aorta)
    low[: labels.shape[0] // 3] = True
    assert _world(ct, aorta & low)[0] < spine[0] - 10.0


def test_variability_across_seeds(small_cohort):
    vols = {seed: _volumes_ml(*small_cohort[seed]) for seed in SEEDS}
    lung = np.array([v["lung"] for v in vols.values()])
    body = np.array([v["body"] for v in vols.values()])
    assert lung.std() / lung.mean() > 0.03
    assert body.std() / body.mean() > 0.02
    hearts = np.array([_world(ct, lab == LABELS["heart"]) for ct, lab in small_cohort.values()])
    assert hearts.std(axis=0).max() > 3.0  # mm


def test_overriding_one_range_leaves_the_other_draws_alone():
    base = draw_patient(11, PhantomConfig())
    changed = draw_patient(11, PhantomConfig(heart_hu=(100.0, 200.0)))
    assert 100.0 <= changed["heart_hu"] <= 200.0
    assert {k: v for k, v in changed.items() if k != "heart_hu"} == {k: v for k, v in base.items() if k != "heart_hu"}


# --- resolution independence ---------------------------------------------------------------------------
def test_64_and_128_grids_describe_the_same_patient(phantom64, phantom128):
    (ct64, lab64), (ct128, lab128) = phantom64, phantom128
    v64, v128 = _volumes_ml(ct64, lab64), _volumes_ml(ct128, lab128)
    for name in ("body", "lung", "heart"):
        assert v64[name] == pytest.approx(v128[name], rel=0.03), name
    # thin or axis-aligned structures quantise on a 5.5 mm grid; their labels still agree roughly
    for name in ("bone", "aorta"):
        assert v64[name] == pytest.approx(v128[name], rel=0.10), name
    # partial volume keeps the material itself resolution independent: 2x2x2 block means match the 64^3 grid
    down = ct128.hu.reshape(64, 2, 64, 2, 64, 2).mean(axis=(1, 3, 5))
    assert np.abs(down - ct64.hu).mean() < 10.0
    # ... and so do AP line integrals of (HU + 1000), which is proportional to attenuation
    ap64, ap128 = (ct64.hu + 1000.0).sum(axis=1), (down + 1000.0).sum(axis=1)
    assert np.abs(ap64 - ap128).sum() / ap128.sum() < 0.02


def test_coarse_and_fine_grids_both_work():
    _, lab32 = generate_chest_phantom(5, shape=(32, 32, 32), with_labels=True)
    assert (lab32 == LABELS["lung"]).any() and (lab32 == LABELS["heart"]).any()
    ct_aniso = generate_chest_phantom(5, shape=(40, 64, 64), spacing_mm=(7.5, 5.5, 5.5))
    assert ct_aniso.hu.shape == (40, 64, 64)


# --- nodules -----------------------------------------------------------------------------------------------
def test_nodules_lie_inside_the_lungs_as_configured():
    config = PhantomConfig(nodule_count=(4, 4), nodule_radius_mm=(5.0, 9.0))
    ct, labels = generate_chest_phantom(9, shape=(96, 96, 96), config=config, with_labels=True)
    nodules = ct.metadata["nodules"]
    assert len(nodules) == 4
    inv = np.linalg.inv(ct.affine)
    for nod in nodules:
        c, r = np.array(nod["centre_mm"]), nod["radius_mm"]
        assert 5.0 <= r <= 9.0
        i, j, k = np.rint(inv @ np.append(c, 1.0))[:3].astype(int)
        assert labels[k, j, i] == LABELS["nodule"]
        assert ct.hu[k, j, i] > -300.0  # solid, against -850 HU lung
        assert (nod["lung"] == "right") == (c[0] > 0)
        # six points just outside the sphere are lung (or a vessel inside the lung)
        for axis in range(3):
            for sign in (-1, 1):
                p = c.copy()
                p[axis] += sign * (r + 2.0)
                ii, jj, kk = np.rint(inv @ np.append(p, 1.0))[:3].astype(int)
                assert labels[kk, jj, ii] in (LABELS["lung"], LABELS["pulmonary_vessel"], LABELS["nodule"])


def test_nodule_count_stays_in_range_and_zero_means_none():
    for seed in range(4):
        ct = generate_chest_phantom(seed, shape=(32, 32, 32), config=PhantomConfig(nodule_count=(1, 2)))
        assert 1 <= len(ct.metadata["nodules"]) <= 2
    ct, labels = generate_chest_phantom(0, shape=(32, 32, 32), config=PhantomConfig(nodule_count=(0, 0)),
                                        with_labels=True)
    assert ct.metadata["nodules"] == [] and not (labels == LABELS["nodule"]).any()


# --- metadata, noise, errors, speed ---------------------------------------------------------------------
def test_metadata_records_the_patient(phantom64):
    ct, _ = phantom64
    meta = json.loads(json.dumps(ct.metadata))  # JSON-ready, as data sets store it
    assert meta["seed"] == 7
    assert meta["labels"] == LABELS
    assert meta["config"]["lung_hu"] == list(PhantomConfig().lung_hu)
    lo, hi = PhantomConfig().heart_x_mm
    assert lo <= meta["patient"]["heart_x_mm"] <= hi
    for nod in meta["nodules"]:
        assert set(nod) == {"centre_mm", "radius_mm", "hu", "lung"} and len(nod["centre_mm"]) == 3


def test_noise_is_seeded_and_stays_inside_the_body():
    config = PhantomConfig(noise_std_hu=20.0)
    clean, labels = generate_chest_phantom(6, shape=(48, 48, 48), with_labels=True)
    noisy = generate_chest_phantom(6, shape=(48, 48, 48), config=config)
    again = generate_chest_phantom(6, shape=(48, 48, 48), config=config)
    np.testing.assert_array_equal(noisy.hu, again.hu)
    diff = noisy.hu - clean.hu
    assert (diff[labels == LABELS["background"]][:100] == 0).all()  # corner rows lie far outside the body
    assert (noisy.hu[np.ix_([0, -1], [0, -1], [0, -1])] == -1000.0).all()
    assert np.std(diff[labels == LABELS["lung"]]) == pytest.approx(20.0, rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lung_hu": (-800.0, -900.0)}, "lung_hu"),
        ({"heart_hu": (1.0, 2.0, 3.0)}, "heart_hu"),
        ({"nodule_count": (3, 1)}, "nodule_count"),
        ({"fov_mm": (300.0, 0.0, 350.0)}, "fov_mm"),
        ({"rib_count": -1}, "rib_count"),
        ({"edge_width_voxels": 0.0}, "edge_width_voxels"),
    ],
)
def test_bad_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhantomConfig(**kwargs)


def test_yaml_style_lists_are_accepted():
    config = PhantomConfig(lung_hu=[-860, -840], nodule_count=[1, 1], fov_mm=[300, 350, 350])
    assert config.lung_hu == (-860.0, -840.0) and config.nodule_count == (1, 1)


def test_impossible_anatomy_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="cage_half_width_mm"):
        generate_chest_phantom(0, shape=(16, 16, 16), config=PhantomConfig(cage_half_width_mm=(10.0, 10.0)))
    with pytest.raises(ValueError, match="shape"):
        generate_chest_phantom(0, shape=(64, 64))
    with pytest.raises(ValueError, match="seed"):
        generate_chest_phantom(-1)
    with pytest.raises(ValueError, match="spacing_mm"):
        generate_chest_phantom(0, shape=(8, 8, 8), spacing_mm=(1.0, 0.0, 1.0))
