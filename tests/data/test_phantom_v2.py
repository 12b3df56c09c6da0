"""Phantom generator v2: structures present, poses and phases reachable, statistics within published references."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from tests.data.test_phantom import assert_seed_decides_the_patient
from x2ct.data import phantom
from x2ct.data.phantom import LABELS_V2, PhantomConfig, PhantomV2Config, draw_patient_v2, generate_chest_phantom
from x2ct.data.phantom.references import REFERENCES as ref
from x2ct.data.phantom.v2.config import ARM_POSES, CONTRAST_PHASES, HABITUS

HEART = ("heart", "left_ventricle", "right_ventricle", "left_atrium", "right_atrium")
LUNGS = ("lung", "pulmonary_vessel", "nodule")
COHORT = tuple(range(12))
# v2 is the generator of a PhantomV2Config; a test's own config= replaces the default one
generate_v2 = partial(generate_chest_phantom, config=PhantomV2Config())


def one_hot(options, choice) -> tuple[float, ...]:
    return tuple(1.0 if o == choice else 0.0 for o in options)


def volume_ml(ct, labels, names) -> float:
    return float(np.isin(labels, [LABELS_V2[n] for n in names]).sum()) * float(np.prod(ct.spacing)) / 1000.0


@pytest.fixture(scope="module")
def full_patient():
    config = PhantomV2Config(female_probability=1.0, table_probability=1.0, truncation_probability=0.0,
                             stomach_gas_probability=1.0, nodule_count=(1, 1))
    return generate_v2(0, shape=(64, 64, 64), config=config, with_labels=True)


@pytest.fixture(scope="module")
def cohort():
    """Whole-trunk grids (the liver fits), no table, no truncation: the statistics' patients."""
    config = PhantomV2Config(truncation_probability=0.0, table_probability=0.0)
    return {seed: generate_v2(seed, shape=(110, 64, 80), spacing_mm=(5.0, 6.0, 6.0), config=config,
                              with_labels=True) for seed in COHORT}


# --- structures --------------------------------------------------------------------------------------------
def test_every_structure_is_present(full_patient):
    ct, labels = full_patient
    assert ct.hu.shape == labels.shape == (64, 64, 64) and ct.hu.dtype == np.float32 and labels.dtype == np.uint8
    counts = {name: int((labels == i).sum()) for name, i in LABELS_V2.items()}
    missing = [name for name, n in counts.items() if n == 0]
    assert not missing, missing
    assert set(np.unique(labels)) <= set(LABELS_V2.values())
    assert np.isfinite(ct.hu).all()


def test_labels_keep_v1_ids():
    from x2ct.data.phantom import LABELS

    assert {name: LABELS_V2[name] for name in LABELS} == LABELS
    assert len(set(LABELS_V2.values())) == len(LABELS_V2)


@pytest.mark.parametrize("pose", ARM_POSES)
def test_each_arm_pose_is_reachable_and_placed(pose):
    config = PhantomV2Config(arm_pose_weights=one_hot(ARM_POSES, pose), truncation_probability=0.0)
    ct, labels = generate_v2(3, shape=(48, 48, 48), config=config, with_labels=True)
    assert ct.metadata["choices"]["arm_pose"] == pose
    z = ct.origin[2] + ct.spacing[0] * np.arange(labels.shape[0])
    y = ct.origin[1] + ct.spacing[1] * np.arange(labels.shape[1])
    humerus_z = z[np.nonzero(labels == LABELS_V2["humerus"])[0]]
    arm = labels == LABELS_V2["arm"]
    if pose == "up":  # only the raised humeri near the top of the field of view
        assert humerus_z.min() > 40.0
        assert not arm[z < 0].any()
    else:  # the humerus runs down beside the torso
        assert humerus_z.min() < -60.0
    if pose == "across":  # forearms in front of the lower chest
        low = arm & (z < -80.0)[:, None, None]
        assert low.any() and y[np.nonzero(low)[1]].mean() > 50.0


