"""The cluster launch paths, run for real on one machine: ``torchrun --nnodes=2`` as two agents meeting at a c10d
rendezvous on 127.0.0.1 (one rank each), and a sweep through hydra-submitit-launcher's local executor (real
submitit, each job its own process). See docs/training.md, "Clusters"."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.engine.test_launch import launch
from tests.engine.test_train import tiny_train_overrides
from x2ct.engine.launch import RUN_STAMP_ENV
from x2ct.engine.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[2]
# one epoch of one batch, no test pass: what these tests check is where things are written, not training
SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "test_after_training=false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(args: list[str], cwd: Path, log: Path, **env_extra: str) -> subprocess.Popen:
    """One torchrun agent ("node"); its output goes to ``log`` (a pipe could fill up and stall the rendezvous)."""
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    env.pop(RUN_STAMP_ENV, None)
    env.update(env_extra)
    with open(log, "w") as out:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def wait_nodes(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    try:
        return [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("named", [True, False], ids=["run_name", "default_stamp"])
def test_torchrun_two_nodes_on_localhost_write_one_run(tiny_dataset, tmp_path, named):
    """Two torchrun agents, one rank each, as on two machines: one run folder, written by rank 0 only.

    Without ``run_name`` the folder is rank 0's timestamp, broadcast to every rank before Hydra starts; each node
    here starts with a different stale ``X2CT_RUN_STAMP``, so nodes that did not take rank 0's stamp would write
    two folders.
    """
    out = tmp_path / "out"
    port = free_port()
    overrides = tiny_train_overrides(tiny_dataset, out, "logger=wandb", *SHORT,
                                     *(["run_name=two_nodes"] if named else []))
    procs, logs = [], []
    for node in range(2):
        args = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=x2ct-two-nodes",
                "--rdzv_conf=join_timeout=60", str(REPO / "train.py"), *overrides]
        logs.append(tmp_path / f"node{node}.log")
        stale = {} if named else {RUN_STAMP_ENV: f"stale-stamp-of-node{node}"}
        procs.append(start_node(args, tmp_path, logs[-1], **stale))
    codes = wait_nodes(procs, timeout=240)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in texts)

    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs  # one folder for both nodes
    run = runs[0]
    if named:
        assert run.name == "two_nodes"
    else:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run.name), run.name
    assert sum("run folder:" in text for text in texts) == 1  # one node hosts rank 0, which alone reports
    # Hydra's files written once, by rank 0 (the other rank runs with hydra.output_subdir=null)
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "hydra.output_subdir=null" not in (run / ".hydra" / "hydra.yaml").read_text()
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # W&B from rank 0 only
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "epoch_0001.pt", "last.pt"]
    assert json.loads((run / "run_info.json").read_text())["world_size"] == 2
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["run_name"] == run.name
    # metrics.jsonl from rank 0 only: every line whole, no (step, split) record twice
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert {r["split"] for r in records} == {"val_mean_volume", "train", "val"}


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_in_its_own_process_folder_and_wandb_run(tiny_dataset, tmp_path):
    """``-m hydra/launcher=submitit_local``: the SLURM launcher's code path, with local processes for jobs."""
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "loss.weights.l1=1.0,0.5",
            *tiny_train_overrides(tiny_dataset, out, "logger=wandb", *SHORT)]
    result = launch(args, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr  # not Hydra's in-process launcher

    sweeps = list((out / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    # each job ran as its own submitit job (its own process and log), and trained into its own folder
    job_logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len(job_logs) == 2, job_logs
    assert len({log.parent.name for log in job_logs}) == 2  # two submitit job ids
    for job in jobs:
        assert sum(f"run folder: {job}\n" in log.read_text() for log in job_logs) == 1, job
        assert (job / "checkpoints" / "last.pt").exists()
        assert json.loads((job / "run_info.json").read_text())["status"] == "finished"
    wandb_runs = [list((job / "wandb").glob("offline-run-*")) for job in jobs]
    assert [len(r) for r in wandb_runs] == [1, 1], wandb_runs
    assert wandb_runs[0][0].name.rsplit("-", 1)[1] != wandb_runs[1][0].name.rsplit("-", 1)[1]  # two W&B run ids
    # the jobs' configs differ as swept, and only there
    configs = [OmegaConf.load(job / ".hydra" / "config.yaml") for job in jobs]
    assert [c.loss.weights.l1 for c in configs] == [1.0, 0.5]
    configs[1].loss.weights.l1 = 1.0
    assert OmegaConf.to_container(configs[0]) == OmegaConf.to_container(configs[1])
    assert "loss.weights.l1=0.5" in (jobs[1] / ".hydra" / "overrides.yaml").read_text()
    weights = [torch.load(j / "checkpoints" / "last.pt", weights_only=True)["config"]["loss"]["weights"]["l1"]
               for j in jobs]
    assert weights == [1.0, 0.5]


@pytest.mark.slow
def test_submitit_local_job_with_two_tasks_is_one_ddp_run(tiny_dataset, tmp_path):
    """``tasks_per_node=2`` on the local executor: the two tasks form one 2-rank DDP job (ranks, world size and
    rendezvous from submitit, as on SLURM), training into one folder with one W&B run."""
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5", "hydra.launcher.tasks_per_node=2", "loss.weights.l1=1.0",
            *tiny_train_overrides(tiny_dataset, out, "logger=wandb", *SHORT)]
    result = launch(args, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job = next(p for p in next((out / "multiruns").iterdir()).iterdir() if p.name == "0")
    info = json.loads((job / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["sessions"] == 1 and info["status"] == "finished"
    assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    records = [(r["step"], r["split"]) for r in read_metrics(job / "metrics.jsonl")]
    assert len(records) == len(set(records))  # rank 0 alone logs
