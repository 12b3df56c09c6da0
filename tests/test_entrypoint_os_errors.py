"""Every entrypoint on an output it cannot write (a path under a file, a read-only folder, a full disk) or an input
it may not read: exit code 1, one line on stderr naming the path, no traceback; the output folder is checked
before the long work (no model loaded, no patient prepared, no training step), and a disk that fills up during the
work is reported the same way.

Root ignores permission bits, so as root a read-only folder is simulated (``tests/os_faults.py``); otherwise a
real chmod 0o500 folder is used. Hydra entrypoints run in-process (``main()`` with ``sys.argv`` set), so the
simulations reach them; one torchrun test runs train.py as users start it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

import evaluate as evaluate_cli
import predict as predict_cli
import prepare as prepare_cli
import train as train_cli
import verify as verify_cli
from tests.engine.test_train import tiny_train_overrides
from tests.helpers import TINY_OVERRIDES
from tests.os_faults import fill_disk_on_rename, refuse_listing, refuse_reading, refuse_writes
from x2ct.config_files import register_resolvers

REPO = Path(__file__).resolve().parents[1]
KINDS = ["under_a_file", "read_only", "full_disk"]
# what each message says besides the path
REASONS = {"under_a_file": "is a file, not a folder", "read_only": "Permission denied",
           "full_disk": "No space left on device"}


@pytest.fixture
def unwritable(tmp_path, monkeypatch):
    """``make(kind)``: an output path that cannot be written, and the path its message must name."""
    def make(kind: str) -> tuple[Path, Path]:
        if kind == "under_a_file":
            blocker = tmp_path / "notes.txt"
            blocker.write_text("not a folder")
            return blocker / "out", blocker
        folder = tmp_path / "locked"
        folder.mkdir()
        if kind == "read_only" and os.geteuid() != 0:
            folder.chmod(0o500)
            restore.append(folder)
        else:
            refuse_writes(monkeypatch, folder, errno.EACCES if kind == "read_only" else errno.ENOSPC)
        return folder / "out", folder / "out"

    restore: list[Path] = []
    yield make
    for folder in restore:
        folder.chmod(0o700)


def one_error_line(err: str, prog: str) -> str:
    """The single line on stderr, checked for the program's prefix and the absence of a traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def expect_exit_1(call) -> None:
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 1


def never(what: str):
    def fail(*args, **kwargs):
        pytest.fail(f"{what} although the output cannot be written")
    return fail


# ---------------------------------------------------------------------------------------------------- predict


# predict and evaluate: the output folder is checked before the model is loaded or the split evaluated
BEFORE_THE_WORK = {
    "predict.py": (predict_cli, "x2ct.engine.trained_model.load_trained_model", "the model was loaded",
                   ["pa.png", "lateral.png"]),
    "evaluate.py": (evaluate_cli, "x2ct.evaluation.evaluator.evaluate", "the evaluation ran", []),
}


@pytest.mark.parametrize("prog", list(BEFORE_THE_WORK))
@pytest.mark.parametrize("kind", KINDS)
def test_an_unwritable_output_is_refused_before_the_work(prog, kind, unwritable, tmp_path, monkeypatch, capsys):
    cli, work, what, views = BEFORE_THE_WORK[prog]
    out, named = unwritable(kind)
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"never read")
    monkeypatch.setattr(work, never(what))
    expect_exit_1(lambda: cli.main([str(checkpoint), *views, "--out", str(out)]))
    line = one_error_line(capsys.readouterr().err, prog)
    assert str(named) in line and REASONS[kind] in line


def test_predict_reports_a_disk_that_fills_up_when_writing_the_volume(tiny_run, tiny_dataset, tmp_path, monkeypatch,
                                                                      capsys):
    from x2ct.data.export_views import export_views

    views = export_views(tiny_dataset, "phantom_0001", tmp_path / "views")
    out = tmp_path / "pred"
    fill_disk_on_rename(monkeypatch, out)
    expect_exit_1(lambda: predict_cli.main([str(tiny_run / "checkpoints" / "best.pt"), *map(str, views),
                                            "--out", str(out)]))
    line = one_error_line(capsys.readouterr().err, "predict.py")
    assert line.endswith(f"cannot write {out / 'prediction.nii.gz'}: No space left on device")


# --------------------------------------------------------------------------------------------------- evaluate


def test_evaluate_checks_the_default_output_inside_the_run(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"never read")
    refuse_writes(monkeypatch, run, errno.EACCES)  # a run folder of another user
    monkeypatch.setattr("x2ct.evaluation.evaluator.evaluate", never("the evaluation ran"))
    expect_exit_1(lambda: evaluate_cli.main([str(run / "checkpoints" / "best.pt")]))
    line = one_error_line(capsys.readouterr().err, "evaluate.py")
    assert line.endswith(f"{run / 'evaluation'}: Permission denied")