def test_categorical_draws_reach_every_option_with_default_weights():
    drawn = [draw_patient_v2(seed, PhantomV2Config()) for seed in range(60)]
    assert {d.arm_pose for d in drawn} == set(ARM_POSES)
    assert {d.habitus for d in drawn} == set(HABITUS)
    assert {d.contrast_phase for d in drawn} == set(CONTRAST_PHASES)
    assert {d.sex for d in drawn} == {"female", "male"}
    assert {d.has_table for d in drawn} == {d.truncated for d in drawn} == {True, False}


def test_contrast_phase_sets_blood_hu_into_published_ranges():
    medians, bodies = {}, {}
    for phase in CONTRAST_PHASES:
        config = PhantomV2Config(contrast_weights=one_hot(CONTRAST_PHASES, phase), truncation_probability=0.0)
        ct, labels = generate_v2(5, shape=(64, 64, 64), config=config, with_labels=True)
        medians[phase] = {name: float(np.median(ct.hu[labels == LABELS_V2[name]]))
                          for name in ("aorta", "left_ventricle", "liver")}
        bodies[phase] = np.where(labels == LABELS_V2["body"], ct.hu, np.nan)
    assert medians["none"]["aorta"] in ref["blood_hu"] and medians["none"]["left_ventricle"] in ref["blood_hu"]
    assert medians["arterial"]["aorta"] in ref["arterial_blood_hu"]
    assert medians["arterial"]["left_ventricle"] in ref["arterial_blood_hu"]
    assert medians["venous"]["aorta"] in ref["venous_blood_hu"]
    assert medians["venous"]["liver"] in ref["venous_liver_hu"] and medians["none"]["liver"] in ref["liver_hu"]
    # muscle keeps its HU, but where it touches an enhanced vessel or organ (partial volume)
    changed = np.abs(bodies["arterial"] - bodies["none"]) > 1e-3
    assert 0 < np.nanmean(np.where(np.isnan(bodies["none"]), np.nan, changed)) < 0.1


def test_table_appears_only_when_drawn_and_lies_below_a_gap():
    without = generate_v2(2, shape=(48, 64, 64), with_labels=True, config=PhantomV2Config(table_probability=0.0))
    assert not (without[1] == LABELS_V2["table"]).any() and without[0].metadata["choices"]["table"] is False
    ct, labels = generate_v2(2, shape=(48, 64, 64), with_labels=True, config=PhantomV2Config(table_probability=1.0))
    table = labels == LABELS_V2["table"]
    assert table.any() and ct.metadata["choices"]["table"] is True
    # a foam core in a composite shell (thin: partial volume on a coarse grid)
    assert np.median(ct.hu[table]) < -500 and ct.hu[table].max() > -500
    patient = (labels != LABELS_V2["background"]) & ~table
    j = np.arange(labels.shape[1])[None, :, None]
    top_of_table = np.where(table, j, -1).max(axis=1)
    lowest_patient = np.where(patient, j, labels.shape[1]).min(axis=1)
    both = (top_of_table >= 0) & (lowest_patient < labels.shape[1])
    assert both.any()
    assert (lowest_patient[both] - top_of_table[both]).min() >= 2  # at least one voxel of air or foam between


