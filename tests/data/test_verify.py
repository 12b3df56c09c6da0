from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from verify import main as verify_main
from x2ct.data.layout import DatasetLayout
from x2ct.data.verify import verify_dataset


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    return root


def test_fresh_data_set_passes(tiny_dataset, capsys):
    report = verify_dataset(tiny_dataset)
    assert report.ok, report.problems
    assert report.summary["patients"] == 5
    assert verify_main([str(tiny_dataset)]) == 0
    assert "OK: no problems found" in capsys.readouterr().out


def test_changed_file_fails_its_checksum(dataset_copy):
    layout = DatasetLayout(dataset_copy)
    drr = layout.drr("phantom_0001")
    np.save(drr, np.load(drr) * 1.01)
    report = verify_dataset(dataset_copy)
    assert any("phantom_0001/drr.npy" in p and "checksum" in p for p in report.problems)
    assert verify_main([str(dataset_copy)]) == 1


def test_nan_views_and_missing_views_are_reported(dataset_copy):
    layout = DatasetLayout(dataset_copy)
    nan = np.load(layout.drr("phantom_0000"))
    nan[0, 3, 3] = np.nan
    np.save(layout.drr("phantom_0000"), nan)
    np.save(layout.drr("phantom_0002"), np.load(layout.drr("phantom_0002"))[:1])
    problems = verify_dataset(dataset_copy, checksums=False).problems
    assert any("phantom_0000/drr.npy" in p and "NaN" in p for p in problems)
    assert any("phantom_0002/drr.npy" in p and "missing view" in p for p in problems)


def test_split_overlap_and_missing_patient_are_reported(dataset_copy):
    layout = DatasetLayout(dataset_copy)
    train = layout.split_file("train").read_text().split()
    layout.split_file("test").write_text("\n".join([*layout.split_file("test").read_text().split(), train[0]]))
    shutil.rmtree(layout.patient_dir("phantom_0003"))
    problems = verify_dataset(dataset_copy).problems
    assert any("splits train and test overlap" in p and train[0] in p for p in problems)
    assert any("phantom_0003/meta.json" in p and "missing" in p for p in problems)


def test_corrupt_ct_is_reported_with_its_file(dataset_copy):
    layout = DatasetLayout(dataset_copy)
    layout.ct("phantom_0004").write_bytes(layout.ct("phantom_0004").read_bytes()[:200])
    problems = verify_dataset(dataset_copy, checksums=False).problems
    assert any("phantom_0004/ct.nii.gz" in p for p in problems)


def test_empty_folder_is_not_a_data_set(tmp_path):
    report = verify_dataset(tmp_path)
    assert not report.ok and "dataset.json" in report.problems[0]


def test_truncated_meta_json_is_a_problem_naming_it(dataset_copy, capsys):
    """A truncated meta.json is a problem naming the file, not a raw JSONDecodeError that stops verify.py."""
    meta = DatasetLayout(dataset_copy).meta("phantom_0001")
    meta.write_text(meta.read_text()[:40])
    report = verify_dataset(dataset_copy)
    assert any("phantom_0001/meta.json: not valid JSON" in p for p in report.problems), report.problems
    assert verify_main([str(dataset_copy)]) == 1
    assert "phantom_0001/meta.json" in capsys.readouterr().out


@pytest.mark.parametrize("checksums", [True, False])
def test_meta_json_without_a_checksum_key_is_a_problem_naming_it(dataset_copy, checksums):
    layout = DatasetLayout(dataset_copy)
    meta = json.loads(layout.meta("phantom_0002").read_text())
    del meta["checksums"]["drr.npy"]
    layout.meta("phantom_0002").write_text(json.dumps(meta))
    del_all = json.loads(layout.meta("phantom_0003").read_text())
    del del_all["checksums"]
    layout.meta("phantom_0003").write_text(json.dumps(del_all))
    problems = verify_dataset(dataset_copy, checksums=checksums).problems
    assert any("phantom_0002/meta.json: no checksum for drr.npy" in p for p in problems), problems
    assert any("phantom_0003/meta.json: no 'checksums' record" in p for p in problems), problems
    assert len(problems) == 2


def test_a_data_set_with_no_patients_is_not_ok(dataset_copy, capsys):
    layout = DatasetLayout(dataset_copy)
    manifest = json.loads(layout.manifest.read_text())
    manifest["patients"] = []
    layout.manifest.write_text(json.dumps(manifest))
    shutil.rmtree(layout.patients_dir)
    for split in ("train", "val", "test"):
        layout.split_file(split).write_text("")
    report = verify_dataset(dataset_copy)
    assert report.problems == [f"{layout.manifest}: lists no patients; there is nothing to train or evaluate on "
                               "(did every patient fail to prepare?)"]
    assert verify_main([str(dataset_copy)]) == 1
    assert "OK" not in capsys.readouterr().out


def test_truncated_or_incomplete_manifest_and_failures_are_problems_naming_them(dataset_copy):
    layout = DatasetLayout(dataset_copy)
    layout.failures.write_text("[{\"patient_id\": ")
    problems = verify_dataset(dataset_copy).problems
    assert any("failures.json: not valid JSON" in p for p in problems), problems
    manifest = json.loads(layout.manifest.read_text())
    del manifest["patients"]
    layout.manifest.write_text(json.dumps(manifest))
    assert verify_dataset(dataset_copy).problems == [f"{layout.manifest}: incomplete, no key 'patients' (not "
                                                     "written by prepare.py, or edited)"]
    layout.manifest.write_text("{\"format_version\": 1, \"views\"")
    [problem] = verify_dataset(dataset_copy).problems
    assert problem.startswith(f"{layout.manifest}: not valid JSON")
