"""run_info.json: one record per run, continued across resumed sessions."""

from __future__ import annotations

import time

import pytest

from x2ct.engine.run_info import RunInfo, read_run_info


def test_a_session_is_running_then_finished_with_its_wall_time(tmp_path):
    info = RunInfo(tmp_path, model="m", parameters=3)
    assert read_run_info(tmp_path)["status"] == "running" and read_run_info(tmp_path)["finished"] is None
    time.sleep(0.05)
    record = info.close("finished")
    assert record == read_run_info(tmp_path)
    assert record["status"] == "finished" and record["parameters"] == 3 and record["sessions"] == 1
    assert 0.05 <= record["wall_time_s"] <= record["finished"] - record["started"] + 1e-6


def test_a_resumed_run_keeps_its_start_and_adds_the_sessions_time(tmp_path):
    first = RunInfo(tmp_path, model="m").close("failed")
    time.sleep(0.1)  # the pause between sessions is not training time
    second = RunInfo(tmp_path, model="m")
    assert read_run_info(tmp_path)["status"] == "running"
    record = second.close("finished")
    assert record["started"] == first["started"] and record["sessions"] == 2
    assert first["wall_time_s"] < record["wall_time_s"] < record["finished"] - record["started"] - 0.1


def test_runs_without_a_record_read_as_empty_and_a_corrupt_one_is_named(tmp_path):
    assert read_run_info(tmp_path) == {}
    (tmp_path / "run_info.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run_info\.json: unreadable"):
        read_run_info(tmp_path)