# --- statistics against published references -----------------------------------------------------------
def test_organ_volumes_and_chest_diameters_lie_in_published_ranges(cohort):
    for seed, (ct, labels) in cohort.items():
        assert volume_ml(ct, labels, LUNGS) in ref["lung_volume_ml"], seed
        assert volume_ml(ct, labels, HEART) in ref["heart_volume_ml"], seed
        assert volume_ml(ct, labels, ("liver",)) in ref["liver_volume_ml"], seed
        assert volume_ml(ct, labels, ("spleen",)) in ref["spleen_volume_ml"], seed
        # external torso at the widest rib cage level (arms and shoulder bones left out)
        scale = ct.metadata["choices"]["scale"]
        k = round((ct.metadata["patient"]["thorax_widest_z_mm"] * scale - ct.origin[2]) / ct.spacing[0])
        torso = ~np.isin(labels[k], [LABELS_V2[n] for n in ("background", "arm", "humerus", "table")])
        j, i = np.nonzero(torso)
        assert (i.max() - i.min() + 1) * ct.spacing[2] in ref["chest_lr_diameter_mm"], seed
        assert (j.max() - j.min() + 1) * ct.spacing[1] in ref["chest_ap_diameter_mm"], seed


def test_bone_sizes_lie_in_published_ranges(cohort):
    for seed, (ct, _) in cohort.items():
        bones = ct.metadata["bones"]
        for side in ("right", "left"):
            assert bones[side]["clavicle_length_mm"] in ref["clavicle_length_mm"], seed
            assert bones[side]["humeral_head_diameter_mm"] in ref["humeral_head_diameter_mm"], seed
            assert bones[side]["scapula_height_mm"] in ref["scapula_height_mm"], seed
        assert bones["right"]["acromion_x_mm"] - bones["left"]["acromion_x_mm"] in ref["biacromial_breadth_mm"]
        assert 2 * ct.metadata["patient"]["vertebral_half_width_mm"] in ref["thoracic_vertebra_width_mm"]


def test_tissue_hu_medians_lie_in_published_ranges(cohort):
    checks = {"fat": ref["fat_hu"], "body": ref["muscle_hu"], "lung": ref["lung_hu"], "breast": ref["breast_hu"]}
    unenhanced = {"liver": ref["liver_hu"], "spleen": ref["spleen_hu"], "aorta": ref["blood_hu"]}
    seen_unenhanced = 0
    for seed, (ct, labels) in cohort.items():
        phase = ct.metadata["choices"]["contrast_phase"]
        for name, reference in checks.items() | (unenhanced.items() if phase == "none" else {}.items()):
            values = ct.hu[labels == LABELS_V2[name]]
            if values.size:
                assert float(np.median(values)) in reference, (seed, name)
        seen_unenhanced += phase == "none"
        bone = np.isin(labels, [LABELS_V2[n] for n in ("bone", "humerus")])
        assert np.median(ct.hu[bone]) > ref["cancellous_bone_hu"].low
    assert seen_unenhanced >= 2


def test_variation_across_patients(cohort):
    lungs = np.array([volume_ml(ct, lab, LUNGS) for ct, lab in cohort.values()])
    assert lungs.std() / lungs.mean() > 0.08
    domes = [ct.metadata["patient"]["inspiration_drop_mm"] for ct, _ in cohort.values()]
    assert np.ptp(domes) > 15.0


# --- texture and noise -------------------------------------------------------------------------------------
def test_texture_varies_inside_organs_and_noise_is_seeded():
    flat = PhantomV2Config(soft_texture_hu=(0.0, 0.0), lung_texture_hu=(0.0, 0.0), truncation_probability=0.0,
                           contrast_weights=(1.0, 0.0, 0.0))
    textured = PhantomV2Config(truncation_probability=0.0, contrast_weights=(1.0, 0.0, 0.0))
    a, la = generate_v2(4, shape=(48, 48, 48), config=flat, with_labels=True)
    b, lb = generate_v2(4, shape=(48, 48, 48), config=textured, with_labels=True)
    np.testing.assert_array_equal(la, lb)  # texture changes HU only
    liver = binary_erosion(la == LABELS_V2["liver"], iterations=2)  # away from its edges' partial volume
    assert liver.sum() > 50
    assert np.std(b.hu[liver]) > np.std(a.hu[liver]) + 2.0
    assert (a.hu[la == 0] == b.hu[la == 0]).all()  # no texture outside the body
    noisy = PhantomV2Config(noise_std_hu=20.0, truncation_probability=0.0)
    n1 = generate_v2(4, shape=(48, 48, 48), config=noisy)
    n2 = generate_v2(4, shape=(48, 48, 48), config=noisy)
    np.testing.assert_array_equal(n1.hu, n2.hu)
    assert np.std((n1.hu - b.hu)[lb == LABELS_V2["body"]]) == pytest.approx(20.0, rel=0.15)


