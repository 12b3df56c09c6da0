"""benchmarks/bench_drr.py on tiny cases on the CPU, so that the DRR benchmark's protocol cannot rot: 10 warm-up
and 100 timed calls per run by default, x2ct with a cached ray plan and planned per call, forward and
forward+backward, the same image and gradient either way, a gradient that is the projector's adjoint, and the
provenance the report carries. Timings are never asserted."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from x2ct.provenance import SHARED_ENV

REPO = Path(__file__).resolve().parents[1]
ENGINE = "x2ct-grid_sample"


@pytest.fixture(scope="module")
def bench(request):
    """The benchmark module, imported as the script imports its neighbours (benchmarks/ on the path)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    request.addfinalizer(lambda: sys.path.remove(str(REPO / "benchmarks")))
    import bench_drr

    return bench_drr


@pytest.fixture(scope="module")
def full_run(bench, tmp_path_factory):
    """The default (full) protocol on one tiny case at batch 2, x2ct only; returns (report, markdown)."""
    out = tmp_path_factory.mktemp("drr")
    stated = os.environ.get(SHARED_ENV)
    os.environ[SHARED_ENV] = "0"  # the caller states that nothing else ran
    try:
        assert bench.main(["--device", "cpu", "--cases", "8x16x2x2", "--no-peer", "--out", str(out)]) == 0
    finally:
        os.environ.pop(SHARED_ENV) if stated is None else os.environ.update({SHARED_ENV: stated})
    return json.loads((out / "drr_cpu.json").read_text()), (out / "drr_cpu.md").read_text()


def runs_of(report: dict) -> dict[tuple[str, str, str], dict]:
    (case,) = report["cases"]
    return {(r["engine"], r["plan"], r["mode"]): r for r in case["runs"]}


def test_every_run_makes_ten_warmup_and_a_hundred_timed_calls(full_run):
    report, _ = full_run
    assert report["setup"]["timing"]["warmup_calls"] == 10 and report["setup"]["timing"]["timed_calls"] == 100
    runs = runs_of(report)
    assert set(runs) == {(ENGINE, plan, mode) for plan in ("cached", "per_call")
                         for mode in ("forward", "forward_backward")}
    for run in runs.values():
        assert run["status"] == "ok", run
        assert run["warmup_calls"] == 10 and len(run["warmup_s"]) == 10
        assert run["timed_calls"] == 100 and len(run["seconds_all"]) == 100
        seconds = run["seconds_all"]
        assert run["seconds_min"] == min(seconds) and run["seconds_median"] == statistics.median(seconds)
        assert run["seconds_mean"] == pytest.approx(sum(seconds) / 100)
        assert run["renders_per_call"] == 4  # batch 2 x 2 views
        assert run["renders_per_s"] == pytest.approx(4 / run["seconds_median"])


def test_a_per_call_plan_renders_the_cached_plans_image_and_gradient(full_run):
    runs = runs_of(full_run[0])
    agree = runs[(ENGINE, "per_call", "forward")]["agreement_vs_x2ct"]
    assert len(agree["rel_l2_raw"]) == 4  # one entry per rendered image: batch 2 x 2 views
    assert agree["rel_l2_raw"] == [0.0] * 4
    cached, per_call = runs[(ENGINE, "cached", "forward_backward")], runs[(ENGINE, "per_call", "forward_backward")]
    assert per_call["grad_norm"] == pytest.approx(cached["grad_norm"], rel=1e-6)


def test_the_timed_gradient_is_finite_and_the_projectors_adjoint(full_run):
    runs = runs_of(full_run[0])
    for (engine, plan, mode), run in runs.items():
        if mode == "forward_backward":
            assert run["grad_finite"] and run["grad_norm"] > 0
            assert run["adjoint_rel_error"] < 1e-5  # <grad, volume> = <g, image> for the linear projector
            forward = runs[(engine, plan, "forward")]
            assert run["time_ratio_vs_forward"] == pytest.approx(run["seconds_median"] / forward["seconds_median"])
        assert "time_ratio_vs_nanodrr" not in run  # no nanodrr in this run


def test_the_case_carries_its_headline_and_the_report_its_provenance(full_run):
    report, _ = full_run
    (case,) = report["cases"]
    head = runs_of(report)[(ENGINE, "cached", "forward")]
    assert case["status"] == "ok" and case["batch"] == 2 and case["volume_shape"] == [8, 8, 8]
    assert case["seconds_per_call"] == head["seconds_median"] and case["peak_memory_mb"] == head["peak_memory_mb"]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert report["code"]["commit"] == commit.strip()
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch"] == torch.__version__
    assert report["threads"] == torch.get_num_threads() and report["shared"] is False
    triton = report["setup"]["triton_backend"]
    assert triton["available"] is False and "interpreter" in triton["reason"]


