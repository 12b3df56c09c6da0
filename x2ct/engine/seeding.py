"""Seeds, deterministic mode, and RNG state capture/restore for exact resume.

``capture_rng_state`` returns only tensors, ints, floats, strings, lists and dicts, so a checkpoint holding it
loads with ``torch.load(weights_only=True)``. It covers Python's ``random``, NumPy's global (legacy) generator,
torch's CPU generator and every visible CUDA device's generator. Generators made with
``np.random.default_rng(...)`` or ``torch.Generator()`` are the owner's business and are not captured.
"""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np
import torch

# cuBLAS needs a fixed workspace for deterministic results (CUDA docs, "Results reproducibility").
CUBLAS_WORKSPACE = ":4096:8"
_MAX_SEED = 2**32 - 1  # NumPy's legacy seeding accepts [0, 2**32 - 1]
RNG_STATE_KEYS = ("python", "numpy", "torch", "cuda")


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy and torch (CPU and all CUDA devices) with ``seed + rank``; return that value.

    Offsetting by rank gives DDP ranks different dropout/augmentation draws from one configured seed.
    DataLoader workers are seeded by torch from this state (Python, NumPy and torch in each worker).
    """
    effective = int(seed) + int(rank)
    if not 0 <= effective <= _MAX_SEED:
        raise ValueError(f"seed + rank = {seed} + {rank} = {effective} is outside [0, {_MAX_SEED}]")
    random.seed(effective)
    np.random.seed(effective)  # noqa: NPY002  (the global state is what third-party code draws from)
    torch.manual_seed(effective)  # also seeds every CUDA device
    return effective


def set_deterministic(enabled: bool) -> None:
    """Ask for deterministic kernels (``enabled=True``) or restore torch's defaults (``False``).

    Uses ``torch.use_deterministic_algorithms(True, warn_only=True)``: several 3D CUDA backward ops have no
    deterministic kernel, and those warn instead of raising. Also pins cuDNN to deterministic algorithms with
    autotuning off, and sets ``CUBLAS_WORKSPACE_CONFIG`` (unless already set), which only takes effect if
    this runs before the first cuBLAS call: call it at start-up, before building the model on the GPU.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as plain containers and tensors (survives ``weights_only=True`` loading)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "python": {"version": int(py_version), "internal": [int(v) for v in py_internal],
                   "gauss_next": [] if py_gauss is None else [float(py_gauss)]},
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states from ``capture_rng_state`` so later draws repeat exactly.

    Tensors may come back on a GPU when a checkpoint was loaded with ``map_location="cuda"``; they are moved to
    the CPU, where torch's generators require them. If the number of CUDA devices differs from the one saved,
    the overlapping devices are restored and a warning says so.
    """
    missing = [k for k in RNG_STATE_KEYS if k not in state]
    if missing:
        raise KeyError(f"RNG state lacks {missing}; expected the keys {RNG_STATE_KEYS} from capture_rng_state()")
    py = state["python"]
    gauss = py["gauss_next"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), float(gauss[0]) if gauss else None))
    npy = state["numpy"]
    keys = torch.as_tensor(npy["keys"]).cpu().numpy().astype(np.uint32)
    np_state = (npy["kind"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"]))
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(torch.as_tensor(state["torch"]).cpu())
    saved_cuda = list(state["cuda"])
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved_cuda and len(saved_cuda) != visible:
        warnings.warn(f"RNG state holds {len(saved_cuda)} CUDA generator(s) but {visible} device(s) are visible; "
                      f"restoring the first {min(len(saved_cuda), visible)}", stacklevel=2)
    for device, cuda_state in enumerate(saved_cuda[:visible]):
        torch.cuda.set_rng_state(torch.as_tensor(cuda_state).cpu(), device)


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's ``capture_rng_state()``, indexed by rank (a collective: all ranks must call it).

    Pass the result to ``save_checkpoint(rng_states=...)`` so each rank resumes its own random stream. In a
    single process it returns ``[capture_rng_state()]``.
    """
    import torch.distributed as dist

    state = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered
