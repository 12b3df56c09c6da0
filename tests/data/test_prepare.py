from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.helpers import TINY_OVERRIDES, TINY_PROTOCOL, compose_config
from x2ct.data.ct_volume import CTVolume
from x2ct.data.layout import SPLITS, DatasetLayout, sha256_file
from x2ct.data.prepare import (
    PatientTask,
    SplitConfig,
    load_prepare_config,
    make_splits,
    prepare_dataset,
    prepare_patient,
    protocol_geometry,
)
from x2ct.folder_lock import LOCK_NAME

REPO = Path(__file__).resolve().parents[2]


def tiny_config(root, *extra):
    base = TINY_PROTOCOL if "source=folder" in extra else TINY_OVERRIDES
    return load_prepare_config(compose_config("prepare", [*base, f"output_dir={root}", *extra]))


def test_prepared_dataset_has_every_file_and_consistent_metadata(tiny_dataset):
    layout = DatasetLayout(tiny_dataset)
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["patients"] == [f"phantom_{i:04d}" for i in range(5)]
    assert manifest["views"]["names"] == ["pa", "lateral"]
    assert manifest["views"]["angles_deg"] == [0.0, 90.0]
    splits = {s: layout.split_file(s).read_text().split() for s in SPLITS}
    assert sorted(pid for ids in splits.values() for pid in ids) == manifest["patients"]
    assert all(len(ids) >= 1 for ids in splits.values())
    maxima = []
    for pid in manifest["patients"]:
        meta = json.loads(layout.meta(pid).read_text())
        drr = np.load(layout.drr(pid))
        assert drr.shape == (2, 32, 32) and drr.dtype == np.float32
        assert meta["views"]["max_line_integral"] == pytest.approx(float(drr.max()))
        maxima.append(drr.max())
        img = nib.load(layout.ct(pid))
        assert img.shape == (24, 24, 24)
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), [352 / 24] * 3)
        assert meta["source"]["kind"] == "phantom"
    assert manifest["views"]["scale"] == pytest.approx(float(max(maxima)))
    # nothing half-written left behind; the folder's lock is released (emptied, see x2ct/folder_lock.py)
    assert not [p for p in tiny_dataset.rglob(".*") if p.name not in (".hydra", LOCK_NAME)]
    assert (tiny_dataset / LOCK_NAME).read_text() == ""


def test_preparation_is_deterministic(tiny_dataset, tmp_path):
    report = prepare_dataset(tiny_config(tmp_path / "again", "source.num_patients=2"), progress=False)
    assert report.ok
    for pid in report.prepared:
        a, b = DatasetLayout(tiny_dataset), DatasetLayout(tmp_path / "again")
        np.testing.assert_array_equal(np.load(a.drr(pid)), np.load(b.drr(pid)))
        np.testing.assert_array_equal(nib.load(a.ct(pid)).get_fdata(), nib.load(b.ct(pid)).get_fdata())


def test_rerun_skips_complete_patients_and_redoes_missing_ones(tmp_path):
    root = tmp_path / "ds"
    cfg = tiny_config(root, "source.num_patients=3")
    first = prepare_dataset(cfg, progress=False)
    assert first.prepared == ["phantom_0000", "phantom_0001", "phantom_0002"]
    layout = DatasetLayout(root)
    shutil.rmtree(layout.patient_dir("phantom_0001"))
    # a crashed run's half-built folder is ignored and replaced
    (layout.patients_dir / ".phantom_0001.partial").mkdir()
    (layout.patients_dir / ".phantom_0001.partial" / "ct.nii.gz").write_bytes(b"half")
    second = prepare_dataset(cfg, progress=False)
    assert second.prepared == ["phantom_0001"]
    assert second.skipped == ["phantom_0000", "phantom_0002"]
    assert not (layout.patients_dir / ".phantom_0001.partial").exists()


