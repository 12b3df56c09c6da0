"""predict.py: a CT from X-ray files, the same as from the data set's own views; every bad input refused."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import predict as predict_cli
from tests.data.test_example_radiograph import example_radiograph_or_skip
from tests.data.test_xray_io import write_dicom
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.export_views import export_views
from x2ct.data.layout import DatasetLayout
from x2ct.data.readers import read_nifti
from x2ct.engine.trained_model import load_trained_model
from x2ct.ops.hu_window import denormalise


@pytest.fixture(scope="module")
def responsive(tiny_run, tmp_path_factory):
    """The tiny run's checkpoint with its weights perturbed: two epochs leave the baseline close to its template
    volume, whose output hardly depends on the views; these weights make every input pixel matter."""
    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for key, value in state["model"].items():
        if value.is_floating_point() and "running_" not in key:
            value += 0.1 * torch.randn(value.shape, generator=generator)
    return save_edited(state, tmp_path_factory.mktemp("responsive") / "responsive.pt")


def save_edited(state: dict, path):
    """Save a checkpoint edited on purpose; one that carries its checksum gets the edited content's one."""
    if "checksum" in state:
        from x2ct.engine.checkpoint import state_checksum

        state["checksum"] = state_checksum(state)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def patient(tiny_dataset):
    dataset = PatientDRRDataset(tiny_dataset, "test")
    return dataset, dataset.patient_ids[0]


def reference_prediction(checkpoint, dataset, pid):
    trained = load_trained_model(checkpoint)
    with torch.no_grad():
        pred = trained.model(dataset[dataset.patient_ids.index(pid)]["views"][None]).volume.clamp(0, 1)[0, 0]
    return denormalise(pred.numpy(), dataset.hu_window)


def test_png_views_give_the_data_sets_prediction_on_a_centred_grid(responsive, patient, tmp_path, capsys):
    dataset, pid = patient
    best = responsive
    pa, lateral = export_views(dataset.layout.root, pid, tmp_path / "views")
    # named views in any order
    assert predict_cli.main([str(best), f"lateral={lateral}", f"pa={pa}", "--out", str(tmp_path / "p")]) == 0
    volume = read_nifti(tmp_path / "p" / "prediction.nii.gz")
    expected = reference_prediction(best, dataset, pid)
    np.testing.assert_allclose(volume.hu, expected, atol=2.0)  # HU; 16-bit PNG quantisation of the inputs only
    assert np.abs(expected - expected.mean()).max() > 100  # a volume with structure, not a constant
    target = read_nifti(dataset.layout.ct(pid))
    assert volume.shape == target.shape and volume.spacing == pytest.approx(target.spacing)
    centre = np.array(volume.origin) + (np.array(volume.shape[::-1]) - 1) / 2 * np.array(volume.spacing[::-1])
    np.testing.assert_allclose(centre, 0.0, atol=1e-4)  # the isocentre the views were rendered around
    assert (tmp_path / "p" / "prediction.png").stat().st_size > 10_000
    assert "prediction:" in capsys.readouterr().out


def test_raw_line_integrals_are_normalised_as_in_training(responsive, patient, tmp_path):
    dataset, pid = patient
    best = responsive
    drr = np.load(DatasetLayout(dataset.layout.root).drr(pid))
    files = []
    for name, image in zip(("pa", "lateral"), drr, strict=True):
        np.save(tmp_path / f"{name}.npy", image)
        files.append(str(tmp_path / f"{name}.npy"))
    assert predict_cli.main([str(best), *files, "--line-integrals", "--out", str(tmp_path / "p"), "--no-figure"]) == 0
    volume = read_nifti(tmp_path / "p" / "prediction.nii.gz")
    np.testing.assert_allclose(volume.hu, reference_prediction(best, dataset, pid), atol=1e-2)
    # the same files without --line-integrals are outside the [0, 1] input range: refused, with the hint
    assert predict_cli.main([str(best), *files, "--out", str(tmp_path / "q"), "--no-figure"]) == 1
    assert not (tmp_path / "q").exists()


@pytest.fixture
def views(tiny_run, patient, tmp_path):
    dataset, pid = patient
    return [str(p) for p in export_views(dataset.layout.root, pid, tmp_path / "views")]