# --- determinism, truncation, metadata -----------------------------------------------------------------
def test_same_seed_gives_identical_phantom_and_other_seeds_differ():
    assert_seed_decides_the_patient(generate_v2, 8)


def test_truncated_scan_is_the_scanned_slab_of_the_same_patient():
    full_cfg = PhantomV2Config(truncation_probability=0.0)
    cut_cfg = PhantomV2Config(truncation_probability=1.0, scan_margin_above_apex_mm=(10.0, 10.0),
                              scan_margin_below_recess_mm=(20.0, 20.0))
    full, lfull = generate_v2(6, shape=(48, 40, 40), config=full_cfg, with_labels=True)
    cut, lcut = generate_v2(6, shape=(48, 40, 40), config=cut_cfg, with_labels=True)
    sd = full.spacing[0]
    assert full.metadata["truncated"] is False and cut.metadata["truncated"] is True
    assert full.hu.shape[0] == 48 and cut.hu.shape[0] < 48 and cut.hu.shape[1:] == (40, 40)
    # planned from 10 mm above the lung apex to 20 mm below the lowest costophrenic recess
    lungs = np.flatnonzero((lfull == LABELS_V2["lung"]).any(axis=(1, 2)))
    lung_mm = (lungs[-1] - lungs[0] + 1) * sd
    assert cut.hu.shape[0] * sd == pytest.approx(lung_mm + 30.0, abs=2.5 * sd)
    assert cut.hu.shape[0] < 48
    k0 = round((cut.origin[2] - full.origin[2]) / sd)
    assert cut.origin[2] == pytest.approx(full.origin[2] + k0 * sd)
    assert cut.origin[:2] == full.origin[:2]
    np.testing.assert_array_equal(cut.hu, full.hu[k0:k0 + cut.hu.shape[0]])  # world positions kept
    np.testing.assert_array_equal(lcut, lfull[k0:k0 + cut.hu.shape[0]])
    assert k0 < lungs[0] and lungs[-1] < k0 + cut.hu.shape[0]  # the whole lungs are scanned, with margins
    lo, hi = cut.metadata["scan_range_z_mm"]
    assert lo == pytest.approx(cut.origin[2] - sd / 2) and hi == pytest.approx(lo + cut.hu.shape[0] * sd)
    assert full.metadata["scan_range_z_mm"] == pytest.approx([full.origin[2] - sd / 2, full.origin[2] + 47.5 * sd])


def test_metadata_is_json_ready_and_records_the_patient(full_patient):
    ct, _ = full_patient
    meta = json.loads(json.dumps(ct.metadata))
    assert meta["generator"] == "v2" and meta["seed"] == 0 and meta["labels"] == LABELS_V2
    assert meta["config"]["arm_pose_weights"] == list(PhantomV2Config().arm_pose_weights)
    assert meta["choices"]["sex"] == "female" and meta["choices"]["arm_pose"] in ARM_POSES
    lo, hi = PhantomV2Config().heart_half_length_mm
    assert lo <= meta["patient"]["heart_half_length_mm"] <= hi
    assert len(meta["nodules"]) == 1 and len(meta["nodules"][0]["centre_mm"]) == 3


