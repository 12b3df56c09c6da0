"""benchmarks/bench_memory.py on its rehearsal case (milestone 1 at 16^3 from 32^2 views, width 4), so that the
memory table's harness cannot rot: a fresh process per case, the JSON and Markdown it writes, and a case over the
memory cap reported as a result rather than a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_memory.py"


def bench_memory(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "X2CT_SHARED_MACHINE": "1"}  # stated: the tests share the machine
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_list_names_every_recipe_case():
    result = bench_memory("--list")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    for name in ("baseline_128", "milestone1_64", "milestone1_64_ckpt", "milestone1_128_ckpt", "milestone2_128",
                 "c2rv_256_v6", "c2rv_256_v8_ckpt", "c2rv_256_v10", "tiny"):
        assert name in names
    assert "baseline_128_ckpt" not in names  # the baseline has no checkpointing


def test_tiny_case_writes_json_and_markdown(tmp_path):
    result = bench_memory("--cases", "tiny", "--out", str(tmp_path / "memory"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "memory.json").read_text())
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["batch"] == 1
    assert report["steps"] == 2 and report["threads"] == 1 and report["max_gb"] == 20
    assert report["code"]["commit"] and report["machine"]["cpus_usable"] >= 1 and report["shared"] is True
    (row,) = report["rows"]
    assert row["name"] == "tiny" and row["experiment"] == "milestone1" and row["status"] == "ok", row
    assert (row["volume_size"], row["views"], row["view_size"]) == (16, 2, 32)
    assert row["checkpointing"] == "off" and "perceptual" not in row["loss_weights"]
    assert len(row["steps"]) == 2 and row["memory_method"].startswith("VmHWM")
    for key in ("parameters", "ready_gb", "build_peak_gb", "step_rise_gb", "step_total_gb", "step_seconds"):
        assert positive(row[key]), (key, row[key])
    # the total is the step's peak over the loaded process: what was there before the step plus its rise
    assert abs(row["step_total_gb"] - row["step_before_gb"] - row["step_rise_gb"]) < 1e-9
    markdown = (tmp_path / "memory.md").read_text()
    assert "| case | recipe | volume | views | checkpointing | params |" in markdown
    assert "| tiny | milestone1 | 16^3 | 2 x 32^2 | off |" in markdown and "| yes | yes | yes |" in markdown
    assert "proxy for GPU memory" in markdown and "float32" in markdown
    assert "| case | recipe |" in result.stdout  # the table is printed too


def test_case_over_the_cap_is_a_result_not_a_crash(tmp_path):
    result = bench_memory("--cases", "tiny", "--max-gb", "0.5", "--out", str(tmp_path / "memory"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert row["status"] == "over_cap" and row["max_gb"] == 0.5, row
    assert "> 0.5 (cap)" in (tmp_path / "memory.md").read_text()


def test_case_over_the_time_limit_is_a_result(tmp_path):
    result = bench_memory("--cases", "tiny", "--timeout", "1", "--out", str(tmp_path / "memory"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert row["status"] == "timeout" and "time limit" in row["note"], row
