"""benchmarks/runs_equal.py: two run folders compared value for value, wall-clock fields aside."""

from __future__ import annotations

import json
import shutil

from tests.test_results_tables import benchmark_module


def write_run(folder, loss: float, test_psnr: float, seconds: float) -> None:
    folder.mkdir(parents=True)
    records = [{"step": 10, "epoch": 0, "split": "train", "time": seconds, "loss": loss, "samples_per_s": 1 / seconds},
               {"step": 10, "epoch": 0, "split": "val", "time": seconds + 1, "psnr": 20.5, "ssim": 0.7}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "test_metrics.json").write_text(json.dumps({"psnr": test_psnr, "ssim": 0.71, "loss": 0.02}))
    (folder / "run_info.json").write_text(json.dumps({"code": {"commit": "a" * 40, "dirty": False}}))


def test_runs_that_differ_only_in_wall_clock_are_identical_and_a_changed_value_is_named(tmp_path, capsys):
    runs_equal = benchmark_module("runs_equal")
    write_run(tmp_path / "a", 0.125, 30.0, seconds=5.0)
    write_run(tmp_path / "b", 0.125, 30.0, seconds=9.0)  # another speed, the same numbers
    out = tmp_path / "equal.json"
    assert runs_equal.main(["--pair", "same", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"]["same"]["differing"] == [] and result["pairs"]["same"]["values_compared"] == 12
    assert {"code", "machine", "threads", "shared"} <= set(result)
    shutil.rmtree(tmp_path / "b")
    write_run(tmp_path / "b", 0.125000001, 30.0, seconds=5.0)
    assert runs_equal.main(["--pair", "changed", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "changed: 12 values in 2 records + test: 1 value(s) differ" in capsys.readouterr().out