def test_rerun_with_other_settings_into_the_same_folder_is_refused(tmp_path):
    prepare_dataset(tiny_config(tmp_path / "ds", "source.num_patients=1"), progress=False)
    with pytest.raises(ValueError, match="other source/protocol settings"):
        prepare_dataset(tiny_config(tmp_path / "ds", "source.num_patients=1", "protocol.mu_water=0.02"),
                        progress=False)


def test_a_data_set_another_process_prepares_is_refused_or_waited_for(tmp_path, capsys):
    from tests.test_folder_lock import _holder
    from x2ct.folder_lock import FolderInUseError

    root = tmp_path / "ds"
    holder = _holder(root, 120)
    try:
        with pytest.raises(FolderInUseError, match=rf"data set {root} is in use by pid {holder.pid} on host "):
            prepare_dataset(tiny_config(root, "source.num_patients=1"), progress=False)
        assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]  # nothing written beside the lock
    finally:
        holder.kill()
        holder.wait()
    holder = _holder(root, 1.5)  # finishes on its own: a waiting preparation then goes ahead
    report = prepare_dataset(tiny_config(root, "source.num_patients=1"), progress=False, lock_wait_s=60)
    assert holder.wait() == 0 and report.ok and report.prepared == ["phantom_0000"]
    assert f"data set {root}: waiting for pid {holder.pid}" in capsys.readouterr().err
    assert (root / LOCK_NAME).read_text() == ""  # released


def write_nifti(path, hu, spacing=(5.0, 5.0, 5.0)):
    CTVolume(hu=hu.astype(np.float32), spacing=spacing).save_nifti(path)


