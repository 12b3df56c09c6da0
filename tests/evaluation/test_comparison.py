"""Run comparison (x2ct.compare): tiny real runs (one single run, one two-job Hydra sweep) compared end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.engine.test_train import tiny_cfg, tiny_train_overrides
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.trainer import train
from x2ct.evaluation.comparison import RunRow, find_run_dirs, group_runs, read_runs
from x2ct.evaluation.comparison.cli import main
from x2ct.evaluation.comparison.report import val_psnr_figure
from x2ct.evaluation.comparison.table import format_duration, format_parameters, row_cells
from x2ct.evaluation.comparison.wandb_source import WandbUnavailable, read_wandb_runs

REPO = Path(__file__).resolve().parents[2]
SINGLE = "lr_high"
SWEEP = "sweepA"


@pytest.fixture(scope="module")
def outputs(tiny_dataset, tmp_path_factory) -> Path:
    """outputs/runs/lr_high (in-process, no test split) and outputs/multiruns/sweepA/{0,1} (job 1: an older run
    without run_info.json)."""
    out = tmp_path_factory.mktemp("compare") / "outputs"
    single = out / "runs" / SINGLE
    train(tiny_cfg(tiny_dataset, out, "optimizer.lr=3e-3", "test_after_training=false"), run_dir=single)
    assert (single / "run_info.json").is_file()

    # a real sweep through the entrypoint, so .hydra/overrides.yaml and multirun.yaml are Hydra's own
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    env.pop("X2CT_RUN_STAMP", None)
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "loss.weights.l1=1.0,0.5",
                             f"run_name={SWEEP}", *tiny_train_overrides(tiny_dataset, out)],
                            cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (out / "multiruns" / SWEEP / "1" / "run_info.json").unlink(missing_ok=True)  # an older run, without one
    return out


def expected_from_metrics(run_dir: Path) -> dict:
    """The numbers a row must show, computed straight from the run's metrics.jsonl."""
    records = read_metrics(run_dir / "metrics.jsonl")
    val = [r for r in records if r["split"] == "val"]
    best = max(val, key=lambda r: r["psnr"])
    reference = [r for r in records if r["split"] == "val_mean_volume"][-1]
    return {"best_val_psnr": best["psnr"], "val_ssim_at_best": best["ssim"], "best_epoch": best["epoch"] + 1,
            "epochs": max(r["epoch"] for r in records if r["split"] in ("train", "val")) + 1,
            "mean_volume_psnr": reference["psnr"], "wall_time_s": records[-1]["time"] - records[0]["time"],
            "val_curve": [r["psnr"] for r in val]}


def test_rows_hold_the_metrics_file_values_and_what_each_run_was(outputs):
    rows = {row.run: row for row in read_runs(find_run_dirs(outputs))}
    assert sorted(rows) == [SINGLE, f"{SWEEP}/0", f"{SWEEP}/1"]
    for row in rows.values():
        want = expected_from_metrics(Path(row.source))
        for key in ("best_val_psnr", "val_ssim_at_best", "best_epoch", "epochs", "mean_volume_psnr"):
            assert getattr(row, key) == pytest.approx(want[key]), (row.run, key)
        assert [p["psnr"] for p in row.val_curve] == pytest.approx(want["val_curve"])
        assert row.model == "BaselineUNet" and row.max_epochs == 2 and row.status == "finished"

    single = rows[SINGLE]
    assert single.sweep == "" and single.overrides == [] and single.loss_weights == {"l1": 1.0}
    info = json.loads((outputs / "runs" / SINGLE / "run_info.json").read_text())
    assert single.parameters == info["parameters"] > 0
    assert single.wall_time_s == info["wall_time_s"]  # run_info.json wins over the metrics times
    assert single.test_psnr is None and single.test_ssim is None  # trained without the test pass

    job = rows[f"{SWEEP}/1"]  # without run_info.json: no parameter count, wall time from the metrics times
    assert job.parameters is None and rows[f"{SWEEP}/0"].parameters == single.parameters
    assert job.sweep == SWEEP and job.sweep_source == str(outputs / "multiruns" / SWEEP)
    assert job.loss_weights == {"l1": 0.5} and "loss.weights.l1=0.5" in job.overrides
    assert "trainer=debug" in job.overrides and "model.base_channels=4" in job.overrides
    assert not [o for o in job.overrides if o.startswith(("data.root", "paths.", "run_name"))], job.overrides
    assert job.wall_time_s == pytest.approx(expected_from_metrics(Path(job.source))["wall_time_s"])
    test = json.loads((outputs / "multiruns" / SWEEP / "1" / "test_metrics.json").read_text())
    assert (job.test_psnr, job.test_ssim) == (test["psnr"], test["ssim"])


