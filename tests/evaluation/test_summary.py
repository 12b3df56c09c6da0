import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from x2ct.evaluation.summary import SUMMARY_FIELDS, summarise, write_rows_csv, write_summary

PSNR = [27.1, 25.3, 29.8, 26.4, 28.0, 24.9, 30.2]
SSIM = [0.81, 0.77, 0.86, 0.79, 0.83, 0.75, 0.88]


def patient_rows():
    rows = [{"patient_id": f"P{i:03d}", "psnr": p, "ssim": s} for i, (p, s) in enumerate(zip(PSNR, SSIM, strict=True))]
    for i, row in enumerate(rows):
        row["psnr_lung"] = math.nan if i in (1, 4) else PSNR[i] - 2.0  # empty lung masks give NaN
    return rows


def test_statistics_match_numpy_and_scipy():
    summary = summarise(patient_rows())
    assert list(summary) == ["psnr", "ssim", "psnr_lung"]  # patient_id ignored, order of first appearance
    for key, values in [("psnr", PSNR), ("ssim", SSIM)]:
        s, v = summary[key], np.array(values)
        assert list(s) == list(SUMMARY_FIELDS)
        assert s["n"] == 7 and s["n_missing"] == 0
        assert s["mean"] == pytest.approx(v.mean(), abs=1e-12)
        assert s["std"] == pytest.approx(v.std(ddof=1), abs=1e-12)
        assert s["median"] == pytest.approx(np.median(v), abs=1e-12)
        assert (s["min"], s["max"]) == (v.min(), v.max())
        assert s["ci95_low"] == pytest.approx(np.percentile(v, 2.5), abs=1e-12)
        assert s["ci95_high"] == pytest.approx(np.percentile(v, 97.5), abs=1e-12)
        low, high = stats.t.interval(0.95, df=6, loc=v.mean(), scale=stats.sem(v))
        assert s["mean_ci95_low"] == pytest.approx(low, abs=1e-12)
        assert s["mean_ci95_high"] == pytest.approx(high, abs=1e-12)
    # t_{0.975, 6} = 2.4469: a hand check of the interval width independent of scipy.stats.t.interval
    s = summary["psnr"]
    assert (s["mean_ci95_high"] - s["mean"]) == pytest.approx(2.446912 * np.std(PSNR, ddof=1) / math.sqrt(7), rel=1e-6)


def test_nan_values_are_skipped_and_counted():
    lung = summarise(patient_rows())["psnr_lung"]
    kept = np.array([PSNR[i] - 2.0 for i in range(7) if i not in (1, 4)])
    assert lung["n"] == 5 and lung["n_missing"] == 2
    assert lung["mean"] == pytest.approx(kept.mean(), abs=1e-12)
    assert lung["std"] == pytest.approx(kept.std(ddof=1), abs=1e-12)
    # None and an absent key count as missing too
    rows = [{"a": 1.0}, {"a": None}, {"b": 2.0}, {"a": 3.0}]
    a = summarise(rows)["a"]
    assert (a["n"], a["n_missing"], a["mean"]) == (2, 2, 2.0)


def test_one_value_and_no_values():
    one = summarise([{"x": 3.5}, {"x": math.nan}])["x"]
    assert (one["n"], one["mean"], one["std"], one["median"], one["ci95_low"], one["ci95_high"]) == \
        (1, 3.5, 0.0, 3.5, 3.5, 3.5)
    assert math.isnan(one["mean_ci95_low"]) and math.isnan(one["mean_ci95_high"])
    none = summarise([{"x": math.nan}, {"x": math.nan}])["x"]
    assert none["n"] == 0 and none["n_missing"] == 2
    assert all(math.isnan(none[f]) for f in SUMMARY_FIELDS[2:])


def test_numpy_and_tensor_numbers_count_and_bools_do_not():
    rows = [{"x": np.float32(1.0), "y": torch.tensor(2.0), "flag": True},
            {"x": np.int64(3), "y": torch.tensor(4.0, dtype=torch.float64), "flag": False}]
    summary = summarise(rows)
    assert list(summary) == ["x", "y"]
    assert summary["x"]["mean"] == 2.0 and summary["y"]["mean"] == 3.0
    assert isinstance(summary["x"]["mean"], float) and isinstance(summary["x"]["n"], int)


def test_keys_select_metrics_and_bad_columns_are_named():
    assert list(summarise(patient_rows(), keys=["ssim", "psnr"])) == ["ssim", "psnr"]
    with pytest.raises(KeyError, match=r"metric 'lpips' is in none of the 7 rows"):
        summarise(patient_rows(), keys=["lpips"])
    with pytest.raises(ValueError, match=r"metric 'patient_id' in row 0 is 'P000', not a number"):
        summarise(patient_rows(), keys=["patient_id"])
    with pytest.raises(ValueError, match=r"metric 'psnr' in row 1 is 'n/a', not a number"):
        summarise([{"psnr": 27.0}, {"psnr": "n/a"}])
    with pytest.raises(TypeError, match=r"row 1 is a list"):
        summarise([{"psnr": 27.0}, [27.0]])


def test_rows_csv_round_trip(tmp_path):
    rows = patient_rows()
    rows[2]["note"] = "blurred, re-run"  # a late column with a comma: quoted, empty in the other rows
    rows[3]["psnr"] = 1 / 3  # needs all 17 digits to round-trip
    path = write_rows_csv(rows, tmp_path / "per_patient.csv")
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["patient_id", "psnr", "ssim", "psnr_lung", "note"]
    assert len(read) == 7
    for original, back in zip(rows, read, strict=True):
        assert back["patient_id"] == original["patient_id"]
        assert float(back["psnr"]) == original["psnr"]  # exact: repr round-trips
        assert float(back["ssim"]) == original["ssim"]
        assert math.isnan(float(back["psnr_lung"])) == math.isnan(original["psnr_lung"])
        assert back["note"] == original.get("note", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_patient.csv"]  # no temporary files left


def test_summary_json_and_csv_round_trip(tmp_path):
    summary = summarise([*patient_rows(), {"patient_id": "P007", "psnr": np.float64(26.0), "ssim": 0.8}])
    json_path, csv_path = write_summary(summary, tmp_path / "summary.json", tmp_path / "summary.csv")
    assert json.loads(json_path.read_text()) == summary
    with open(csv_path, newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["metric", *SUMMARY_FIELDS]
    assert [r["metric"] for r in read] == list(summary)
    for r in read:
        for field in SUMMARY_FIELDS:
            assert float(r[field]) == summary[r["metric"]][field]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_files(tmp_path):
    path = write_rows_csv(patient_rows(), tmp_path / "per_patient.csv")
    before = path.read_text()

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot format")

    with pytest.raises(RuntimeError, match="cannot format"):
        write_rows_csv([{"patient_id": "P0", "psnr": 1.0}, {"patient_id": Unprintable()}], path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_patient.csv"]


def test_nan_statistics_survive_the_files(tmp_path):
    summary = summarise([{"x": 3.5}])  # one value: the confidence interval of the mean is NaN
    json_path, csv_path = write_summary(summary, tmp_path / "s.json", tmp_path / "s.csv")
    back = json.loads(json_path.read_text())["x"]
    assert math.isnan(back["mean_ci95_low"]) and back["mean"] == 3.5 and back["n"] == 1
    with open(csv_path, newline="") as f:
        row = next(csv.DictReader(f))
    assert row["mean_ci95_high"] == "nan" and row["n"] == "1"
