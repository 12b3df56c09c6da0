"""Process-group setup and the few collectives the trainer needs, safe to call in a single process.

Under ``torchrun`` every process gets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment;
``init_distributed`` reads them and joins the process group. Without them (``python train.py``, a notebook, a
test) everything here degrades to the single-process answer, so the trainer never branches on "am I
distributed?" except to decide who writes files (``DistInfo.is_main``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.constants import default_pg_timeout

from x2ct.folder_lock import FolderInUseError, FolderLock, hold_folder

_ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank``, ``local_rank`` (GPU index on its node), ``world_size``."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs, W&B and Hydra files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def export_slurm_env() -> bool:
    """Inside a multi-task SLURM job (e.g. hydra-submitit-launcher with ``tasks_per_node`` = GPUs), or a multi-task
    job of submitit's local executor (``hydra/launcher=submitit_local``: the same path on one machine), and without
    torchrun's variables, export ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` from the job's
    through submitit (which started the tasks). Returns whether it did."""
    torchrun = any(os.environ.get(k) for k in _ENV_KEYS)
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        multi_task = _env_int("SUBMITIT_LOCAL_NTASKS", 1) > 1
    else:
        multi_task = _env_int("SLURM_NTASKS", 1) > 1 and "SLURM_PROCID" in os.environ
    if torchrun or not multi_task:
        return False
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError as err:
        raise RuntimeError("a multi-task SLURM job needs submitit (pip install hydra-submitit-launcher) to set up "
                           "the process group, or start it with torchrun") from err
    # keep every GPU visible: x2ct picks its own with LOCAL_RANK (submitit's default narrows CUDA_VISIBLE_DEVICES to
    # one GPU, and LOCAL_RANK 1 of 4 would then name a device that is not there)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def dist_info_from_env() -> DistInfo:
    """Read torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (or a SLURM job's, via ``export_slurm_env``);
    absent variables mean a single process."""
    export_slurm_env()
    present = [k for k in _ENV_KEYS if os.environ.get(k)]
    if present and "WORLD_SIZE" not in present:
        raise ValueError(f"{present} set but WORLD_SIZE missing; launch with torchrun or set all of {_ENV_KEYS}")
    info = DistInfo(rank=_env_int("RANK", 0), local_rank=_env_int("LOCAL_RANK", 0),
                    world_size=_env_int("WORLD_SIZE", 1))
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: {info}")
    return info


def is_dist_ready() -> bool:
    """True when a process group is up (collectives must be called on every rank)."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment; a no-op for a single process.

    Args:
        backend: ``"nccl"``, ``"gloo"``, ...; default ``nccl`` when CUDA is available, else ``gloo``.

    With CUDA, the current device is set to ``LOCAL_RANK`` before the group starts, so later ``.cuda()`` calls
    and NCCL collectives use this process's own GPU. Calling it again once the group is up returns the same
    ``DistInfo``.
    """
    if is_dist_ready():
        return DistInfo(rank=dist.get_rank(), local_rank=_env_int("LOCAL_RANK", 0), world_size=dist.get_world_size())
    info = dist_info_from_env()
    if not info.is_distributed:
        return info
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    device_id = None
    if cuda:
        if info.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} CUDA devices "
                               "are visible; use torchrun --nproc_per_node <= the GPU count")
        torch.cuda.set_device(info.local_rank)
        if backend == "nccl":
            device_id = torch.device("cuda", info.local_rank)  # binds the group to this GPU (no barrier guesswork)
    dist.init_process_group(backend=backend, store=_attempt_store(), rank=info.rank, world_size=info.world_size,
                            device_id=device_id)
    return info


def _attempt_store() -> dist.Store | None:
    """Under torchrun, the agent's key-value store seen through a prefix of its own per restart attempt.

    torchrun (``--max-restarts``) gives a restarted group the store of the attempt before, keys and all; gloo then
    reads the dead attempt's addresses and the new group fails to connect ("Connection refused"). Reproduced with
    torch 2.13 on 2 CPU ranks once the first attempt had used the store beyond ``init_process_group``; the same
    symptom is reported for NCCL in https://github.com/pytorch/pytorch/issues/167288. Outside torchrun (no agent
    store): None, torch's ``env://`` as usual.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]), is_master=False, timeout=default_pg_timeout)
    return dist.PrefixStore(f"x2ct/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def cleanup_distributed() -> None:
    """Leave the process group if one is up (call in a ``finally`` so a crash does not hang the other ranks)."""
    if is_dist_ready():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; no-op in a single process."""
    if is_dist_ready():
        dist.barrier()


def run_on_main_then_wait(fn: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Rank 0 runs ``fn`` (e.g. building a data set) while the other ranks wait for it up to ``timeout_s``.

    The wait is a broadcast in a gloo group of its own, created with that timeout: a plain ``barrier`` would time
    out with the default group's (NCCL's watchdog: 10 min) while rank 0 is still working. Rank 0's exception is
    raised there; the other ranks raise a ``RuntimeError`` naming ``what`` and rank 0's error. In a single process
    it just runs ``fn``.
    """
    if not is_dist_ready():
        fn()
        return
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    try:
        error: BaseException | None = None
        if dist.get_rank() == 0:
            try:
                fn()
            except BaseException as err:  # told to the other ranks, then re-raised here
                error = err
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0, group=group)
        if error is not None:
            raise error
        if box[0] is not None:
            raise RuntimeError(f"rank 0 failed while {what}: {box[0]}")
    finally:
        dist.destroy_process_group(group)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks, as a new detached tensor (the input is left unchanged).

    Every rank must call it with the same shape. With NCCL the tensor must live on this rank's GPU. Integer
    tensors come back as floating point. In a single process it returns a detached copy.
    """
    reduced = tensor.detach().clone()
    if not is_dist_ready():
        return reduced if reduced.is_floating_point() else reduced.to(torch.get_default_dtype())
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (pickled; for small things such as a run folder or run id).

    Other ranks' ``obj`` arguments are ignored. In a single process it returns ``obj``.
    """
    if not is_dist_ready():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def hold_folder_on_main(folder: str | os.PathLike, what: str) -> FolderLock | None:
    """Rank 0 (or the single process) takes ``folder``'s lock; every rank learns the outcome.

    Returns rank 0's lock (None on the other ranks). Raises ``FolderInUseError`` with the owner named on every
    rank when another process holds it, so that all ranks stop together instead of waiting at a barrier.
    """
    lock, refusal = None, None
    if not is_dist_ready() or dist.get_rank() == 0:
        try:
            lock = hold_folder(folder, what)
        except FolderInUseError as err:
            refusal = str(err)
    refusal = broadcast_object(refusal, src=0)
    if refusal is not None:
        raise FolderInUseError(refusal)
    return lock


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank, on every rank (pickled; for small things such as metric
    rows). In a single process it returns ``[obj]``."""
    if not is_dist_ready():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers.

    Its ``state_dict`` keys carry no ``module.`` / ``_orig_mod.`` prefixes, so checkpoints load into a bare
    model whatever wrapped the one that was trained.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
