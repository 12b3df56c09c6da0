"""Provenance: the commit and machine recorded beside runs and comparisons."""

from __future__ import annotations

import json
import subprocess

from x2ct.provenance import REPO, code_version, machine


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