def test_command_prints_the_grouped_table_and_writes_report_json_and_plot(outputs, tmp_path, capsys):
    assert main([str(outputs), "--out", str(tmp_path / "cmp")]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line.split()[0] if line.strip() else "" for line in lines]
    sweep_heading = next(i for i, line in enumerate(lines) if line.startswith(f"sweep {SWEEP} ("))
    assert sorted(runs[sweep_heading + 1: sweep_heading + 3]) == [f"{SWEEP}/0", f"{SWEEP}/1"]
    assert runs[runs.index(SINGLE) - 1] == "single"  # under the "single runs" heading
    # shared overrides once in the heading; the varying one in the rows; run-location overrides nowhere
    assert "shared overrides: " in lines[sweep_heading] and "trainer=debug" in lines[sweep_heading]
    assert "loss.weights.l1=1.0" not in lines[sweep_heading]
    job1 = lines[runs.index(f"{SWEEP}/1")]
    assert "loss.weights.l1=0.5" in job1 and "trainer=debug" not in job1
    assert "data.root" not in "\n".join(lines) and "run_name" not in "\n".join(lines)

    report = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "![Validation PSNR per epoch](val_psnr.png)" in report
    assert f"## Sweep `{SWEEP}`" in report and "## Single runs" in report
    assert "| run | model | overrides | loss weights | params | val PSNR |" in report
    for name in (SINGLE, f"{SWEEP}/0", f"{SWEEP}/1"):
        assert f"\n| {name} | BaselineUNet |" in report
    assert "10 log10(1 / MSE)" in report and "sigma 1.5" in report
    assert (tmp_path / "cmp" / "val_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    written = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    by_name = {row["run"]: row for row in written["runs"]}
    for row in read_runs(find_run_dirs(outputs)):
        assert by_name[row.run] == row.to_dict()
    assert [g["sweep"] for g in written["groups"]] in (["", SWEEP], [SWEEP, ""])


def test_default_output_folder_is_inside_the_first_path_and_is_not_taken_for_a_run(outputs, capsys):
    for _ in range(2):  # the second time, outputs/comparison/ exists inside the searched tree
        assert main([str(outputs), "--no-plot"]) == 0
        written = json.loads((outputs / "comparison" / "comparison.json").read_text())
        assert len(written["runs"]) == 3
    assert not (outputs / "comparison" / "val_psnr.png").exists()
    assert "](val_psnr.png)" not in (outputs / "comparison" / "comparison.md").read_text()


def test_plot_has_one_line_per_run_with_its_validation_curve(outputs):
    groups = group_runs(read_runs(find_run_dirs(outputs)))
    ax = val_psnr_figure(groups).axes[0]
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    for row in (r for g in groups for r in g.rows):
        assert list(lines[row.run].get_ydata()) == pytest.approx([p["psnr"] for p in row.val_curve])
        assert list(lines[row.run].get_xdata()) == [1, 2]
    assert lines[f"{SWEEP}/1"].get_label() == f"{SWEEP}/1 (loss.weights.l1=0.5)"  # what the job varies
    jobs = [lines[f"{SWEEP}/0"], lines[f"{SWEEP}/1"]]
    assert jobs[0].get_linestyle() == jobs[1].get_linestyle() != lines[SINGLE].get_linestyle()
    assert jobs[0].get_color() != jobs[1].get_color()
    assert any(label.startswith("mean-volume reference") for label in lines)


def write_run(run_dir: Path, records: list[dict], info: dict | None = None, overrides: list[str] | None = None,
              json_files: dict[str, dict] | None = None) -> Path:
    """A fake run folder; ``json_files`` maps paths inside it (``test_metrics.json``, ...) to their content."""
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"model": {"_target_": "lab.nets.MyNet"}, "loss": {"weights": {"l1": 1.0, "perceptual": 0.1}},
              "trainer": {"max_epochs": 10}}
    (run_dir / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if info is not None:
        (run_dir / "run_info.json").write_text(json.dumps(info))
    if overrides is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    for name, content in (json_files or {}).items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(json.dumps(content))
    return run_dir


def test_a_stopped_run_best_psnr_keeps_its_own_ssim_and_skips_nan(tmp_path):
    records = [{"step": 0, "epoch": 0, "split": "val_mean_volume", "time": 100.0, "psnr": 18.0, "ssim": 0.4},
               {"step": 5, "epoch": 0, "split": "train", "time": 110.0, "loss": 0.1},
               {"step": 5, "epoch": 0, "split": "val", "time": 111.0, "psnr": 20.0, "ssim": 0.7},
               {"step": 10, "epoch": 1, "split": "val", "time": 120.0, "psnr": 22.0, "ssim": 0.6},
               {"step": 15, "epoch": 2, "split": "val", "time": 130.0, "psnr": float("nan"), "ssim": float("nan")},
               {"step": 20, "epoch": 3, "split": "train", "time": 140.0, "loss": 0.1}]
    running = {"status": "running", "wall_time_s": 0.0, "parameters": 5}  # a session that has not closed
    rows = {row.run: row for row in read_runs([write_run(tmp_path / "old", records),
                                               write_run(tmp_path / "live", records, running)])}
    for row in rows.values():
        assert (row.best_val_psnr, row.val_ssim_at_best, row.best_epoch) == (22.0, 0.6, 2)  # not the best SSIM
        assert [p["epoch"] for p in row.val_curve] == [1, 2]  # the NaN validation is left out
        assert (row.epochs, row.max_epochs, row.mean_volume_psnr) == (4, 10, 18.0)  # epoch 3 trained, not validated
        assert row.wall_time_s == 40.0 and row.model == "MyNet" and row.test_psnr is None
        assert row_cells(row)[3] == "l1=1 perceptual=0.1"
        json.dumps(row.to_dict(), allow_nan=False)
    assert (rows["old"].status, rows["live"].status, rows["live"].parameters) == ("incomplete", "running", 5)


def make_row(run: str, psnr: float | None, sweep: str = "", overrides: tuple[str, ...] = ()) -> RunRow:
    return RunRow(run=run, source=run, sweep=sweep, sweep_source=f"/out/{sweep}" if sweep else "",
                  overrides=list(overrides), best_val_psnr=psnr)


def test_grouping_ranks_rows_and_groups_and_lifts_the_shared_overrides():
    rows = [make_row("b", 20.0), make_row("a", None),
            make_row("S/2", 25.0, "S", ("x=1", "l=0.5")), make_row("S/10", 30.0, "S", ("x=1", "l=1"))]
    by_psnr = group_runs(rows, "psnr")
    assert [[r.run for r in g.rows] for g in by_psnr] == [["S/10", "S/2"], ["b", "a"]]  # no PSNR last
    assert by_psnr[0].shared_overrides == ["x=1"] and by_psnr[1].shared_overrides == []
    assert row_cells(by_psnr[0].rows[1], by_psnr[0].shared_overrides)[2] == "l=0.5"
    by_name = group_runs(rows, "name")
    assert [[r.run for r in g.rows] for g in by_name] == [["a", "b"], ["S/2", "S/10"]]  # job numbers numeric


def test_cells_format_parameters_and_durations():
    assert [format_parameters(n) for n in (None, 950, 45_600, 1_234_567)] == ["-", "950", "45.6k", "1.23M"]
    assert [format_duration(s) for s in (None, 0.32, 42.3, 185, 7384)] == ["-", "0.3s", "42s", "3m05s", "2h03m"]


def test_missing_path_fails_with_exit_code_2_and_names_it(tmp_path):
    missing = tmp_path / "no_such_outputs"
    result = subprocess.run([sys.executable, "-m", "x2ct.compare", str(missing)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{missing} does not exist" in result.stderr and "Traceback" not in result.stderr


def test_folder_without_runs_fails_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    assert f"no runs found under {tmp_path / 'empty'}" in capsys.readouterr().err


def copy_run(source: Path, target: Path) -> Path:
    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints")))


def test_corrupt_runs_are_skipped_with_a_warning_naming_the_file(outputs, tmp_path, capsys):
    source = outputs / "runs" / SINGLE
    copy_run(source, tmp_path / "runs" / "good")
    bad_metrics = copy_run(source, tmp_path / "runs" / "bad_metrics") / "metrics.jsonl"
    lines = bad_metrics.read_text().splitlines(keepends=True)
    bad_metrics.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    bad_config = copy_run(source, tmp_path / "runs" / "bad_config") / "config_resolved.yaml"
    bad_config.write_text("model: [unclosed\n")
    bad_info = copy_run(source, tmp_path / "runs" / "bad_info") / "run_info.json"
    bad_info.write_text("{")

    assert main([str(tmp_path / "runs"), "--no-plot", "--out", str(tmp_path / "cmp")]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipping run {bad_metrics.parent}: {bad_metrics}: line 2 is not valid JSON" in err
    assert f"warning: skipping run {bad_config.parent}: {bad_config} is not readable YAML" in err
    assert f"warning: {bad_info}: " in err  # optional file: the run stays, without its info
    rows = {row["run"]: row for row in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"]}
    assert sorted(rows) == ["bad_info", "good"]
    assert rows["bad_info"]["parameters"] is None and rows["good"]["parameters"] is not None

    shutil.rmtree(tmp_path / "runs" / "good")
    shutil.rmtree(tmp_path / "runs" / "bad_info")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "runs")])
    assert exit_info.value.code == 2 and "none of the 2 run folders could be read" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- W&B
# The real API needs the network; these check the mapping with a stand-in API object, and the failure path.


class FakeSummary(dict):
    pass


class FakeRun:
    def __init__(self, id, name, group, history, summary, config):
        self.id, self.name, self.group, self.state = id, name, group, "finished"
        self.config, self.summary, self._history = config, FakeSummary(summary), history

    def history(self, keys, samples, pandas):
        assert not pandas and set(keys) == {"val/psnr", "val/ssim", "epoch"}
        return self._history


class FakeApi:
    def __init__(self, runs):
        self._runs = runs

    def runs(self, path):
        assert path == "me/x2ct"
        return self._runs


def test_wandb_runs_map_onto_the_same_rows():
    config = {"model": {"_target_": "x2ct.models.baseline_unet.BaselineUNet"}, "loss": {"weights": {"l1": 0.5}},
              "trainer": {"max_epochs": 3}}
    history = [{"epoch": 1, "val/psnr": 22.0, "val/ssim": 0.6}, {"epoch": 0, "val/psnr": 20.0, "val/ssim": 0.5},
               {"epoch": 2, "val/psnr": 21.0, "val/ssim": 0.7}]
    summary = {"parameters": 1000, "val/psnr_mean_volume": 18.0, "test/psnr": 21.5, "test/ssim": 0.65,
               "_runtime": 61.0}
    runs = [FakeRun("abc", "1_data.root=/x,loss.weights.l1=0.5,model.depth=[2,3]", "sweepB", history, summary,
                    config),
            FakeRun("def", "exp1", None, [], {}, config)]
    job, single = read_wandb_runs("me/x2ct", api=FakeApi(runs))
    assert (job.run, job.sweep, job.source) == ("sweepB/1", "sweepB", "wandb:me/x2ct/abc")
    assert job.overrides == ["loss.weights.l1=0.5", "model.depth=[2,3]"]
    assert (job.best_val_psnr, job.val_ssim_at_best, job.best_epoch, job.epochs) == (22.0, 0.6, 2, 3)
    assert (job.model, job.parameters, job.max_epochs, job.loss_weights) == ("BaselineUNet", 1000, 3, {"l1": 0.5})
    assert (job.mean_volume_psnr, job.test_psnr, job.wall_time_s, job.status) == (18.0, 21.5, 61.0, "finished")
    assert (single.run, single.sweep, single.best_val_psnr, single.epochs) == ("exp1", "", None, 0)


def test_unreachable_wandb_project_is_one_clear_error():
    class DownApi:
        def runs(self, path):
            raise ConnectionError("Max retries exceeded\nwith url: /graphql")

    with pytest.raises(WandbUnavailable) as err:
        read_wandb_runs("me/x2ct", api=DownApi())
    assert str(err.value) == ("cannot read W&B project 'me/x2ct': ConnectionError: Max retries exceeded with url: "
                              "/graphql")


def test_command_without_a_wandb_api_key_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "WANDB_CONFIG_DIR", "WANDB_DIR"):
        monkeypatch.setenv(name, str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.chdir(tmp_path)
    assert main(["--wandb-project", "me/x2ct"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m x2ct.compare: error: cannot read W&B project 'me/x2ct': ")
    assert "\n" not in err and "Traceback" not in err