def run_and_expect_error(argv, capsys, *fragments):
    assert predict_cli.main(argv) == 1
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_wrong_number_of_views(tiny_run, views, tmp_path, capsys):
    best = str(tiny_run / "checkpoints" / "best.pt")
    run_and_expect_error([best, views[0], "--out", str(tmp_path / "o")], capsys, "takes 2 views (pa, lateral)")
    run_and_expect_error([best, *views, views[0], "--out", str(tmp_path / "o")], capsys, "got 3 file(s)")
    run_and_expect_error([best, f"pa={views[0]}", f"ap={views[1]}", "--out", str(tmp_path / "o")], capsys,
                         "mix of named and unnamed")
    assert not (tmp_path / "o").exists()  # nothing written


def test_wrong_size_type_and_unreadable_files(tiny_run, views, tmp_path, capsys):
    best = str(tiny_run / "checkpoints" / "best.pt")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(small)
    out = ["--out", str(tmp_path / "o")]
    run_and_expect_error([best, str(small), views[1], "--fit", "never", *out], capsys, "small.png", "32x32")
    run_and_expect_error([best, str(small), views[1], *out], capsys, "small.png", "uniform")  # fitted: nothing
    colour = tmp_path / "colour.png"
    Image.fromarray(np.stack([np.full((32, 32), 200, np.uint8)] + [np.zeros((32, 32), np.uint8)] * 2, axis=-1)
                    ).save(colour)
    run_and_expect_error([best, views[0], str(colour), *out], capsys, "colour.png", "colour")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")
    run_and_expect_error([best, str(garbage), views[1], *out], capsys, "garbage.png")
    run_and_expect_error([best, str(tmp_path / "missing.png"), views[1], *out], capsys, "missing.png")
    assert not (tmp_path / "o").exists()


def test_views_outside_the_input_range_are_refused_naming_file_range_and_convention(tiny_run, views, tmp_path,
                                                                                     capsys):
    """Views in another convention are an error, not a volume that means nothing with exit 0."""
    best = str(tiny_run / "checkpoints" / "best.pt")
    pa = np.asarray(Image.open(views[0]), dtype=np.float64)
    pa = (pa - pa.min()) / (pa.max() - pa.min())  # the exported view stretched to span [0, 1] exactly
    cases = {
        "counts.npy": (pa * 400, ["[0, 400]", "detector counts"]),
        "negative.npy": (pa - 0.5, ["[-0.5", "negative values"]),
        "line_integrals.npy": (pa * 6.6, ["[0, 6.6]", "pass --line-integrals"]),
    }
    for name, (image, fragments) in cases.items():
        np.save(tmp_path / name, image.astype(np.float32))
        run_and_expect_error([best, str(tmp_path / name), views[1], "--out", str(tmp_path / "o")], capsys,
                             name, "outside the model's input range [0, 1]", "global_max", *fragments)
    # with --line-integrals only negative or non-finite values are refused
    inf = (pa * 6.6).astype(np.float32)
    inf[3, 3] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    run_and_expect_error([best, str(tmp_path / "negative.npy"), str(tmp_path / "line_integrals.npy"),
                          "--line-integrals", "--out", str(tmp_path / "o")], capsys, "negative.npy", ">= 0")
    run_and_expect_error([best, str(tmp_path / "line_integrals.npy"), str(tmp_path / "inf.npy"),
                          "--line-integrals", "--out", str(tmp_path / "o")], capsys, "inf.npy", "NaN or infinite")
    assert not (tmp_path / "o").exists()
    # rounding slack at the edges of [0, 1] is accepted
    np.save(tmp_path / "slack.npy", np.clip(pa * 1.01 - 0.005, -0.01, 1.01).astype(np.float32))
    assert predict_cli.main([best, str(tmp_path / "slack.npy"), views[1], "--out", str(tmp_path / "ok"),
                             "--no-figure"]) == 0


def test_a_model_answering_nan_is_refused_naming_the_checkpoint(tiny_run, views, tmp_path, capsys, monkeypatch):
    """A damaged checkpoint that loads but answers NaN: an error, not an all-NaN volume with exit 0."""
    import x2ct.engine.trained_model as trained_model

    load = trained_model.load_trained_model

    def damaged(*args, **kwargs):
        trained = load(*args, **kwargs)
        with torch.no_grad():
            next(trained.model.parameters()).view(-1)[0] = float("nan")
        return trained

    monkeypatch.setattr(trained_model, "load_trained_model", damaged)
    best = str(tiny_run / "checkpoints" / "best.pt")
    run_and_expect_error([best, *views, "--out", str(tmp_path / "o")], capsys, f"checkpoint {best}", "NaN")
    assert not (tmp_path / "o").exists()


