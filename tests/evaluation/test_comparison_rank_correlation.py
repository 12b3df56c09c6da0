"""Rank correlation between metric columns (x2ct/evaluation/comparison/rank_correlation.py and
`python -m x2ct.compare --rank-correlation`)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats

from tests.evaluation.test_comparison import write_run
from x2ct.evaluation.comparison.aggregate import Setting, Stat
from x2ct.evaluation.comparison.cli import main
from x2ct.evaluation.comparison.rank_correlation import (
    format_rank_correlation_line,
    format_rank_correlation_markdown,
    rank_correlation,
)
from x2ct.provenance import code_version

PHANTOM, REAL = "test PSNR", "best_example_ct PSNR"


def settings(phantom: list[float | None], real: list[float | None]) -> list[Setting]:
    """One setting per pair of means: test PSNR and the real-CT evaluation's PSNR (None: the column is missing)."""
    def stat(mean: float | None) -> Stat:
        return Stat(mean, None if mean is None else 0.0, 0 if mean is None else 1)

    return [Setting(sweep="s", source="/x/s", overrides=[f"setting={i}"], model="Net", runs=[f"s/{i}"],
                    over_values=["1"], parameters=None,
                    stats={"test_psnr": stat(a), "eval/best_example_ct/psnr": stat(b)})
            for i, (a, b) in enumerate(zip(phantom, real, strict=True))]


def exact_p(a, b) -> float:
    """Two-sided permutation p of Spearman's rho by brute force: the share of all n! orderings of ``b`` whose rho is
    at least as far from 0 as the observed one."""
    import itertools

    observed = abs(stats.spearmanr(a, b).statistic)
    rhos = [abs(stats.spearmanr(a, list(p)).statistic) for p in itertools.permutations(b)]
    return sum(r >= observed - 1e-12 for r in rhos) / len(rhos)


def test_a_perfect_ranking_of_four_settings_has_the_exact_p_not_zero():
    result = rank_correlation(settings([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 9.0]), PHANTOM, REAL)
    assert result.rho == pytest.approx(1.0) and result.p_value == pytest.approx(2 / 24)


def test_above_eight_settings_the_p_value_is_scipys_t_approximation():
    phantom = [29.1, 30.4, 31.0, 28.7, 30.0, 32.2, 27.9, 31.5, 29.9]
    real = [18.0, 17.5, 19.2, 16.9, 18.4, 18.1, 17.0, 18.8, 17.7]
    result = rank_correlation(settings(phantom, real), PHANTOM, REAL)
    assert result.p_value == pytest.approx(stats.spearmanr(phantom, real).pvalue, abs=1e-12)


@pytest.mark.parametrize(("phantom", "real"), [
    ([29.1, 30.4, 31.0, 28.7, 30.0, 32.2], [18.0, 17.5, 19.2, 16.9, 18.4, 18.1]),  # no ties
    ([30.0, 31.0, 31.0, 29.0, 32.0, 30.0], [18.0, 17.0, 18.0, 16.5, 18.0, 19.0]),  # ties in both columns
])
def test_rho_p_and_pearson_equal_scipy(phantom, real):
    result = rank_correlation(settings(phantom, real), PHANTOM, REAL)
    spearman, pearson = stats.spearmanr(phantom, real), stats.pearsonr(phantom, real)
    assert (result.n, result.left_out, result.undefined) == (6, 0, "")
    assert result.rho == pytest.approx(spearman.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(exact_p(phantom, real), abs=1e-12)
    assert result.pearson_r == pytest.approx(pearson.statistic, abs=1e-12)


def test_ties_take_average_ranks():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): Pearson of the ranks is 4.5 / sqrt(4.5 * 5)
    result = rank_correlation(settings([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]), PHANTOM, REAL)
    assert result.rho == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_a_monotone_pair_gives_one_and_a_reversed_pair_minus_one():
    phantom = [28.0, 29.0, 30.5, 31.0, 33.0]
    real = [math.exp(x / 3) for x in phantom]  # monotone, far from linear
    rising = rank_correlation(settings(phantom, real), PHANTOM, REAL)
    assert rising.rho == pytest.approx(1.0) and rising.pearson_r < 0.999
    falling = rank_correlation(settings(phantom, [-x for x in real]), PHANTOM, REAL)
    assert falling.rho == pytest.approx(-1.0)