def test_folder_source_goes_on_past_a_corrupt_file_and_lists_it(tmp_path):
    cts = tmp_path / "cts"
    cts.mkdir()
    hu = np.full((40, 40, 40), -1000.0)
    hu[10:30, 8:32, 8:32] = 40.0
    write_nifti(cts / "good.nii.gz", hu)
    (cts / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    root = tmp_path / "ds"
    report = prepare_dataset(tiny_config(root, "source=folder", f"source.path={cts}"), progress=False)
    assert report.prepared == ["good"]
    assert [f["patient_id"] for f in report.failures] == ["broken"]
    assert "broken.nii.gz" in report.failures[0]["error"]
    assert json.loads((root / "failures.json").read_text())[0]["patient_id"] == "broken"
    assert json.loads((root / "dataset.json").read_text())["patients"] == ["good"]


@pytest.mark.slow
def test_prepare_entrypoint_exits_nonzero_on_failures_and_zero_when_clean(tmp_path):
    cts = tmp_path / "cts"
    cts.mkdir()
    hu = np.full((30, 30, 30), -1000.0)
    hu[5:25, 5:25, 5:25] = 0.0
    write_nifti(cts / "ok.nii", hu)
    args = [sys.executable, str(REPO / "prepare.py"), *TINY_PROTOCOL, "source=folder", f"source.path={cts}",
            f"output_dir={tmp_path / 'ds'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    clean = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "OK: no problems found" in clean.stdout
    (cts / "bad.nii").write_bytes(b"not a NIfTI header " * 40)
    failed = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode == 1
    assert "bad.nii" in failed.stderr


def test_parallel_workers_give_the_same_data_as_one_worker(tiny_dataset, tmp_path):
    report = prepare_dataset(tiny_config(tmp_path / "par", "source.num_patients=2", "workers=2"), progress=False)
    assert report.ok and report.prepared == ["phantom_0000", "phantom_0001"]
    for pid in report.prepared:
        np.testing.assert_array_equal(np.load(DatasetLayout(tmp_path / "par").drr(pid)),
                                      np.load(DatasetLayout(tiny_dataset).drr(pid)))


def test_splits_are_deterministic_disjoint_and_cover_everyone():
    ids = [f"p{i:02d}" for i in range(20)]
    split = SplitConfig(seed=3, train=0.7, val=0.15, test=0.15)
    a = make_splits(ids, split)
    assert a == make_splits(list(reversed(ids)), split)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 3, 3)
    assert make_splits(ids, SplitConfig(seed=4, train=0.7, val=0.15, test=0.15)) != a


def test_config_typos_and_wrong_types_name_the_key():
    cfg = compose_config("prepare", [])
    bad = OmegaConf.to_container(cfg)
    bad["protocol"]["geometry"]["pixel_spacing"] = [1, 1]
    with pytest.raises(Exception, match="pixel_spacing"):
        load_prepare_config(bad)
    bad = OmegaConf.to_container(cfg)
    bad["workers"] = "many"
    with pytest.raises(Exception, match="workers"):
        load_prepare_config(bad)
    bad = OmegaConf.to_container(cfg)
    bad["protocol"]["view_normalisation"] = "max"
    with pytest.raises(ValueError, match=r"protocol\.view_normalisation"):
        load_prepare_config(bad)


def test_presets_match_the_published_protocols():
    gan = load_prepare_config(compose_config("prepare", ["protocol=x2ct_gan"])).protocol
    geometry, names = protocol_geometry(gan)
    assert names == ["pa", "lateral"]
    assert (geometry.source_to_isocenter_mm, geometry.source_to_detector_mm) == (541, 949)
    assert geometry.detector_shape == (320, 320)
    assert geometry.detector_shape[1] * geometry.pixel_spacing_mm[1] == pytest.approx(500.0)
    assert gan.preprocess.size == [128, 128, 128] and gan.preprocess.fov_mm == [320, 320, 320]
    assert gan.preprocess.spacing_mm == 1.0 and gan.preprocess.remove_bed
    assert gan.preprocess.hu_window == [-1000, 1500]  # HU + 1000 clipped to [0, 2500]
    assert gan.view_size == [128, 128] and gan.view_normalisation == "per_image_max"

    c2rv = load_prepare_config(compose_config("prepare", ["protocol=c2rv", "protocol.geometry.num_views=6"]))
    geometry, names = protocol_geometry(c2rv.protocol)
    assert geometry.angles_deg == (0.0, 30.0, 60.0, 90.0, 120.0, 150.0)
    assert names[1] == "angle_30"
    assert (geometry.source_to_isocenter_mm, geometry.source_to_detector_mm) == (800, 1200)
    assert geometry.detector_shape == (256, 256) and geometry.pixel_spacing_mm == (2.4, 2.4)
    assert c2rv.protocol.preprocess.size == [256, 256, 256]
    assert c2rv.protocol.preprocess.size[0] * c2rv.protocol.preprocess.spacing_mm == pytest.approx(409.6)
    assert c2rv.protocol.preprocess.hu_window == [-1000, 1024]
    assert c2rv.protocol.view_normalisation == "global_max"


@pytest.mark.slow
def test_x2ct_gan_preset_runs_end_to_end_on_a_phantom(tmp_path):
    cfg = load_prepare_config(compose_config("prepare", [
        "protocol=x2ct_gan", "source.num_patients=1", f"output_dir={tmp_path}", "workers=1"]))
    meta = prepare_patient(PatientTask("phantom_0000", seed=0), cfg, tmp_path)
    assert meta["views"]["shape"] == [2, 128, 128]
    assert meta["ct"]["shape"] == [128, 128, 128]


@pytest.mark.realdata
@pytest.mark.parametrize("protocol", ["default", "x2ct_gan"])
def test_real_example_ct_prepares_and_verifies(example_ct_file, tmp_path, monkeypatch, protocol):
    from x2ct.data.verify import verify_dataset

    monkeypatch.setenv("X2CT_EXAMPLE_CT_DIR", str(example_ct_file.parent))
    cfg = load_prepare_config(compose_config("prepare", [
        "source=example_ct", f"protocol={protocol}", f"output_dir={tmp_path / 'ds'}", "workers=1"]))
    report = prepare_dataset(cfg, progress=False)
    assert report.ok and report.prepared == ["example_cxr"]
    check = verify_dataset(tmp_path / "ds")
    assert check.ok, check.problems
    meta = json.loads(DatasetLayout(tmp_path / "ds").meta("example_cxr").read_text())
    assert meta["original"]["shape"] == [133, 512, 512]
    assert meta["source"]["sha256"] == sha256_file(example_ct_file)
    # the shipped TotalSegmentator mask, carried onto the grid: each region holds the tissue it names
    from x2ct.data.readers import read_nifti
    from x2ct.data.regions import REGIONS, load_regions

    layout = DatasetLayout(tmp_path / "ds")
    regions, ct = load_regions(layout.regions("example_cxr")), read_nifti(layout.ct("example_cxr")).hu
    assert all(meta["regions"][name] > 100 for name in REGIONS)
    assert np.median(ct[regions == REGIONS["lungs"]]) < -700
    assert np.median(ct[regions == REGIONS["bone"]]) > 150
    assert -100 < np.median(ct[regions == REGIONS["heart"]]) < 500  # blood pool, contrast-enhanced or not


def test_folder_with_dicom_series_and_nifti_files_one_patient_each(tmp_path):
    from tests.data.test_readers import write_axial_series

    cts = tmp_path / "cts"
    hu = np.full((12, 32, 32), -1000.0, dtype=np.float32)
    hu[2:10, 8:24, 8:24] = 50.0
    write_axial_series(cts / "patient_a" / "series1", hu, dz=10.0, pixel_spacing=(10.0, 10.0))
    write_nifti(cts / "patient_b.nii.gz", hu, spacing=(10.0, 10.0, 10.0))
    gappy = write_axial_series(cts / "patient_c", hu, dz=10.0, pixel_spacing=(10.0, 10.0))
    gappy[5].unlink()
    report = prepare_dataset(tiny_config(tmp_path / "ds", "source=folder", f"source.path={cts}"), progress=False)
    assert report.prepared == ["patient_a_series1", "patient_b"]
    assert [f["patient_id"] for f in report.failures] == ["patient_c"]
    assert "missing slice" in report.failures[0]["error"] and "patient_c" in report.failures[0]["error"]
    # the same box read from DICOM and from NIfTI renders to the same views
    layout = DatasetLayout(tmp_path / "ds")
    np.testing.assert_allclose(np.load(layout.drr("patient_a_series1")), np.load(layout.drr("patient_b")),
                               atol=1e-4)


def test_a_wrapped_dicom_series_is_warned_about_and_counted_in_meta_json(tmp_path):
    """A series whose HU below -1024 an unsigned 16-bit writer wrapped to near +64,500 is warned about, and
    meta.json counts the wrapped voxels."""
    from tests.data.test_readers import write_dicom_slice
    from x2ct.data.readers import HURangeWarning

    hu = np.full((12, 32, 32), -1000, dtype=np.int64)
    hu[2:10, 8:24, 8:24] = 50
    hu[:, :4, :4] = -2000  # 192 voxels below -1024, which the writer wraps
    series = tmp_path / "cts" / "patient_a"
    series.mkdir(parents=True)
    for s, image in enumerate(hu):
        write_dicom_slice(series / f"IM{s}.dcm", ((image + 1024) % 65536).astype(np.uint16), (0.0, 0.0, 10.0 * s),
                          pixel_spacing=(10.0, 10.0))
    root = tmp_path / "ds"
    with pytest.warns(HURangeWarning, match=r"patient_a: 0 voxel\(s\) below -1024 HU and 192 above 3071 HU"):
        report = prepare_dataset(tiny_config(root, "source=folder", f"source.path={tmp_path / 'cts'}"),
                                 progress=False)
    assert report.prepared == ["patient_a"]
    outside = json.loads(DatasetLayout(root).meta("patient_a").read_text())["original"]["hu_outside_scale"]
    assert (outside["below"], outside["above"], outside["max"]) == (0, 192, 63536.0)


def test_phantoms_are_inside_the_ct_scale(tiny_dataset):
    for pid in json.loads((tiny_dataset / "dataset.json").read_text())["patients"]:
        outside = json.loads(DatasetLayout(tiny_dataset).meta(pid).read_text())["original"]["hu_outside_scale"]
        assert (outside["below"], outside["above"], outside["padding"]) == (0, 0, 0)


@pytest.mark.slow
def test_prepare_entrypoint_reports_an_empty_source_folder_cleanly(tmp_path):
    (tmp_path / "empty").mkdir()
    args = [sys.executable, str(REPO / "prepare.py"), "source=folder", f"source.path={tmp_path / 'empty'}",
            f"output_dir={tmp_path / 'ds'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'empty'}: no CT files found" in result.stderr
    assert "Traceback" not in result.stderr


def test_preparing_in_process_leaves_the_callers_thread_count(tmp_path, monkeypatch):
    """workers=1 prepares in the calling process (a trainer's rank 0 does so for a missing data set): its thread
    count is put back, so the caller computes as it did before (a deep model's gradients move with it)."""
    import torch

    monkeypatch.setattr("os.cpu_count", lambda: 4)  # preparation would take 4 threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert prepare_dataset(tiny_config(tmp_path / "ds", "source.num_patients=1"), progress=False).ok
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (from every thread's /proc children list)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited process its new parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


PREPARE_WITH_WORKERS = """
import sys
from tests.helpers import TINY_OVERRIDES, compose_config
from x2ct.data.prepare import load_prepare_config, prepare_dataset

if __name__ == "__main__":
    overrides = [*TINY_OVERRIDES, "source.num_patients=12", "workers=2", f"output_dir={sys.argv[1]}"]
    cfg = compose_config("prepare", overrides)
    prepare_dataset(load_prepare_config(cfg), progress=False)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from Linux's /proc")
def test_killing_the_parent_ends_its_preparation_workers(tmp_path):
    """`kill -9` of a `prepare.py workers=2` ends its workers too, rather than leaving them running, blocked on a
    task queue whose other end nobody holds."""
    import os
    import signal
    import time

    script = tmp_path / "prepare_with_workers.py"
    script.write_text(PREPARE_WITH_WORKERS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "ds")], cwd=REPO, env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [c for c in _children(parent.pid)
                       if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
        assert len(workers) == 2, f"no two workers appeared (parent exit code {parent.poll()})"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _running(w)], "workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for worker in workers:
            if _running(worker):
                os.kill(worker, signal.SIGKILL)


def test_benchmark_grid_presets_are_the_benchmarks_grid_with_the_table_removed():
    """benchmark_v2 and the real CT on the same grid compare with `benchmark`: the same grid, detector, views and
    splits; the preset differs only in removing the table. The 64^3 tier is the same cube at twice the voxels."""
    def prepare_cfg(data: str):
        data_cfg = compose_config("train", [f"data={data}"]).data
        return load_prepare_config(compose_config("prepare", list(data_cfg.prepare)))

    old, v2, real = prepare_cfg("benchmark"), prepare_cfg("benchmark_v2"), prepare_cfg("example_ct_32")
    for cfg in (v2, real):
        assert cfg.protocol.geometry == old.protocol.geometry
        assert (cfg.protocol.preprocess.size, cfg.protocol.preprocess.fov_mm) == ([32] * 3, [352.0] * 3)
        assert cfg.protocol.preprocess.remove_bed and not old.protocol.preprocess.remove_bed
        assert (cfg.protocol.mu_water, cfg.protocol.view_normalisation) == (old.protocol.mu_water, "global_max")
    assert (v2.source.generator, old.source.generator) == ("v2", "v1")
    assert (v2.source.seed, v2.split, v2.source.num_patients) == (old.source.seed, old.split, 160)
    tier = prepare_cfg("benchmark_v2_64")
    assert tier.protocol.preprocess.size == [64] * 3 and tier.protocol.geometry.detector_shape == [128, 128]
    assert tier.protocol.geometry.views == old.protocol.geometry.views
    assert prepare_cfg("example_ct_64").protocol == tier.protocol
