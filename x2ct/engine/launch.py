"""What must happen before Hydra starts, so that every torchrun rank agrees on one run folder.

Under torchrun every rank runs ``@hydra.main`` itself; a folder named by ``${now:...}`` then differs from rank to
rank (https://github.com/facebookresearch/hydra/issues/2070,
https://github.com/ashleve/lightning-hydra-template/issues/393). Here rank 0 picks the timestamp, the process group
(needed for DDP anyway) broadcasts it, and the ``x2ct.run_stamp`` resolver reads it on every rank. Ranks other
than 0 also tell Hydra not to write its own files and logs, so only rank 0 writes ``.hydra/`` and the log.

The run folder itself comes from the ``x2ct.run_dir`` resolver: ``<output_dir>/runs/<run_name>``, or the folder of
the run being resumed, so a resumed (or requeued) job lands where it left off
(https://github.com/facebookresearch/hydra/issues/1822).

``OutputFolderCheck``, a Hydra callback (``conf/hydra/default.yaml``, ``conf/prepare.yaml``), checks that folder before
Hydra creates it and, for training, takes its lock (``x2ct.folder_lock``) before Hydra writes into it: a second
process started with the same ``run_name`` is refused before it writes anything.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# the config's resolvers (``${x2ct.run_stamp:}``, ``${x2ct.run_dir:...}``) live with the config files; the launch
# sets the stamp they read
from x2ct.config_files import RUN_STAMP_ENV, STAMP_FORMAT, register_resolvers
from x2ct.folder_lock import FolderInUseError
from x2ct.os_errors import check_writable_dir, report_error, report_os_error

MULTIRUN_FLAGS = ("-m", "--multirun")


def prepare_launch(argv: list[str], environ: os._Environ | dict = os.environ) -> list[str]:
    """Call before ``@hydra.main``; returns the argv Hydra should see.

    Single process: fixes the run stamp. Under torchrun (``WORLD_SIZE > 1``): refuses ``-m`` (a sweep must not
    run inside torchrun; https://github.com/facebookresearch/hydra/issues/2231), initialises the process group,
    broadcasts rank 0's stamp, and keeps Hydra's file output to rank 0.
    """
    from x2ct.engine.config_schema import check_overrides

    try:  # a key whose switch is said elsewhere, named before Hydra answers only that it is not in the config
        check_overrides([arg for arg in argv[1:] if not arg.startswith("-")])
    except ValueError as err:
        raise SystemExit(f"train.py: error: {err}") from None
    register_resolvers()
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        environ.setdefault(RUN_STAMP_ENV, datetime.now().strftime(STAMP_FORMAT))
        return argv
    if any(flag in argv for flag in MULTIRUN_FLAGS):
        raise SystemExit("train.py: a multirun (-m) cannot run inside torchrun: run the sweep with plain python "
                         "and let each job start its own DDP job (e.g. hydra/launcher=slurm), see docs/training.md")
    from x2ct.engine.distributed import broadcast_object, init_distributed

    info = init_distributed()
    stamp = broadcast_object(datetime.now().strftime(STAMP_FORMAT) if info.rank == 0 else None, src=0)
    environ[RUN_STAMP_ENV] = stamp
    if info.rank != 0:
        argv = [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    return argv


def own_folder(folder: str | os.PathLike, what: str, prog: str) -> None:
    """Hold ``folder``'s lock for this process (under torchrun rank 0 holds it and every rank learns the outcome);
    refused: one line naming the owner, printed once, and every rank exits 1."""
    from x2ct.engine.distributed import hold_folder_on_main, is_dist_ready

    try:
        hold_folder_on_main(folder, what)
    except FolderInUseError as err:
        if not is_dist_ready() or int(os.environ.get("RANK", "0")) == 0:
            report_error(prog, str(err))
        raise SystemExit(1) from None


class OutputFolderCheck(Callback):
    """Check that Hydra's run (or sweep) folder can be created and written before Hydra does so itself.

    Hydra makes the folder and writes ``.hydra/`` and its log before the task starts, so an output path under a
    file, a read-only folder or a full disk would end in Hydra's traceback; this says it in one line naming the
    folder and exits 1. Under torchrun rank 0 checks and tells the others (whose Hydra would fail the same way),
    so the line is printed once and every rank exits non-zero.
    """

    def __init__(self, prog: str, lock: bool = False) -> None:
        self.prog = prog
        self.lock = lock

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")

    def _check(self, config: DictConfig, mode: str) -> None:
        import torch.distributed as dist

        from x2ct.engine.distributed import broadcast_object, is_dist_ready

        shared = is_dist_ready()  # torchrun: prepare_launch started the group; otherwise each process checks
        failed = False
        if not shared or dist.get_rank() == 0:
            try:
                check_writable_dir(config.hydra[mode].dir)
            except OSError as err:
                report_os_error(self.prog, err)
                failed = True
            except Exception:  # a folder that does not resolve: Hydra reports it when it makes the folder
                pass  # (but the broadcast below must happen, or the other ranks wait for it)
        if shared:
            failed = broadcast_object(failed, src=0)
        if failed:
            raise SystemExit(1)
        if self.lock:
            own_folder(config.hydra[mode].dir, f"{mode} folder", self.prog)