def test_settings_missing_either_column_are_left_out_and_counted():
    phantom = [30.0, None, 31.0, 29.0, 32.0, None]
    real = [18.0, 17.0, None, 16.5, 19.0, None]
    result = rank_correlation(settings(phantom, real), PHANTOM, REAL)
    assert (result.n, result.left_out) == (3, 3)
    assert result.rho == pytest.approx(stats.spearmanr([30.0, 29.0, 32.0], [18.0, 16.5, 19.0]).statistic)
    assert format_rank_correlation_line(result).endswith("; 3 settings left out (a column missing)")


def test_fewer_than_three_settings_or_a_constant_column_leave_rho_undefined():
    short = rank_correlation(settings([30.0, 31.0, None], [18.0, 19.0, 17.0]), PHANTOM, REAL)
    assert (short.n, short.left_out, short.rho, short.p_value, short.pearson_r) == (2, 1, None, None, None)
    assert short.undefined == "n = 2 < 3"
    assert "Spearman rho undefined (n = 2 < 3)" in format_rank_correlation_line(short)
    assert f"| {PHANTOM} vs {REAL} | 2 | undefined (n = 2 < 3) | - | - | 1 |" in format_rank_correlation_markdown(
        [short], "seed")
    flat = rank_correlation(settings([30.0, 31.0, 32.0], [18.0, 18.0, 18.0]), PHANTOM, REAL)
    assert flat.rho is None and flat.undefined == f"{REAL} has the same value in all 3 settings"


def test_a_wrong_column_name_is_an_error_naming_it_and_the_columns():
    with pytest.raises(ValueError, match="no metric column 'test psnr'; the columns are: 'val PSNR', 'test PSNR', "
                                         "'test SSIM', 'best_example_ct PSNR', 'best_example_ct SSIM', 'wall time'"):
        rank_correlation(settings([30.0, 31.0, 32.0], [18.0, 19.0, 17.0]), "test psnr", REAL)
    by_key = rank_correlation(settings([30.0, 31.0, 32.0], [18.0, 19.0, 17.0]), "test_psnr", REAL)
    assert by_key.n == 3  # the stat key of a column names it too