def test_checkpoints_that_cannot_serve(tiny_run, views, tmp_path, capsys):
    # a checkpoint of another model: the saved config describes a wider network than the weights
    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    state["config"]["model"]["base_channels"] = 8
    other = save_edited(state, tmp_path / "other_model.pt")
    run_and_expect_error([str(other), *views], capsys, "other_model.pt", "do not fit", "another model")
    # not an x2ct checkpoint at all
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    run_and_expect_error([str(plain), *views], capsys, "plain.pt")
    run_and_expect_error([str(tmp_path / "absent.pt"), *views], capsys, "absent.pt")


# ------------------------------------------------------------------------------------- clinical radiographs
FINE = 4  # the "clinical" DRRs below: 4 x 4 pixels per detector pixel of the model, over the same field


@pytest.fixture(scope="module")
def pa_run(tiny_dataset, tmp_path_factory):
    """The tiny baseline trained on the PA view only (two epochs): the one-view model a clinical chest study
    (most have a PA film only) needs."""
    from tests.engine.test_train import tiny_cfg
    from x2ct.engine.trainer import train

    out = tmp_path_factory.mktemp("pa_run")
    train(tiny_cfg(tiny_dataset, out, "data.views=[pa]"), run_dir=out / "run")
    return out / "run"


def fine_drr(checkpoint, ct) -> np.ndarray:
    """``ct``'s PA line integrals on a detector 4x finer than the model's, over the same field."""
    from x2ct.data.views import render_views

    spec = load_trained_model(checkpoint).input_spec
    geometry = spec.geometry
    rows, cols = geometry.detector_shape
    fine = replace(geometry, detector_shape=(rows * FINE, cols * FINE),
                   pixel_spacing_mm=tuple(s / FINE for s in geometry.pixel_spacing_mm))
    return render_views(ct, fine, spec.mu_water)[0].double().numpy()


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def clinical(pa_run, tiny_dataset):
    """A test patient's PA DRR as a clinical file would hold it, and the view the data set gives the model."""
    dataset = PatientDRRDataset(tiny_dataset, "test", views=["pa"])
    pid = dataset.patient_ids[0]
    drr = fine_drr(pa_run / "checkpoints" / "best.pt", read_nifti(dataset.layout.ct(pid)))
    return drr, dataset[0]["views"][0, 0].numpy()