def test_grid_is_centred_with_the_default_field_of_view():
    config = PhantomV2Config(truncation_probability=0.0)
    ct = generate_v2(1, shape=(32, 40, 48), config=config)
    np.testing.assert_allclose(ct.spacing, np.array(config.fov_mm) / (32, 40, 48))
    centre = ct.affine @ np.array([23.5, 19.5, 15.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-4)  # float32 voxel centres, as v1


# --- config ------------------------------------------------------------------------------------------------
def test_overriding_one_range_leaves_the_other_draws_alone():
    base = draw_patient_v2(11, PhantomV2Config())
    changed = draw_patient_v2(11, PhantomV2Config(clavicle_radius_mm=(7.0, 7.5)))
    assert 7.0 <= changed.drawn["clavicle_radius_mm"] <= 7.5
    assert {k: v for k, v in changed.drawn.items() if k != "clavicle_radius_mm"} == \
        {k: v for k, v in base.drawn.items() if k != "clavicle_radius_mm"}
    assert changed.choices() == base.choices()
    other_phase = draw_patient_v2(11, PhantomV2Config(contrast_weights=(0.0, 0.0, 1.0)))
    assert other_phase.drawn == base.drawn and other_phase.arm_pose == base.arm_pose


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lung_hu": (-800.0, -900.0)}, r"PhantomV2Config\.lung_hu"),
        ({"breast_hu": (1.0, 2.0, 3.0)}, r"PhantomV2Config\.breast_hu"),
        ({"table_gap_mm": "wide"}, r"PhantomV2Config\.table_gap_mm"),
        ({"female_probability": 1.5}, r"PhantomV2Config\.female_probability"),
        ({"table_probability": -0.1}, r"PhantomV2Config\.table_probability"),
        ({"truncation_probability": True}, r"PhantomV2Config\.truncation_probability"),
        ({"stomach_gas_probability": None}, r"PhantomV2Config\.stomach_gas_probability"),
        ({"arm_pose_weights": (1.0, 1.0)}, r"PhantomV2Config\.arm_pose_weights"),
        ({"habitus_weights": (0.0, 0.0, 0.0)}, r"PhantomV2Config\.habitus_weights"),
        ({"contrast_weights": (1.0, -1.0, 1.0)}, r"PhantomV2Config\.contrast_weights"),
        ({"texture_waves": -1}, r"PhantomV2Config\.texture_waves"),
        ({"fov_mm": (300.0, 0.0, 350.0)}, r"PhantomV2Config\.fov_mm"),
        ({"nodule_count": (3, 1)}, r"PhantomV2Config\.nodule_count"),
        ({"rib_count": -1}, r"PhantomV2Config\.rib_count"),
    ],
)
def test_bad_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhantomV2Config(**kwargs)


def test_the_config_type_picks_the_version():
    assert generate_v2(0, shape=(16, 16, 16)).metadata["generator"] == "v2"
    v1 = generate_chest_phantom(0, shape=(16, 16, 16), config=PhantomConfig())
    assert v1.metadata["generator"] == "x2ct.data.phantom.generate_chest_phantom" and "choices" not in v1.metadata
    assert generate_chest_phantom(0, shape=(16, 16, 16)).metadata == v1.metadata  # no config: v1's defaults

    class Flat(PhantomV2Config):  # a user's own config type: the version of its closest base
        pass

    assert generate_chest_phantom(0, shape=(16, 16, 16), config=Flat()).metadata["generator"] == "v2"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"PhantomConfig \(v1\) or a PhantomV2Config \(v2\), got dict"):
        generate_chest_phantom(0, shape=(8, 8, 8), config={"table_probability": 0.0})
    with pytest.raises(AttributeError, match=r"generate_chest_phantom\(seed, \.\.\., config=PhantomV2Config"):
        phantom.generate_chest_phantom_v2  # noqa: B018
    with pytest.raises(ValueError, match="seed"):
        generate_v2(-1)
    with pytest.raises(ValueError, match="shape"):
        generate_v2(0, shape=(8, 8))
    with pytest.raises(ValueError, match="spacing_mm"):
        generate_v2(0, shape=(8, 8, 8), spacing_mm=(1.0, 0.0, 1.0))