def test_evaluate_reports_a_disk_that_fills_up_during_the_evaluation(tiny_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    fill_disk_on_rename(monkeypatch, out)
    expect_exit_1(lambda: evaluate_cli.main([str(tiny_run / "checkpoints" / "best.pt"), "--out", str(out),
                                             "--limit", "1", "--no-figures", "--no-reference"]))
    line = one_error_line(capsys.readouterr().err, "evaluate.py")
    assert f"cannot write {out}{os.sep}" in line and line.endswith("No space left on device")


# ----------------------------------------------------------------------------------------------------- verify


def test_verify_names_a_folder_it_may_not_list(tiny_dataset, monkeypatch, capsys):
    refuse_listing(monkeypatch, tiny_dataset / "patients")
    expect_exit_1(lambda: verify_cli.main([str(tiny_dataset), "--no-checksums"]))
    line = one_error_line(capsys.readouterr().err, "verify.py")
    assert line == f"verify.py: error: {tiny_dataset / 'patients'}: Permission denied"


def test_verify_names_a_file_it_may_not_read(tiny_dataset, monkeypatch, capsys):
    refuse_reading(monkeypatch, tiny_dataset / "dataset.json")
    try:
        code = verify_cli.main([str(tiny_dataset), "--no-checksums"])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{tiny_dataset / 'dataset.json'}" in captured.out + captured.err
    if captured.err:  # reported here, not as one of verify's listed problems: one line
        one_error_line(captured.err, "verify.py")


def test_verify_of_a_path_under_a_file_says_it_is_no_data_set(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert verify_cli.main([str(tmp_path / "notes.txt" / "data")]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "dataset.json" in captured.out


# ------------------------------------------------------------------------------------- prepare and train (Hydra)


def run_hydra_app(module, argv: list[str], monkeypatch) -> int:
    """``module.main()`` as ``python module.py *argv`` runs it; returns the exit code. The config folder is named
    (imported, the script is a module, whose ``conf`` Hydra would look for as a package); Hydra's logging is left
    off (it would attach handlers to this process's root logger for good)."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", "--config-path", str(REPO / "conf"), *argv,
                                      "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"])
    try:
        module.main()
        return 0
    except SystemExit as exit_info:
        return exit_info.code
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_refuses_an_unwritable_output_before_any_patient(kind, unwritable, tmp_path, monkeypatch, capsys):
    out, named = unwritable(kind)
    monkeypatch.setattr(prepare_cli, "prepare_dataset", never("preparation started"))
    code = run_hydra_app(prepare_cli, [*TINY_OVERRIDES, f"output_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}"],
                         monkeypatch)
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "prepare")
    assert str(named) in line and REASONS[kind] in line


def test_prepare_refuses_a_log_folder_under_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setattr(prepare_cli, "prepare_dataset", never("preparation started"))
    code = run_hydra_app(prepare_cli, [*TINY_OVERRIDES, f"output_dir={tmp_path / 'ds'}",
                                       f"hydra.run.dir={tmp_path / 'notes.txt' / 'hydra'}"], monkeypatch)
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "prepare")
    assert line.endswith(f"{tmp_path / 'notes.txt' / 'hydra'}: {tmp_path / 'notes.txt'} is a file, not a folder")


def test_prepare_reports_a_disk_that_fills_up_during_preparation(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ds"
    fill_disk_on_rename(monkeypatch, out)
    code = run_hydra_app(prepare_cli, [*TINY_OVERRIDES, "source.num_patients=1", f"output_dir={out}",
                                       f"hydra.run.dir={tmp_path / 'hydra'}"], monkeypatch)
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "prepare")
    assert f"cannot write {out}{os.sep}" in line and line.endswith("No space left on device")


@pytest.mark.parametrize("kind", KINDS)
def test_train_refuses_an_unwritable_run_folder_before_training(kind, unwritable, tmp_path, monkeypatch, capsys):
    out, named = unwritable(kind)
    register_resolvers()
    monkeypatch.setattr(train_cli, "train", never("training started"))
    code = run_hydra_app(train_cli, ["logger=none", f"paths.output_dir={out}", "run_name=r"], monkeypatch)
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "train.py")
    assert str(named) in line and REASONS[kind] in line  # the run folder, or the folder above it that failed


def test_a_sweep_refuses_an_unwritable_sweep_folder_before_its_first_job(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "out"
    register_resolvers()
    monkeypatch.setattr(train_cli, "train", never("a job started"))
    code = run_hydra_app(train_cli, ["-m", "logger=none", f"paths.output_dir={out}", "run_name=s", "seed=1,2"],
                         monkeypatch)
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "train.py")
    assert line.endswith(f"{out / 'multiruns' / 's'}: {tmp_path / 'notes.txt'} is a file, not a folder")


def test_train_reports_a_disk_that_fills_up_during_the_run(tiny_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    run = out / "runs" / "r"
    fill_disk_on_rename(monkeypatch, run)
    register_resolvers()
    code = run_hydra_app(train_cli, [*tiny_train_overrides(tiny_dataset, out), "run_name=r"], monkeypatch)
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "train.py")
    assert f"cannot write {run}{os.sep}" in line and line.endswith("No space left on device")


@pytest.mark.slow
def test_torchrun_ranks_stop_with_one_line_from_rank_0(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "out"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("X2CT_RUN_STAMP", None)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py"),
         "logger=none", f"paths.output_dir={out}", "run_name=r"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("train.py")]
    assert ours == [f"train.py (rank 0): error: {out / 'runs' / 'r'}: {tmp_path / 'notes.txt'} is a file, not a "
                    "folder"], result.stderr
    # torchrun prints its own report of the failed ranks; no frame of x2ct or train.py is in it
    assert str(REPO / "train.py") + '", line' not in result.stderr and "x2ct/" not in result.stderr
