"""Provenance: the commit, machine, threads and sharing recorded beside runs, benchmarks and comparisons, and
every committed result file holding that record."""

from __future__ import annotations

import json
import subprocess

import pytest

from x2ct.provenance import (
    NOTE_KEY,
    RECORD_KEYS,
    REPO,
    SHARED_ENV,
    code_version,
    describe,
    machine,
    record,
    shared_machine,
)


def test_code_version_is_this_checkouts_commit_and_none_outside_git(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        version = code_version()
        assert version["commit"] == head.stdout.strip() and isinstance(version["dirty"], bool)
    assert code_version(tmp_path) == {"commit": None, "dirty": None}


def test_machine_names_the_cpu_and_versions():
    import torch

    info = machine()
    assert info["torch"] == torch.__version__ and info["cpu_count"] >= 1 and info["python"]
    json.dumps(info)


def test_a_trained_run_records_its_commit_and_machine(tiny_run):
    info = json.loads((tiny_run / "run_info.json").read_text())
    assert info["code"] == code_version() and info["machine"]["torch"] == machine()["torch"]


def test_the_shared_flag_is_the_callers_statement_and_a_bad_value_names_the_variable():
    assert shared_machine({SHARED_ENV: "1"}) is True and shared_machine({SHARED_ENV: " Yes "}) is True
    assert shared_machine({SHARED_ENV: "0"}) is False and shared_machine({SHARED_ENV: "false"}) is False
    assert shared_machine({}) is None and shared_machine({SHARED_ENV: ""}) is None
    with pytest.raises(ValueError, match=f"{SHARED_ENV}='maybe': expected 1 or 0"):
        shared_machine({SHARED_ENV: "maybe"})


def test_a_record_holds_the_commit_machine_threads_and_sharing():
    import torch

    stated = record(environ={SHARED_ENV: "0"})
    assert set(stated) == set(RECORD_KEYS)
    assert stated["code"] == code_version() and stated["machine"]["torch"] == torch.__version__
    assert stated["threads"] == torch.get_num_threads() and stated["shared"] is False
    unstated = record(threads=1, environ={})
    assert unstated["threads"] == 1 and unstated["shared"] is None and SHARED_ENV in unstated[NOTE_KEY]
    assert record(shared=True, environ={SHARED_ENV: "0"})["shared"] is True  # an explicit statement wins
    json.dumps(stated)


def test_describe_names_every_field_of_a_record():
    line = describe({"code": {"commit": "0123456789abcdef", "dirty": True},
                     "machine": {"cpu_model": "AMD EPYC", "cpu_count": 2, "cpus_usable": 1, "torch": "2.13.0+cpu",
                                 "gpu": None}, "threads": 1, "shared": True})
    assert line == ("commit 0123456789 (dirty); AMD EPYC, 2 CPUs (1 usable), torch 2.13.0+cpu, 1 thread(s); "
                    "machine shared with other work")
    assert describe({"code": {"commit": None}, "machine": {}, "threads": None, "shared": None}).startswith(
        "commit unknown; machine unknown, ? CPUs (? usable), torch ?, ? thread(s); machine shared: not stated")


# result files written before the record existed: their unknown fields are null, with a provenance_note saying why
WRITTEN_BEFORE_THE_RECORD = {
    "ablation_components_cpu.json", "ablation_loss_cpu.json", "drr_cpu.json", "drr_cuda_quick_h200.json",
    "full_resolution_cpu.json", "gpu_check_nvidia_h200.json", "gpu_check_nvidia_h200_compile.json",
    "gpu_check_nvidia_h200_drr_peers.json", "memory_cpu.json", "memory_cpu_c2rv_whole_grid_lift_7f51f14.json",
    "memory_cpu_m1_128_ckpt.json", "milestones_cpu.json", "models_cpu.json", "models_cpu_m1_full.json",
    "models_cpu_multires.json", "projection_loss_cpu.json", "realism_benchmark_v2_cpu.json", "train_step_cpu.json",
    "transfer_benchmark_seed1_cpu.json", "transfer_benchmark_v2_64_cpu.json", "transfer_benchmark_v2_cpu.json",
    "transfer_benchmark_v2_pa_cpu.json", "views_cpu.json",
}
RESULT_FILES = sorted((REPO / "benchmarks" / "results").glob("*.json"))


def provenance_fields(result: dict) -> dict:
    """The fields a result file must state: commit, CPU model, CPU count, torch, threads, shared."""
    host = result["machine"]
    return {"commit": result["code"]["commit"], "cpu_model": host["cpu_model"], "cpu_count": host["cpu_count"],
            "torch": host["torch"], "threads": result["threads"], "shared": result["shared"]}


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.name for p in RESULT_FILES])
def test_every_result_file_records_its_provenance(path):
    result = json.loads(path.read_text())
    assert set(RECORD_KEYS) <= set(result), f"{path.name} lacks {set(RECORD_KEYS) - set(result)}"
    assert {"cpu_model", "cpu_count", "cpus_usable", "torch", "gpu"} <= set(result["machine"])
    fields = provenance_fields(result)
    unknown = sorted(k for k, v in fields.items() if v is None)
    if path.name not in WRITTEN_BEFORE_THE_RECORD:
        assert not unknown, f"{path.name}: {unknown} not recorded (set {SHARED_ENV} when measuring)"
    elif unknown:
        assert len(result.get(NOTE_KEY) or "") > 40, f"{path.name}: {unknown} unknown without a provenance_note"
    commit = fields["commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert fields["threads"] is None or fields["threads"] >= 1
    assert fields["shared"] in (None, True, False) and (fields["cpu_count"] is None or fields["cpu_count"] >= 1)


def test_the_files_written_before_the_record_are_all_still_there():
    """A regenerated file leaves the list: the list names only files that exist."""
    assert WRITTEN_BEFORE_THE_RECORD <= {p.name for p in RESULT_FILES}