def test_command_writes_the_rank_correlation_to_the_report_and_the_json(tmp_path, capsys):
    # five settings, two seeds each; the last has no real-CT evaluation
    phantom = {"a": (30.0, 31.0), "b": (31.5, 31.5), "c": (29.0, 29.4), "d": (31.0, 32.0), "e": (33.0, 33.0)}
    real = {"a": (18.0, 18.4), "b": (18.9, 19.1), "c": (17.9, 18.1), "d": (18.6, 18.8)}
    for name, seeds in phantom.items():
        for seed, psnr in enumerate(seeds, 1):
            files = {"test_metrics.json": {"psnr": psnr, "ssim": 0.9}}
            if name in real:
                files["evaluation/best_example_ct/summary.json"] = {"metrics": {"psnr": {"mean": real[name][seed - 1]}}}
            write_run(tmp_path / "runs" / f"{name}_{seed}",
                      [{"step": 1, "epoch": 0, "split": "val", "time": 1.0, "psnr": psnr + 1, "ssim": 0.9}],
                      overrides=[f"setting={name}", f"seed={seed}"], json_files=files)
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "runs"), "--over", "seed", "--no-plot", "--out", str(out),
                 "--rank-correlation", PHANTOM, REAL, "--rank-correlation", "val PSNR", PHANTOM]) == 0

    phantom_means, real_means = [sum(phantom[n]) / 2 for n in real], [sum(real[n]) / 2 for n in real]
    expected = stats.spearmanr(phantom_means, real_means)
    written = json.loads((out / "comparison.json").read_text())
    assert written["code"] == code_version() and written["machine"]["torch"] == torch.__version__
    assert written["threads"] == torch.get_num_threads()
    record = json.loads((out / "comparison.json").read_text())["rank_correlation"]
    transfer, validation = record["pairs"]
    assert record["over"] == "seed"
    assert (transfer["column_a"], transfer["column_b"], transfer["n"], transfer["left_out"]) == (PHANTOM, REAL, 4, 1)
    assert transfer["rho"] == pytest.approx(expected.statistic) and transfer["rho"] == pytest.approx(0.9486833)
    assert transfer["p_value"] == pytest.approx(exact_p(phantom_means, real_means))
    assert transfer["pearson_r"] == pytest.approx(stats.pearsonr(phantom_means, real_means).statistic)
    assert (validation["n"], validation["left_out"], validation["rho"]) == (5, 0, pytest.approx(1.0))

    markdown = (out / "comparison.md").read_text()
    assert "## Rank correlation between columns" in markdown
    p_text = f"{transfer['p_value']:.3g}"  # b and d tie on the phantom
    assert f"| {PHANTOM} vs {REAL} | 4 | 0.949 | {p_text} | {transfer['pearson_r']:.3f} | 1 |" in markdown
    printed = capsys.readouterr().out
    assert "rank correlation over 5 settings (means over seed):" in printed
    assert f"{PHANTOM} vs {REAL}: Spearman rho 0.949 (p {p_text}, n 4)" in printed

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "runs"), "--over", "seed", "--no-plot", "--out", str(out),
              "--rank-correlation", PHANTOM, "real PSNR"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no metric column 'real PSNR'" in err and f"'{REAL}'" in err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "runs"), "--rank-correlation", PHANTOM, REAL])
    assert "--rank-correlation needs --over" in capsys.readouterr().err


def test_scanned_voxel_evaluations_get_their_own_columns_and_correlate(tmp_path):
    """evaluate.py's scanned-voxel means (a real CT) become columns of their own, usable here; runs scored
    without masks leave no empty column behind."""
    from x2ct.evaluation.comparison.aggregate import aggregate_columns, aggregate_runs
    from x2ct.evaluation.comparison.runs import read_runs

    runs = []
    for i, (psnr, real, scanned) in enumerate([(30.0, 18.0, 19.5), (31.0, 18.5, 20.5), (32.0, 19.0, 20.0)]):
        summary = {"metrics": {"psnr": {"mean": real}, "scanned_psnr": {"mean": scanned},
                               "scanned_ssim": {"mean": 0.5}}}
        runs.append(write_run(tmp_path / f"r{i}", [{"step": 1, "epoch": 0, "split": "val", "time": 1.0,
                                                    "psnr": psnr, "ssim": 0.9}],
                              overrides=[f"setting={i}", "seed=1"],
                              json_files={"test_metrics.json": {"psnr": psnr, "ssim": 0.9},
                                          "evaluation/best_example_ct/summary.json": summary}))
    rows = aggregate_runs(read_runs(runs), over="seed")
    result = rank_correlation(rows, PHANTOM, "best_example_ct scanned PSNR")
    assert result.n == 3 and result.rho == pytest.approx(0.5)
    assert rank_correlation(rows, PHANTOM, REAL).rho == pytest.approx(1.0)
    plain = write_run(tmp_path / "plain", [{"step": 1, "epoch": 0, "split": "val", "time": 1.0, "psnr": 1.0}],
                      overrides=["setting=p", "seed=1"],
                      json_files={"evaluation/best_example_ct/summary.json": {"metrics": {"psnr": {"mean": 1.0}}}})
    titles = [title for _, title, _ in aggregate_columns(aggregate_runs(read_runs([plain]), over="seed"))]
    assert "best_example_ct PSNR" in titles and not any("scanned" in t for t in titles)
