"""Mean +- std over seeds (x2ct/evaluation/comparison/aggregate.py and `python -m x2ct.compare --over`)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.test_comparison import SWEEP, outputs  # noqa: F401  (module fixture: real tiny runs)
from x2ct.evaluation.comparison import RunRow, find_run_dirs, read_runs
from x2ct.evaluation.comparison.aggregate import Stat, aggregate_runs, format_aggregate_markdown, format_stat
from x2ct.evaluation.comparison.cli import main
from x2ct.evaluation.comparison.paired import format_paired_markdown, paired_differences
from x2ct.evaluation.comparison.report import aggregate_figure


def row(run: str, sweep: str, overrides: list[str], psnr: float, ssim: float, wall: float,
        evaluations: dict | None = None) -> RunRow:
    return RunRow(run=f"{sweep}/{run}", source=f"/x/{sweep}/{run}", sweep=sweep, sweep_source=f"/x/{sweep}",
                  model="HybridViT", overrides=overrides, test_psnr=psnr, test_ssim=ssim, best_val_psnr=psnr + 1,
                  wall_time_s=wall, evaluations=evaluations or {})


def test_runs_that_differ_only_in_the_seed_merge_with_sample_std():
    rows = [row(str(i), "s", [f"seed={seed}", f"experiment={exp}"], psnr, 0.9, 60.0 * (i + 1),
                {"best_example_ct": {"psnr": psnr - 10, "ssim": None}})
            for i, (seed, exp, psnr) in enumerate([(1, "a", 30.0), (1, "b", 28.0), (2, "a", 31.0), (2, "b", 27.0),
                                                   (3, "a", 32.5)])]
    settings = aggregate_runs(rows, "seed")
    assert [s.overrides for s in settings] == [["experiment=a"], ["experiment=b"]]
    a, b = settings
    assert a.over_values == ["1", "2", "3"] and b.over_values == ["1", "2"]
    assert a.stats["test_psnr"].mean == pytest.approx(31.1666666)
    assert a.stats["test_psnr"].std == pytest.approx(np.std([30.0, 31.0, 32.5], ddof=1))
    assert b.stats["best_val_psnr"].mean == pytest.approx(28.5)
    assert a.stats["wall_time_s"].mean == pytest.approx(statistics.fmean([60, 180, 300]))
    assert a.stats["eval/best_example_ct/psnr"].mean == pytest.approx(21.1666666)
    assert a.stats["eval/best_example_ct/ssim"] == Stat(None, None, 0)
    text = format_aggregate_markdown(settings, "seed")
    assert "| experiment=a | HybridViT | 3 (1, 2, 3) |" in text and "31.17 +- 1.26" in text
    assert "best_example_ct PSNR" in text


def test_the_same_overrides_in_different_sweeps_stay_apart_and_one_run_has_std_zero():
    rows = [row("0", "s1", ["seed=1"], 30.0, 0.9, 10.0), row("0", "s2", ["seed=1"], 20.0, 0.8, 10.0)]
    settings = aggregate_runs(rows, "seed")
    assert len(settings) == 2 and [s.stats["test_psnr"].std for s in settings] == [0.0, 0.0]
    assert format_stat(Stat(None, None, 0), 2) == "-" and format_stat(Stat(95.0, 5.0, 2), None) == "1m35s +- 5.0s"


def test_merge_sweeps_merges_the_same_setting_across_sweeps():
    rows = [row("0", "a", ["seed=1", "lift=learned"], 30.0, 0.9, 10.0), row("1", "a", ["seed=3", "lift=learned"], 32.0,
                                                                           0.9, 10.0),
            row("0", "b", ["seed=2", "lift=learned"], 34.0, 0.9, 10.0), row("0", "c", ["seed=1"], 20.0, 0.8, 10.0)]
    apart = aggregate_runs(rows, "seed")
    assert [len(s.runs) for s in apart] == [2, 1, 1]
    merged = aggregate_runs(rows, "seed", merge_sweeps=True)
    assert [s.over_values for s in merged] == [["1", "3", "2"], ["1"]]
    assert merged[0].stats["test_psnr"].mean == pytest.approx(32.0) and merged[0].stats["test_psnr"].std == 2.0
    assert merged[0].sweep == "a, b" and merged[0].source == "/x/a, /x/b" and merged[1].sweep == "c"


def test_plot_against_a_numeric_override_has_one_errorbar_line_per_series():
    rows = [row(str(i), "s", [f"seed={seed}", f"data.num_views={v}", f"lift={lift}"], 25 + v + seed, 0.8, 1.0)
            for i, (seed, v, lift) in enumerate([(s, v, lift) for s in (1, 2) for v in (2, 4, 8)
                                                 for lift in ("learned", "backproject")])]
    fig = aggregate_figure(aggregate_runs(rows, "seed"), "data.num_views")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(lines) == 2  # one per lift
    for line in lines:
        assert list(line.get_xdata()) == [2, 4, 8] and list(line.get_ydata()) == pytest.approx([28.5, 30.5, 34.5])
    assert aggregate_figure(aggregate_runs(rows, "seed"), "no.such.key") is None


def test_command_merges_the_sweep_jobs_and_reads_evaluate_summaries(outputs, tmp_path, capsys):  # noqa: F811
    sweep = outputs / "multiruns" / SWEEP
    job = sweep / "0" / "evaluation" / "best_example"
    job.mkdir(parents=True)
    (job / "summary.json").write_text(json.dumps({"metrics": {"psnr": {"mean": 12.5}, "ssim": {"mean": 0.5}}}))
    out = tmp_path / "report"
    assert main([str(sweep), "--over", "loss.weights.l1", "--out", str(out)]) == 0
    rows = read_runs(find_run_dirs(sweep))
    record = json.loads((out / "comparison.json").read_text())
    (setting,) = record["aggregate"]["settings"]
    assert sorted(setting["over_values"]) == ["0.5", "1.0"]
    assert setting["stats"]["test_psnr"]["mean"] == pytest.approx(statistics.fmean(r.test_psnr for r in rows))
    assert setting["stats"]["eval/best_example/psnr"] == {"mean": 12.5, "std": 0.0, "n": 1}
    markdown = (out / "comparison.md").read_text()
    assert "## Mean +- std over `loss.weights.l1`" in markdown and "best_example PSNR" in markdown
    assert "mean +- std over loss.weights.l1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main([str(sweep), "--x", "seed"])
    assert err.value.code == 2
    assert "--x needs --over" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(sweep), "--merge-sweeps"])
    assert "--merge-sweeps needs --over" in capsys.readouterr().err


def test_rows_without_evaluations_have_none(outputs):  # noqa: F811
    for r in read_runs(find_run_dirs(outputs / "runs")):
        assert r.evaluations == {}
    assert Path(outputs).is_dir()


def test_paired_differences_subtract_the_reference_run_of_the_same_seed():
    rows = [row(str(i), "s", [f"seed={seed}", f"ablation={name}"], psnr, ssim, 1.0,
                {"best_example_ct": {"psnr": psnr - 10, "ssim": None}})
            for i, (seed, name, psnr, ssim) in enumerate([
                (1, "none", 31.0, 0.95), (1, "swin", 30.5, 0.94), (2, "none", 29.5, 0.93), (2, "swin", 29.7, 0.935),
                (3, "none", 30.9, 0.95), (3, "cross_view", 30.0, 0.90), (2, "cross_view", 28.0, 0.92)])]
    settings = aggregate_runs(rows, "seed")
    reference, paired = paired_differences(settings, ["ablation=none"])
    assert reference.overrides == ["ablation=none"]
    swin, cross_view = paired
    assert swin.pairs == ["1", "2"] and swin.diffs["test_psnr"] == pytest.approx([-0.5, 0.2])
    assert swin.stats["test_psnr"].mean == pytest.approx(-0.15)
    assert swin.stats["test_psnr"].std == pytest.approx(np.std([-0.5, 0.2], ddof=1))
    assert swin.diffs["eval/best_example_ct/psnr"] == pytest.approx([-0.5, 0.2])
    assert swin.diffs["eval/best_example_ct/ssim"] == [None, None]
    assert "best_val_psnr" not in swin.diffs and "wall_time_s" not in swin.diffs  # not results
    # seeds in this setting's order, only those the reference has too
    assert cross_view.pairs == ["3", "2"] and cross_view.diffs["test_psnr"] == pytest.approx([-0.9, -1.5])
    # 95% interval: mean +- t(0.975, 1) * std / sqrt(2), t = 12.706 (one degree of freedom)
    half = 12.7062047 * np.std([-0.5, 0.2], ddof=1) / np.sqrt(2)
    assert swin.intervals["test_psnr"] == pytest.approx([-0.15 - half, -0.15 + half])
    assert swin.intervals["eval/best_example_ct/ssim"] is None
    text = format_paired_markdown(reference, paired, "seed")
    assert "| ablation=swin | 1, 2 | -0.15 +- 0.49 [-4.60, +4.30] (-0.50, +0.20) |" in text
    assert "95% confidence interval of the mean difference" in text
    assert "Δ best_example_ct PSNR" in text and "Δ val PSNR" not in text


def test_the_reference_must_name_exactly_one_setting_and_each_seed_once():
    rows = [row("0", "s", ["seed=1", "a=1", "b=1"], 30.0, 0.9, 1.0), row("1", "s", ["seed=1", "a=1", "b=2"], 31.0, 0.9,
                                                                          1.0)]
    settings = aggregate_runs(rows, "seed")
    with pytest.raises(ValueError, match="matches 2; the settings are: a=1 b=1; a=1 b=2"):
        paired_differences(settings, ["a=1"])
    with pytest.raises(ValueError, match="matches 0"):
        paired_differences(settings, ["a=2"])
    assert paired_differences(settings, ["a=1", "b=2"])[1][0].diffs["test_psnr"] == pytest.approx([-1.0])
    twice = aggregate_runs([*rows, row("2", "t", ["seed=1", "a=1", "b=1"], 29.0, 0.9, 1.0)], "seed", merge_sweeps=True)
    with pytest.raises(ValueError, match="two runs with the same value '1'"):
        paired_differences(twice, ["b=2"])


def test_command_writes_paired_differences(outputs, tmp_path, capsys):  # noqa: F811
    sweep = outputs / "multiruns" / SWEEP
    out = tmp_path / "paired"
    # the sweep's two jobs differ in loss.weights.l1 only and share the default seed: one pair
    assert main([str(sweep), "--over", "seed", "--paired-to", "loss.weights.l1=1.0", "--out", str(out)]) == 0
    rows = {r.overrides[0]: r for r in read_runs(find_run_dirs(sweep))}
    record = json.loads((out / "comparison.json").read_text())
    assert "loss.weights.l1=1.0" in record["paired"]["reference"]
    (other,) = record["paired"]["settings"]
    expected = rows["loss.weights.l1=0.5"].test_psnr - rows["loss.weights.l1=1.0"].test_psnr
    assert other["diffs"]["test_psnr"] == pytest.approx([expected])
    assert "## Paired differences over `seed`" in (out / "comparison.md").read_text()
    assert "paired differences over seed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(sweep), "--paired-to", "loss.weights.l1=1.0"])
    assert "--paired-to needs --over" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(sweep), "--over", "seed", "--paired-to", "loss.weights.l1=7"])
    assert "must name exactly one setting" in capsys.readouterr().err