def test_a_clinical_dicom_is_fitted_predicted_reported_and_reproducible(pa_run, clinical, tmp_path, capsys):
    """A MONOCHROME1 DX with a display curve, stored mirrored (PatientOrientation R,F), 4 mm pixels at SID 1500 /
    SOD 1000: one command gives the volume, the figures and the report, and the model input it saved gives the
    same volume again."""
    drr, view = clinical
    best = str(pa_run / "checkpoints" / "best.pt")
    counts = np.round((1 - (drr / drr.max()) ** 0.7) * 4095).astype(np.uint16)[:, ::-1]  # dark bone, mirrored
    path = write_dicom(tmp_path / "chest.dcm", np.ascontiguousarray(counts), photometric="MONOCHROME1",
                       PatientOrientation=["R", "F"], ViewPosition="PA", ImagerPixelSpacing=[4.0, 4.0],
                       DistanceSourceToDetector="1500", DistanceSourceToPatient="1000")
    out = tmp_path / "p"
    assert predict_cli.main([best, str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"pa: {path} (fitted)" in printed and "training view distribution (intensity fit) from the checkpoint" \
        in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(  # and the folder's lock, released (empty)
        ["prediction.nii.gz", "prediction.png", "input.png", "model_input_pa.npy", "report.md", "report.json",
         ".x2ct-lock"])
    assert (out / ".x2ct-lock").read_text() == ""
    report = json.loads((out / "report.json").read_text())
    steps = report["views"][0]
    assert steps["mode"] == "fitted" and steps["orientation"]["flip_cols"] and not steps["orientation"]["flip_rows"]
    assert steps["spacing"]["spacing_source"] == "ImagerPixelSpacing" and steps["spacing"]["magnification"] == 1.5
    assert steps["intensity"]["mode"] == "quantile" and steps["intensity"]["quantiles_from"] == "checkpoint"
    assert "## View `pa`" in (out / "report.md").read_text()
    model_input = np.load(out / "model_input_pa.npy")
    assert correlation(model_input, view) > 0.98  # the data set's own view of this patient
    assert np.abs(model_input - view).mean() < 0.05
    # the saved input, given back as-is (the detector's size), reproduces the volume
    assert predict_cli.main([best, str(out / "model_input_pa.npy"), "--out", str(tmp_path / "q"), "--no-figure"]) == 0
    np.testing.assert_allclose(read_nifti(tmp_path / "q" / "prediction.nii.gz").hu,
                               read_nifti(out / "prediction.nii.gz").hu, atol=1e-3)
    assert (out / "input.png").stat().st_size > 10_000


def test_an_export_without_metadata_gets_every_assumption_printed_and_stored(pa_run, clinical, tmp_path, capsys):
    drr, view = clinical
    best = str(pa_run / "checkpoints" / "best.pt")
    Image.fromarray(np.round(drr / drr.max() * 255).astype(np.uint8)).save(tmp_path / "export.png")
    assert predict_cli.main([best, str(tmp_path / "export.png"), "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    for said in ("assumption: no pixel spacing", "assumption: no patient orientation", "assumption: no view "
                 "position", "assumption: no source-to-detector distance"):
        assert said in printed, printed
    stored = " ".join(json.loads((tmp_path / "p" / "report.json").read_text())["assumptions"])
    assert "no pixel spacing" in stored and "no patient orientation" in stored
    # what is missing, supplied by flags: the export's true geometry (4 mm at the detector, magnification 1.5)
    assert predict_cli.main([best, str(tmp_path / "export.png"), "--pixel-spacing", "4", "--magnification", "1.5",
                             "--patient-orientation", "L,F", "--view-position", "PA", "--out",
                             str(tmp_path / "q")]) == 0
    printed = capsys.readouterr().out
    assert "no pixel spacing" not in printed and "no patient orientation" not in printed
    assert correlation(np.load(tmp_path / "q" / "model_input_pa.npy"), view) > 0.98


def test_files_a_one_view_model_cannot_use_are_refused_naming_file_and_reason(pa_run, clinical, tmp_path, capsys):
    drr, _ = clinical
    best = str(pa_run / "checkpoints" / "best.pt")
    counts = np.round(drr / drr.max() * 4095).astype(np.uint16)
    lateral = write_dicom(tmp_path / "lateral.dcm", counts, ViewPosition="LL", ImagerPixelSpacing=[4.0, 4.0])
    run_and_expect_error([best, str(lateral), "--out", str(tmp_path / "o")], capsys, "lateral.dcm",
                         "ViewPosition LL is a lateral radiograph", "--view-position")
    turned = write_dicom(tmp_path / "turned.dcm", counts, PatientOrientation=["P", "F"])
    run_and_expect_error([best, str(turned), "--out", str(tmp_path / "o")], capsys, "turned.dcm", "another axis")
    run_and_expect_error([best, str(turned), "--fit", "never", "--out", str(tmp_path / "o")], capsys, "turned.dcm",
                         "128x128", "32x32")
    run_and_expect_error([best, str(turned), str(turned), "--out", str(tmp_path / "o")], capsys,
                         "takes 1 views (pa)", "got 2 file(s)")
    assert not (tmp_path / "o").exists()
    for flag, value in (("--pixel-spacing", "-1"), ("--patient-orientation", "X,Y"), ("--magnification", "0.5"),
                        ("--view-position", "OBL")):
        with pytest.raises(SystemExit) as exit_info:
            predict_cli.main([best, str(turned), flag, value, "--out", str(tmp_path / "o")])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


def test_a_checkpoint_without_training_quantiles_uses_its_data_set_or_says_it_cannot(pa_run, clinical, tmp_path,
                                                                                      capsys):
    drr, _ = clinical
    state = torch.load(pa_run / "checkpoints" / "best.pt", weights_only=True)
    del state["extra"]["input_spec"]["view_quantiles"]  # a checkpoint trained before they were stored
    older = save_edited(state, tmp_path / "older.pt")
    Image.fromarray(np.round(drr / drr.max() * 255).astype(np.uint8)).save(tmp_path / "export.png")
    assert predict_cli.main([str(older), str(tmp_path / "export.png"), "--out", str(tmp_path / "p")]) == 0
    root = state["config"]["data"]["root"]
    assert f"from its data set {root}" in capsys.readouterr().out
    state["config"]["data"]["root"] = str(tmp_path / "gone")
    gone = save_edited(state, tmp_path / "gone.pt")
    assert predict_cli.main([str(gone), str(tmp_path / "export.png"), "--out", str(tmp_path / "q")]) == 0
    printed = capsys.readouterr().out
    assert "from nowhere (the checkpoint predates them and its data set is not here or no longer fits it)" in printed
    assert "intensity stretched linearly instead" in printed
    assert json.loads((tmp_path / "q" / "report.json").read_text())["views"][0]["intensity"]["mode"] == "linear"
    # its data set is here but prepared for another HU window than the model's: its views are not the model's
    state["config"]["data"]["root"] = root
    state["extra"]["input_spec"]["hu_window"] = [-1000.0, 3000.0]
    refitted = save_edited(state, tmp_path / "refitted.pt")
    assert predict_cli.main([str(refitted), str(tmp_path / "export.png"), "--out", str(tmp_path / "r")]) == 0
    assert "no longer fits it" in capsys.readouterr().out


@pytest.fixture(scope="module")
def example_radiograph_file():
    return example_radiograph_or_skip()


@pytest.mark.realdata
def test_a_real_chest_radiograph_becomes_a_ct_with_one_command(pa_run, example_radiograph_file, tiny_dataset,
                                                               tmp_path, capsys):
    """The NEMA PA chest CR (1955 x 1841, MONOCHROME1, PixelSpacing [0, 0]) through a PA-only model, no flag.

    The tiny model's output is close to its learned template (its training set's mean CT) whatever the input, so
    anatomy in the volume checks where the volume lands on the grid, not the fitting; the fitting's orientation
    is checked on the model input against the model's own DRRs (its training views) and on the report."""
    best = str(pa_run / "checkpoints" / "best.pt")
    out = tmp_path / "real"
    assert predict_cli.main([best, str(example_radiograph_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "assumption: no pixel spacing" in printed and "magnification 1996 / 1846" in printed
    report = json.loads((out / "report.json").read_text())
    steps = report["views"][0]
    assert steps["orientation"] == {"given": ["L", "F"], "source": "PatientOrientation", "model": ["L", "F"],
                                    "transpose": False, "flip_rows": False, "flip_cols": False}
    assert steps["spacing"]["spacing_source"] == "estimate" and steps["file"]["photometric"] == "MONOCHROME1"
    assert all(v > 0 for v in steps["field"]["crop_mm"].values())  # the film is larger than the model's field
    assert steps["intensity"]["air_fraction"]["radiograph"] < 0.05  # a chest filling the field: its lungs stay body
    for name in ("prediction.nii.gz", "prediction.png", "input.png", "report.md"):
        assert (out / name).stat().st_size > 0
    volume = read_nifti(out / "prediction.nii.gz")
    spec = load_trained_model(best).input_spec
    assert volume.shape == spec.ct_size and np.isfinite(volume.hu).all()
    centre = np.array(volume.origin) + (np.array(volume.shape[::-1]) - 1) / 2 * np.array(volume.spacing[::-1])
    np.testing.assert_allclose(centre, 0.0, atol=1e-4)
    d, h, w = volume.shape
    chest = volume.hu[int(0.45 * d):int(0.7 * d), int(0.35 * h):int(0.65 * h)]
    lungs = (chest[:, :, int(0.2 * w):int(0.38 * w)].mean() + chest[:, :, int(0.62 * w):int(0.8 * w)].mean()) / 2
    assert lungs < chest[:, :, int(0.45 * w):int(0.55 * w)].mean() - 200  # lungs darker than the mediastinum
    # head/feet of the model input as in the model's DRRs: the upper abdomen below, brighter than neck and apices
    model_input = np.load(out / "model_input_pa.npy")
    training = PatientDRRDataset(tiny_dataset, "train", views=["pa"])
    drr = np.mean([training[i]["views"][0, 0].numpy() for i in range(len(training))], axis=0)
    quarter = model_input.shape[0] // 4
    for image in (model_input, drr):
        assert image[-quarter:].mean() > image[:quarter].mean() + 0.05


def test_a_prediction_folder_another_process_writes_is_refused_naming_it(tiny_run, views, tmp_path, capsys):
    from tests.test_folder_lock import _holder

    out = tmp_path / "p"
    holder = _holder(out, 120)
    try:
        code = predict_cli.main([str(tiny_run / "checkpoints" / "best.pt"), *views, "--out", str(out), "--no-figure"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert f"predict.py: error: prediction folder {out} is in use by pid {holder.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".x2ct-lock"]  # nothing written beside the lock
