"""evaluate.py end to end on a tiny trained run: metrics vs scikit-image, NIfTI geometry, files, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import evaluate as evaluate_cli
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.layout import DatasetLayout
from x2ct.data.regions import REGIONS, load_regions
from x2ct.engine.trained_model import load_trained_model
from x2ct.evaluation.evaluator import EvaluationSettings, evaluate
from x2ct.ops.hu_window import denormalise

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluation(tiny_run, tiny_dataset, tmp_path_factory):
    """The train split (3 patients, enough for statistics) evaluated once for the tests below."""
    out = tmp_path_factory.mktemp("eval") / "train_split"
    result = evaluate(EvaluationSettings(checkpoint=tiny_run / "checkpoints" / "best.pt", split="train", out_dir=out))
    return result


def predictions(checkpoint, dataset):
    trained = load_trained_model(checkpoint)
    with torch.no_grad():
        return {dataset.patient_ids[i]: trained.model(dataset[i]["views"][None]).volume.clamp(0, 1)[0, 0].double()
                for i in range(len(dataset))}


def test_per_patient_metrics_agree_with_scikit_image(evaluation, tiny_run, tiny_dataset):
    dataset = PatientDRRDataset(tiny_dataset, "train")
    preds = predictions(tiny_run / "checkpoints" / "best.pt", dataset)
    assert [r["patient_id"] for r in evaluation.rows] == dataset.patient_ids
    for i, row in enumerate(evaluation.rows):
        pred, target = preds[row["patient_id"]].numpy(), dataset[i]["ct"][0].double().numpy()
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1), abs=1e-4)
        reference_ssim = structural_similarity(target, pred, gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False, data_range=1)
        assert row["ssim"] == pytest.approx(reference_ssim, abs=1e-4)
        # X2CT-GAN's PSNR sits 20 log10(4095 / 2500) = 4.29 dB above the true one for the same volumes
        assert row["x2ct_gan_psnr_3d"] - row["psnr"] == pytest.approx(20 * math.log10(4095 / 2500), abs=0.05)


def test_hu_and_region_metrics_follow_their_definitions(evaluation, tiny_run, tiny_dataset):
    dataset = PatientDRRDataset(tiny_dataset, "train")
    preds = predictions(tiny_run / "checkpoints" / "best.pt", dataset)
    layout = DatasetLayout(tiny_dataset)
    lo, hi = dataset.hu_window
    for row in evaluation.rows:
        pid = row["patient_id"]
        pred_hu = denormalise(preds[pid].numpy(), dataset.hu_window)
        target_hu = nib.load(layout.ct(pid)).get_fdata().transpose(2, 1, 0)  # canonical RAS file: (W,H,D)->(D,H,W)
        target_hu = np.maximum(target_hu, -1000.0)  # below air is padding
        assert row["mae_hu"] == pytest.approx(np.abs(pred_hu - target_hu).mean(), rel=1e-5)
        assert row["psnr_hu"] == pytest.approx(
            peak_signal_noise_ratio(target_hu, pred_hu, data_range=hi - lo), abs=1e-4)
        regions = load_regions(layout.regions(pid))
        lungs = regions == REGIONS["lungs"]
        pred01, target01 = preds[pid].numpy(), np.clip((target_hu - lo) / (hi - lo), 0, 1)
        mse = np.mean((pred01[lungs] - target01[lungs]) ** 2)
        assert row["lungs_psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
        assert row["bone_mae_hu"] == pytest.approx(
            np.abs(pred_hu - target_hu)[regions == REGIONS["bone"]].mean(), rel=1e-5)
        assert 0 < row["heart_ssim"] <= 1 and row["ref_psnr"] > 0


def test_predicted_volume_overlays_the_target_in_a_viewer(evaluation, tiny_dataset):
    layout = DatasetLayout(tiny_dataset)
    for row in evaluation.rows:
        pred = nib.load(evaluation.out_dir / row["volume"])
        target = nib.load(layout.ct(row["patient_id"]))
        assert pred.shape == target.shape
        np.testing.assert_allclose(pred.affine, target.affine, atol=1e-6)
        assert pred.header.get_zooms() == pytest.approx(target.header.get_zooms())
        assert pred.header["sform_code"] == 1 and pred.header["qform_code"] == 1
        values = pred.get_fdata()
        lo, hi = PatientDRRDataset(tiny_dataset, "train").hu_window
        assert values.min() >= lo - 1e-3 and values.max() <= hi + 1e-3  # HU, within the model's window


def test_files_summary_and_report(evaluation):
    out = evaluation.out_dir
    rows = list(csv.DictReader(open(out / "per_patient.csv")))
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in evaluation.rows]
    summary = json.loads((out / "summary.json").read_text())
    psnrs = np.array([r["psnr"] for r in evaluation.rows])
    stats = summary["metrics"]["psnr"]
    assert stats["mean"] == pytest.approx(psnrs.mean()) and stats["std"] == pytest.approx(psnrs.std(ddof=1))
    assert stats["median"] == pytest.approx(np.median(psnrs))
    assert stats["ci95_low"] == pytest.approx(np.percentile(psnrs, 2.5))
    assert summary["context"]["split"] == "train" and summary["context"]["patients"] == 3
    assert "psnr" in summary["definitions"] and "x2ct_gan_psnr_3d" in summary["definitions"]
    assert {r["metric"] for r in csv.DictReader(open(out / "summary.csv"))} >= {"psnr", "ssim", "mae_hu",
                                                                             "lungs_psnr", "x2ct_gan_psnr_3d"}
    report = (out / "report.md").read_text()
    assert "## True 3D metrics" in report and "## X2CT-GAN metrics" in report and "## Per region" in report
    for row in evaluation.rows:
        assert (out / row["figure"]).stat().st_size > 10_000
        assert f"]({row['figure']})" in report
    assert not list(out.rglob("*.tmp*"))  # everything written atomically


def test_test_split_matches_the_trainers_own_test_numbers(tiny_run, tmp_path):
    result = evaluate(EvaluationSettings(checkpoint=tiny_run / "checkpoints" / "best.pt", out_dir=tmp_path / "e",
                                         save_volumes=False, save_figures=False))
    trainer = json.loads((tiny_run / "test_metrics.json").read_text())
    assert result.summary["psnr"]["mean"] == pytest.approx(trainer["psnr"], abs=1e-4)
    assert result.summary["ssim"]["mean"] == pytest.approx(trainer["ssim"], abs=1e-4)
    assert not (tmp_path / "e" / "volumes").exists() and not (tmp_path / "e" / "figures").exists()


def test_default_output_folder_is_inside_the_run(tiny_run, capsys):
    assert evaluate_cli.main([str(tiny_run / "checkpoints" / "last.pt"), "--no-figures", "--no-volumes"]) == 0
    assert (tiny_run / "evaluation" / "last_test" / "report.md").exists()
    assert "report:" in capsys.readouterr().out


def test_bad_inputs_fail_with_a_message_naming_them(tiny_run, tiny_dataset, tmp_path, capsys):
    best = str(tiny_run / "checkpoints" / "best.pt")
    assert evaluate_cli.main([best, "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert evaluate_cli.main([str(broken), "--out", str(tmp_path / "o")]) == 1
    assert "broken.pt" in capsys.readouterr().err
    # a data set prepared at another view size than the model was trained on
    from tests.helpers import TINY_OVERRIDES, compose_config
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    other = tmp_path / "other"
    prepare_dataset(load_prepare_config(compose_config("prepare", [
        *TINY_OVERRIDES, "source.num_patients=3", "protocol.geometry.detector_shape=[16,16]",
        "protocol.geometry.pixel_spacing_mm=[32,32]", f"output_dir={other}"])), progress=False)
    assert evaluate_cli.main([best, "--data-root", str(other), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "[16, 16]" in err and "[32, 32]" in err
    assert not (tmp_path / "o" / "summary.json").exists()


def damaged_copy(dataset: Path, root: Path, patient_id: str, name: str, damage) -> Path:
    """A copy of ``dataset`` with ``damage(array)`` applied to one patient's ``name`` file (drr.npy or ct.nii.gz)
    and its checksum in meta.json recomputed, as a rewritten file that verify.py would pass on checksums."""
    import shutil

    from x2ct.data.layout import sha256_file

    shutil.copytree(dataset, root)
    layout = DatasetLayout(root)
    path = layout.patient_dir(patient_id) / name
    if name == "drr.npy":
        array = np.load(path)
        damage(array)
        np.save(path, array)
    else:
        image = nib.load(path)
        array = np.asarray(image.get_fdata(dtype=np.float32))
        damage(array)
        nib.save(nib.Nifti1Image(array, image.affine, image.header), path)
    meta = json.loads(layout.meta(patient_id).read_text())
    meta["checksums"][name] = sha256_file(path)
    layout.meta(patient_id).write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("name", ["drr.npy", "ct.nii.gz"])
def test_a_nan_in_one_patients_file_is_refused_naming_it(tiny_run, tiny_dataset, tmp_path, capsys, name):
    """Without figures (whose input check is not the only guard) a NaN pixel in one patient's file is refused
    naming it, rather than giving that patient NaN metrics that the summary skips while the console counts them."""
    pid = PatientDRRDataset(tiny_dataset, "train").patient_ids[1]

    def one_nan(array):
        array[(0,) * array.ndim] = np.nan

    path = damaged_copy(tiny_dataset, tmp_path / "damaged", pid, name, one_nan)
    out = tmp_path / "o"
    code = evaluate_cli.main([str(tiny_run / "checkpoints" / "best.pt"), "--data-root", str(path.parents[2]),
                              "--split", "train", "--no-figures", "--no-volumes", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and f"patients/{pid}/{name}" in err and "NaN or inf" in err, err
    assert not (out / "summary.json").exists()


def test_a_model_answering_nan_is_refused_naming_the_checkpoint_and_patient(tiny_run, tmp_path, capsys,
                                                                             monkeypatch):
    """A damaged checkpoint that loads but answers NaN: an error, not "PSNR nan" with exit 0."""
    import x2ct.evaluation.evaluator as evaluator

    def damaged(*args, **kwargs):
        trained = load_trained_model(*args, **kwargs)
        with torch.no_grad():
            next(trained.model.parameters()).view(-1)[0] = math.nan
        return trained

    monkeypatch.setattr(evaluator, "load_trained_model", damaged)
    best = tiny_run / "checkpoints" / "best.pt"
    code = evaluate_cli.main([str(best), "--no-figures", "--no-volumes", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    first = PatientDRRDataset(load_trained_model(best).config["data"]["root"], "test").patient_ids[0]
    assert code == 1 and f"checkpoint {best}" in err and f"patient {first}" in err and "NaN" in err, err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_a_nan_whole_volume_metric_is_an_error_a_nan_region_metric_is_not():
    from x2ct.evaluation.evaluator import _check_metrics

    _check_metrics({"patient_id": "p", "psnr": 30.0, "lungs_psnr": math.nan, "psnr_stage1": math.inf}, Path("c.pt"))
    with pytest.raises(ValueError, match=r"checkpoint c\.pt, patient p: metric\(s\) \['ssim'\] are NaN"):
        _check_metrics({"patient_id": "p", "psnr": 30.0, "ssim": math.nan, "lungs_psnr": math.nan}, Path("c.pt"))


def test_the_report_says_why_a_region_row_counts_fewer_patients(tmp_path):
    from x2ct.evaluation.report import write_evaluation_report
    from x2ct.evaluation.summary import summarise

    rows = [{"patient_id": "a", "psnr": 30.0, "ssim": 0.9, "mae_hu": 40.0, "lungs_psnr": 28.0},
            {"patient_id": "b", "psnr": 31.0, "ssim": 0.9, "mae_hu": 41.0, "lungs_psnr": math.nan}]
    context = {"checkpoint": "c.pt", "epoch": 0, "weights": "model", "model": "m", "data_root": "d",
               "split": "test", "patients": 2, "views": ["pa"], "hu_window": [-1000, 1500], "time": 0.0}
    text = write_evaluation_report(tmp_path / "r.md", rows, summarise(rows), context, {}).read_text()
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("| PSNR (dB) | 30.50")).endswith("| 2 |")
    assert next(line for line in lines if line.startswith("| lungs: PSNR (dB) | 28.00")).endswith("| 1 |")
    assert "n below 2: the other patients' region maps hold no such region" in text


def test_other_views_for_a_model_built_for_its_own_views_are_refused(tiny_run, tmp_path, capsys):
    best = str(tiny_run / "checkpoints" / "best.pt")
    assert evaluate_cli.main([best, "--views", "lateral", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "takes exactly the views it was trained on, ['pa', 'lateral'], not ['lateral']" in err
    assert evaluate_cli.main([best, "--num-views", "3", "--out", str(tmp_path / "o")]) == 1
    assert "num_views=3" in capsys.readouterr().err
    assert evaluate_cli.main([best, "--views", "pa,ap", "--out", str(tmp_path / "o")]) == 1
    assert "'ap' is not in the data set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_cli.parse_args([best, "--views", "pa", "--num-views", "1"])
    # the model's own views, named: evaluated as usual
    assert evaluate_cli.main([best, "--views", "pa,lateral", "--no-volumes", "--no-figures", "--no-reference",
                              "--out", str(tmp_path / "own")]) == 0
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
def test_torchrun_ranks_share_the_patients_and_rank0_writes_one_report(tiny_run, tmp_path, evaluation):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO / "evaluate.py"), str(tiny_run / "checkpoints" / "best.pt"), "--split", "train",
            "--out", str(out), "--no-figures"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((out / "per_patient.json").read_text())
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in evaluation.rows]  # each patient once
    for mine, single in zip(rows, evaluation.rows, strict=True):
        assert mine["psnr"] == pytest.approx(single["psnr"], abs=1e-6)
    assert len(list((out / "volumes").iterdir())) == 3
    assert result.stdout.count("report:") == 1


def test_another_data_set_is_fed_as_the_model_was_trained(tiny_run, tmp_path, capsys):
    """Views of another data set are scaled by the training data's view scale, not by that set's own maximum."""
    from tests.helpers import TINY_OVERRIDES, compose_config
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    other = tmp_path / "other"
    prepare_dataset(load_prepare_config(compose_config("prepare", [
        *TINY_OVERRIDES, "source.num_patients=3", "source.seed=7", f"output_dir={other}"])), progress=False)
    trained = load_trained_model(tiny_run / "checkpoints" / "best.pt")
    model_scale = trained.input_spec.scale
    assert PatientDRRDataset(other, "test").view_scale != pytest.approx(model_scale)
    result = evaluate(EvaluationSettings(checkpoint=trained.path, data_root=other, out_dir=tmp_path / "e",
                                         save_figures=False, save_volumes=False))
    assert "normalised as in training" in capsys.readouterr().out
    context = json.loads((tmp_path / "e" / "summary.json").read_text())["context"]
    assert context["view_normalisation"] == ["global_max", model_scale]
    # the reference volume is still the model's own training mean, and the numbers are those of that feeding
    pid = result.rows[0]["patient_id"]
    drr = torch.from_numpy(np.load(DatasetLayout(other).drr(pid)))
    with torch.no_grad():
        pred = trained.model((drr / model_scale)[None, :, None]).volume.clamp(0, 1)[0, 0].double()
    target = PatientDRRDataset(other, "test")[0]["ct"][0].double().numpy()
    assert result.rows[0]["psnr"] == pytest.approx(peak_signal_noise_ratio(target, pred.numpy(), data_range=1),
                                                   abs=1e-4)
    assert "ref_psnr" in result.rows[0]


def test_unknown_data_config_lists_the_choices(tiny_run, capsys):
    assert evaluate_cli.main([str(tiny_run / "checkpoints" / "best.pt"), "--data", "phantomz"]) == 1
    err = capsys.readouterr().err
    assert "--data phantomz: no such data config" in err and "example_ct_demo" in err


def test_wandb_gets_the_table_summary_and_figures(tiny_run, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb_home" / key.lower()))
    out = tmp_path / "e"
    evaluate(EvaluationSettings(checkpoint=tiny_run / "checkpoints" / "best.pt", out_dir=out, save_volumes=False,
                                wandb=True))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].glob("files/media/table/test/per_patient_*.json"))
    assert len(tables) == 1 and "psnr" in json.loads(tables[0].read_text())["columns"]
    assert len(list(runs[0].glob("files/media/images/test/figures_*.png"))) == 1


@pytest.mark.realdata
def test_data_config_prepares_the_real_ct_on_the_demo_grid(example_ct_file, tmp_path, monkeypatch):
    from x2ct.data.verify import verify_dataset
    from x2ct.evaluation.evaluator import prepared_data_root

    monkeypatch.setenv("X2CT_EXAMPLE_CT_DIR", str(example_ct_file.parent))
    monkeypatch.chdir(tmp_path)
    root = prepared_data_root("example_ct_demo")
    assert root == Path("data/example_ct_demo") and verify_dataset(root).ok
    dataset = PatientDRRDataset(root, "test")
    assert dataset.patient_ids == ["example_cxr"] and dataset[0]["ct"].shape == (1, 32, 32, 32)
    assert DatasetLayout(root).regions("example_cxr").exists()


def test_hu_metrics_count_padding_below_air_as_air():
    from x2ct.evaluation.evaluator import patient_metrics

    window = (-1000.0, 1500.0)
    target01 = torch.zeros(12, 12, 12, dtype=torch.float64)
    target_hu = torch.full((12, 12, 12), -1000.0, dtype=torch.float64)
    target_hu[:, :2] = -2048.0  # scanner padding outside the reconstruction circle
    target_hu[5, 5, 5] = 3000.0  # metal above the window: counts in full
    pred = torch.zeros_like(target01)  # -1000 HU everywhere
    row = patient_metrics(pred, target01, target_hu, window)
    assert row["mae_hu"] == pytest.approx(4000.0 / 12**3)
    assert row["psnr_hu"] == pytest.approx(10 * math.log10(2500.0**2 / (4000.0**2 / 12**3)))
    assert row["psnr"] == math.inf or row["psnr"] > 100  # [0, 1] volumes agree exactly


def test_a_cascade_is_scored_at_every_stage(tiny_dataset, tmp_path):
    from x2ct.engine.trained_model import TrainedModel
    from x2ct.evaluation.evaluator import _evaluate_patients
    from x2ct.models import MultiResCascade

    torch.manual_seed(0)
    model = MultiResCascade(view_size=32, volume_size=24, stage_sizes=(12, 24), coarse_model="baseline_unet",
                            coarse_kwargs={"base_channels": 4, "depth": 2, "learned_prior": False},
                            refiner_channels=4).eval()
    trained = TrainedModel(model=model, config={}, input_spec=None, path=tmp_path / "ckpt.pt", weights="model",
                           epoch=0)
    dataset = PatientDRRDataset(tiny_dataset, "test")
    settings = EvaluationSettings(checkpoint=trained.path, save_volumes=False, save_figures=False)
    [row] = _evaluate_patients(trained, dataset, [0], dataset.hu_window, None, tmp_path, settings,
                               torch.device("cpu"), progress=False)
    with torch.no_grad():
        coarse = model.stage_outputs(dataset[0]["views"][None])[0]
    target = torch.nn.functional.interpolate(dataset[0]["ct"][None].double(), size=(12, 12, 12), mode="area")
    assert row["psnr_stage1"] == pytest.approx(peak_signal_noise_ratio(
        target[0, 0].numpy(), coarse[0, 0].double().numpy(), data_range=1), abs=1e-4)
    assert "psnr_stage2" not in row and row["psnr"] > 0


def test_a_ct_shorter_than_the_grid_is_scored_over_its_scanned_voxels_as_the_headline(tiny_run, tmp_path):
    """The real-CT case: missing end slices and the corners outside the reconstruction circle are padding; the
    scanned-voxel figures lead the report, and they equal scikit-image's over the scanned voxels."""
    from tests.data.test_scanned import prepare_short
    from x2ct.data.scanned import load_scanned

    root = prepare_short(tmp_path)
    result = evaluate(EvaluationSettings(checkpoint=tiny_run / "checkpoints" / "best.pt", data_root=root,
                                         out_dir=tmp_path / "e", save_figures=False, save_volumes=False))
    row = result.rows[0]
    dataset = PatientDRRDataset(root, "test")
    pred = predictions(tiny_run / "checkpoints" / "best.pt", dataset)["short"].numpy()
    target = dataset[0]["ct"][0].double().numpy()
    scanned = load_scanned(DatasetLayout(root).scanned("short"))
    assert row["scanned_fraction"] == pytest.approx(scanned.mean()) and 0.3 < scanned.mean() < 0.7
    assert row["scanned_psnr"] == pytest.approx(
        peak_signal_noise_ratio(target[scanned], pred[scanned], data_range=1), abs=1e-4)
    _, ssim_map = structural_similarity(target, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1, full=True)
    r = 5  # the 11-voxel window's radius: the map's valid region
    valid = np.zeros_like(scanned)
    valid[r:-r, r:-r, r:-r] = True
    assert row["scanned_ssim"] == pytest.approx(ssim_map[scanned & valid].mean(), abs=1e-4)
    assert row["scanned_psnr"] != pytest.approx(row["psnr"], abs=0.01)
    assert "ref_scanned_psnr" in row
    report = (tmp_path / "e" / "report.md").read_text()
    headline, whole = report.index("over the scanned voxels (the headline)"), report.index("over the whole volume")
    assert headline < whole
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["context"]["scanned_masks"] is True


