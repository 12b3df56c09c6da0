"""x2ct/engine/distributed.py: single-process fallbacks, torchrun env parsing, and a real 2-process gloo group."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from x2ct.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    dist_info_from_env,
    init_distributed,
    is_dist_ready,
    unwrap_model,
)
from x2ct.engine.seeding import capture_rng_state, gather_rng_states, seed_everything

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_without_torchrun_env(no_torchrun_env):
    info = init_distributed()
    assert info == DistInfo(rank=0, local_rank=0, world_size=1)
    assert info.is_main and not info.is_distributed
    assert not is_dist_ready()  # world size 1 starts no process group
    barrier()
    cleanup_distributed()


def test_world_size_one_from_env_starts_no_group(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed() == DistInfo(0, 0, 1)
    assert not is_dist_ready()


def test_env_parsing_errors_name_the_variable(no_torchrun_env, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="WORLD_SIZE missing"):
        dist_info_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        dist_info_from_env()
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="inconsistent"):
        dist_info_from_env()  # rank 1 of a world of 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_info_from_env()
    assert (info.rank, info.local_rank, info.world_size, info.is_main) == (1, 1, 4, False)


def test_collectives_in_single_process_return_own_values():
    x = torch.tensor([1.0, 3.0], requires_grad=True)
    mean = all_reduce_mean(x)
    assert torch.equal(mean, x.detach()) and not mean.requires_grad
    mean += 1  # a copy: the caller's tensor is untouched
    assert torch.equal(x.detach(), torch.tensor([1.0, 3.0]))
    assert all_reduce_mean(torch.tensor(3)).dtype == torch.get_default_dtype()
    obj = {"run_dir": "/tmp/x"}
    assert broadcast_object(obj) is obj


def test_unwrap_model_strips_dataparallel_and_compile_wrappers():
    net = nn.Linear(2, 3)
    compiled = torch.compile(net)  # wrapping only; nothing is compiled until it is called
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert unwrap_model(compiled) is net
    assert unwrap_model(nn.DataParallel(compiled)) is net
    assert unwrap_model(torch.compile(nn.DataParallel(net))) is net
    assert unwrap_model(net) is net
    assert list(unwrap_model(compiled).state_dict()) == ["weight", "bias"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import os

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    info = init_distributed()  # no CUDA here: gloo
    try:
        assert info == DistInfo(rank, rank, world_size) and is_dist_ready()
        assert torch.distributed.get_backend() == "gloo"
        assert init_distributed() == info  # idempotent once the group is up
        mean = all_reduce_mean(torch.tensor([float(rank), 10.0 * rank]))
        got = broadcast_object({"run_dir": f"dir-of-rank-{rank}"} if rank == 0 else None)
        from_rank_1 = broadcast_object(f"rank-{rank}", src=1)
        net = nn.Linear(2, 1)
        ddp = nn.parallel.DistributedDataParallel(net)
        unwrapped = unwrap_model(torch.compile(ddp)) is net and unwrap_model(ddp) is net
        seed_everything(5, rank=rank)
        rng_states = gather_rng_states()  # every rank's own stream, indexed by rank
        barrier()
        torch.save({"mean": mean, "got": got, "from_rank_1": from_rank_1, "unwrapped": unwrapped,
                    "rng_states": rng_states, "own_rng": capture_rng_state()},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()
    assert not is_dist_ready()


@pytest.mark.slow
def test_two_process_gloo_collectives(tmp_path):
    world_size = 2
    mp.spawn(_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, join=True)
    for rank in range(world_size):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.allclose(result["mean"], torch.tensor([0.5, 5.0]))  # mean of [0, 0] and [1, 10]
        assert result["got"] == {"run_dir": "dir-of-rank-0"}
        assert result["from_rank_1"] == "rank-1"
        assert result["unwrapped"] is True
        assert len(result["rng_states"]) == world_size
        assert torch.equal(result["rng_states"][rank]["torch"], result["own_rng"]["torch"])
    assert not torch.equal(result["rng_states"][0]["torch"], result["rng_states"][1]["torch"])


def test_slurm_env_is_ignored_for_single_task_jobs_and_under_torchrun(monkeypatch):
    from x2ct.engine.distributed import export_slurm_env

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert export_slurm_env() is False  # one task: a plain single process
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert export_slurm_env() is False  # torchrun's variables win


def test_slurm_tasks_keep_every_gpu_visible(monkeypatch):
    """Local rank 1 of a 4-GPU SLURM task: submitit's export would narrow CUDA_VISIBLE_DEVICES to one GPU, and
    init_distributed would then refuse LOCAL_RANK=1; x2ct picks its GPU with LOCAL_RANK and keeps all visible."""
    pytest.importorskip("submitit")
    from x2ct.engine.distributed import export_slurm_env

    # submitit writes RANK, WORLD_SIZE, MASTER_* straight into os.environ: give it a copy, so that nothing leaks
    # into later tests (a stray WORLD_SIZE=4 makes the next train() wait for 3 more ranks)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS})
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "4", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node0",
             "SLURM_STEP_NODELIST": "node0", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert export_slurm_env() is True
    assert (os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == ("1", "1", "4")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
