"""scripts/gpu_check.sh rehearsed on the CPU (--device cpu --tiny), so that the GPU acceptance run cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = ("gpu_tests", "milestone1", "milestone1_compile", "cascade_128", "c2rv_256", "drr", "ddp")
TRAINING_PARTS = ("milestone1", "milestone1_compile", "cascade_128", "c2rv_256")


def gpu_check(out: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("X2CT_RUN_STAMP", None)
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny",
                           "--out", str(out), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_part_and_writes_json_and_markdown(tmp_path):
    result = gpu_check(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["device"] == "cpu" and report["tiny"] and report["ok"]
    assert list(report["parts"]) == list(PARTS)
    for name, part in report["parts"].items():
        assert part["status"] in ("ok", "skipped"), (name, part)
    assert report["parts"]["gpu_tests"]["note"] == "skipped: no CUDA"
    assert report["parts"]["ddp"]["note"] == "skipped: no CUDA"
    for name in TRAINING_PARTS:
        part = report["parts"][name]
        assert part["status"] == "ok", (name, part)
        for key in ("samples_per_s", "peak_mb", "gflops_per_sample", "parameters", "seconds_per_step"):
            assert positive(part[key]), (name, key, part[key])
        assert part["steps_timed"] >= 2 and part["mfu"] is None and "no bf16 peak" in part["mfu_note"]
    assert report["parts"]["milestone1"]["volume_size"] == 16 and report["parts"]["c2rv_256"]["views"] == 8
    compiled = report["parts"]["milestone1_compile"]
    assert compiled["compile"] == "eager" and positive(compiled["compile_s"]) and compiled["graph_breaks"] >= 0
    drr = report["parts"]["drr"]["summary"]["cases"]
    assert drr and all(positive(c["seconds_per_call"]) and positive(c["renders_per_s"]) for c in drr)
    assert {goal["pass"] for goal in report["goals"].values()} == {None}  # goals are judged on a GPU only
    markdown = (tmp_path / "gpu_check_cpu.md").read_text()
    assert "| part | status | samples/s | peak MB | GFLOP/sample | MFU |" in markdown
    for name in PARTS:
        assert f"| {name} | " in markdown
    assert "| part | status |" in result.stdout  # the table is printed too


@pytest.mark.slow
def test_ddp_part_trains_two_cpu_ranks_on_a_prepared_phantom_set(tmp_path):
    result = gpu_check(tmp_path, "--parts", "ddp", "--ddp-on-cpu")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    ddp = report["parts"]["ddp"]
    assert ddp["status"] == "ok" and ddp["backend"].startswith("gloo"), ddp
    assert positive(ddp["samples_per_s"]) and positive(ddp["prepare_s"])
    assert report["parts"]["milestone1"]["note"] == "skipped: not in --parts"


def load_module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    return gpu_check


def test_failed_part_is_recorded_and_the_exit_status_says_so(tmp_path, monkeypatch):
    module = load_module(monkeypatch)

    def broken(ctx, timeout_s):
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "part_drr", broken)
    assert module.main(["--device", "cpu", "--tiny", "--parts", "drr,ddp", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["parts"]["drr"]["status"] == "failed" and "boom" in report["parts"]["drr"]["note"]
    assert report["parts"]["ddp"]["status"] == "skipped" and not report["ok"]


def test_mfu_peaks_and_slugs(monkeypatch):
    module = load_module(monkeypatch)

    assert module.slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert module.bf16_peak("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989e12)
    assert module.bf16_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    assert module.bf16_peak("NVIDIA H200") == ("H200", 989e12)
    assert module.bf16_peak("NVIDIA A100-SXM4-80GB")[1] == 312e12
    assert module.bf16_peak("NVIDIA GeForce RTX 4090")[1] == 165e12
    assert module.bf16_peak("NVIDIA H100 NVL") is None and module.bf16_peak("Tesla T4") is None


class RaisesOutOfMemory(torch.nn.Module):
    """A model whose forward runs out of memory, as the c2rv recipe may at 256^3 on a small GPU."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, views):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_a_recorded_result_not_a_crash(monkeypatch):
    module = load_module(monkeypatch)
    spec = module.training_spec("c2rv_256", "cpu", True, None)
    spec["model"] = {"_target_": f"{__name__}.RaisesOutOfMemory"}
    result = module.run_training_case(spec, budget_s=5.0)
    assert result["status"] == "oom" and "Tried to allocate 20.00 GiB" in result["note"]
    assert result["steps_timed"] == 0 and result["peak_mb"] >= 0