def test_a_data_set_scanned_everywhere_says_so_and_one_without_masks_is_named(evaluation, tiny_run, tmp_path,
                                                                            capsys):
    import shutil

    report = (evaluation.out_dir / "report.md").read_text()
    assert "Every voxel of these patients was scanned" in report
    assert all(row["scanned_psnr"] == pytest.approx(row["psnr"], abs=1e-9) for row in evaluation.rows)
    old = tmp_path / "old"
    shutil.copytree(json.loads((evaluation.out_dir / "summary.json").read_text())["context"]["data_root"], old)
    manifest = json.loads((old / "dataset.json").read_text())
    del manifest["scanned_masks"]
    (old / "dataset.json").write_text(json.dumps(manifest))
    for mask in old.glob("patients/*/scanned.nii.gz"):
        mask.unlink()
    result = evaluate(EvaluationSettings(checkpoint=tiny_run / "checkpoints" / "best.pt", data_root=old,
                                         out_dir=tmp_path / "e", save_figures=False, save_volumes=False))
    assert "stores no scanned-voxel masks" in capsys.readouterr().out
    assert "scanned_psnr" not in result.rows[0]
    assert "padding is scored as air" in (tmp_path / "e" / "report.md").read_text()


def test_views_through_the_clinical_chain_are_scored_and_recorded(tiny_run, tiny_dataset, evaluation, capsys):
    """--view-processing clinical: each row is the model on the chain's views (an independent forward pass agrees),
    the scores differ from the clean ones, and summary.json and report.md say what the views went through."""
    from x2ct.data.clinical_processing import CLINICAL_CHAIN

    best = tiny_run / "checkpoints" / "best.pt"
    assert evaluate_cli.main([str(best), "--split", "train", "--view-processing", "clinical", "--no-volumes",
                              "--no-figures", "--no-reference"]) == 0
    out = tiny_run / "evaluation" / "best_train_clinical"
    assert "views through the clinical chain" in capsys.readouterr().out
    rows = json.loads((out / "per_patient.json").read_text())
    processed = PatientDRRDataset(tiny_dataset, "train", view_effects=CLINICAL_CHAIN)
    preds = predictions(best, processed)
    for i, row in enumerate(rows):
        target = processed[i]["ct"][0].double().numpy()
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(target, preds[row["patient_id"]].numpy(),
                                                                    data_range=1), abs=1e-4)
    assert [r["psnr"] for r in rows] != [r["psnr"] for r in evaluation.rows]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["context"]["view_processing"] == "clinical"
    assert summary["context"]["view_processing_chain"] == json.loads(json.dumps(CLINICAL_CHAIN.to_dict()))
    assert "clinical-style chain" in summary["definitions"]["view_processing"]
    assert "clinical-style chain" in (out / "report.md").read_text()
    clean = json.loads((evaluation.out_dir / "summary.json").read_text())
    assert clean["context"]["view_processing"] == "none" and "view_processing_chain" not in clean["context"]
    assert "view_processing" not in clean["definitions"]


def test_an_output_folder_another_process_writes_is_refused_naming_it(tiny_run, tmp_path, capsys):
    from tests.test_folder_lock import _holder
    from x2ct.folder_lock import LOCK_NAME

    out = tmp_path / "eval"
    holder = _holder(out, 120)
    try:
        code = evaluate_cli.main([str(tiny_run / "checkpoints" / "best.pt"), "--split", "train", "--out", str(out),
                                  "--no-figures", "--no-volumes"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert (f"evaluate.py: error: evaluation folder {out} is in use by pid {holder.pid} on host "
            in capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written beside the lock
    assert evaluate_cli.main([str(tiny_run / "checkpoints" / "best.pt"), "--split", "train", "--out", str(out),
                              "--no-figures", "--no-volumes"]) == 0  # the dead holder's lock is taken over
    assert (out / "summary.json").is_file() and (out / LOCK_NAME).read_text() == ""