def test_markdown_has_a_row_per_run(full_run):
    _, text = full_run
    assert "## 8^3 x 16^2 x 2 views, batch 2" in text
    assert "10 warm-up calls, then 100 timed calls" in text
    for plan in ("plan cached", "planned per call"):
        assert f"| {ENGINE} | {plan} | forward | 1 per voxel plane |" in text
        assert f"| {ENGINE} | {plan} | forward_backward (" in text  # with its time over forward's
    assert "| reference |" in text and "| adjoint " in text


def test_a_run_the_warmup_predicts_too_slow_is_skipped_with_the_reason(bench, tmp_path):
    assert bench.main(["--device", "cpu", "--cases", "8x16x1", "--no-peer", "--modes", "forward", "--warmup", "3",
                       "--timed", "5", "--max-run-s", "1e-9", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "drr_cpu.json").read_text())
    (case,) = report["cases"]
    assert case["status"] == "skipped" and "seconds_per_call" not in case
    for run in case["runs"]:
        assert run["status"] == "skipped" and "--max-run-s" in run["note"] and len(run["warmup_s"]) == 2


def test_adjoint_check_passes_a_linear_map_and_fails_a_nonlinear_one(bench):
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    upstream = torch.randn(6, generator=generator, dtype=torch.float64)
    for fn, linear in ((lambda v: matrix @ v, True), (lambda v: matrix @ v.square(), False)):
        volume = torch.rand(5, generator=generator, dtype=torch.float64).requires_grad_()
        image = fn(volume)
        image.backward(upstream)
        error = bench.adjoint_check([volume], image, upstream)["adjoint_rel_error"]
        assert (error < 1e-12) if linear else (error == pytest.approx(1.0))  # <2 v g', v> = 2 <g', v^2>


def test_cases_parse_and_quick_divides_the_default_cases_on_the_cpu_only(bench):
    assert bench.parse_case("64x512x2x2") == bench.Case(64, 512, 2, 2)
    assert bench.parse_case("128x200x1") == bench.Case(128, 200, 1, 1)
    with pytest.raises(ValueError, match=r"'12x3'.*SIDExDETECTORxVIEWS"):
        bench.parse_case("12x3")
    full = bench.cases_for(bench.parse_args([]), "cpu")
    assert full == [bench.Case(128, 256, 2), bench.Case(64, 512, 2, 2), bench.Case(256, 256, 8),
                    bench.Case(128, 200, 1)]
    quick = bench.parse_args(["--quick"])
    assert bench.cases_for(quick, "cuda") == full
    assert bench.cases_for(quick, "cpu") == [bench.Case(32, 64, 2), bench.Case(16, 128, 2, 2), bench.Case(64, 64, 8),
                                             bench.Case(32, 50, 1)]
    assert quick.nanodrr_samples_per_plane == (1,) and bench.parse_args([]).nanodrr_samples_per_plane == (1, 2)


def test_a_grid_of_cases_and_the_repeats_spelling(bench):
    args = bench.parse_args(["--sizes", "16,32", "--detectors", "32", "--repeats", "3", "--min-repeats", "1"])
    assert args.cases == (bench.Case(16, 32, 2), bench.Case(32, 32, 2))
    assert args.timed == 3 and args.min_repeats == 1 and args.warmup == 10


def test_bad_command_lines_are_refused_naming_what_is_wrong(bench, capsys):
    for argv, message in ((["--cases", "64x512"], "'64x512'"), (["--modes", "backward"], "backward"),
                          (["--cases", "8x16x1", "--sizes", "8"], "not both"), (["--timed", "0"], "'0'")):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_peers_render_x2cts_image_and_a_gradient_that_is_their_adjoint(bench, tmp_path):
    pytest.importorskip("nanodrr")
    assert bench.main(["--device", "cpu", "--cases", "16x32x2", "--peers", "nanodrr", "--warmup", "1", "--timed",
                       "2", "--out", str(tmp_path)]) == 0
    runs = runs_of(json.loads((tmp_path / "drr_cpu.json").read_text()))
    for samples in (16, 32):
        forward = runs[(f"nanodrr-torch-{samples}", "own", "forward")]
        backward = runs[(f"nanodrr-torch-{samples}", "own", "forward_backward")]
        assert forward["status"] == "ok" and backward["status"] == "ok"
        assert min(forward["agreement_vs_x2ct"]["pearson_r"]) > 0.99
        assert backward["grad_finite"] and backward["adjoint_rel_error"] < 1e-4
    nanodrr = runs[("nanodrr-torch-16", "own", "forward")]  # one sample per voxel plane: the ratios' nanodrr
    x2ct = runs[(ENGINE, "cached", "forward")]
    assert x2ct["time_ratio_vs_nanodrr"] == pytest.approx(x2ct["seconds_median"] / nanodrr["seconds_median"])
