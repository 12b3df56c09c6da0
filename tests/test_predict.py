"""predict.py: a CT from X-ray files, the same as from the data set's own views; every bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import predict as predict_cli
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
        pred = trained.model(dataset[dataset.patient_ids.index(pid)]["views"][None]).clamp(0, 1)[0, 0]
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
    run_and_expect_error([best, str(small), views[1]], capsys, "small.png", "32x32")
    colour = tmp_path / "colour.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(colour)
    run_and_expect_error([best, views[0], str(colour)], capsys, "colour.png", "colour")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")
    run_and_expect_error([best, str(garbage), views[1]], capsys, "garbage.png")
    run_and_expect_error([best, str(tmp_path / "missing.png"), views[1]], capsys, "missing.png")


def test_views_outside_the_input_range_are_refused_naming_file_range_and_convention(tiny_run, views, tmp_path,
                                                                                     capsys):
    """Issue 17, point 6: such views used to give a volume and exit 0."""
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
