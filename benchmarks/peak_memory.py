"""Peak memory of the code run between two calls, for the benchmarks (each case in a fresh process).

CUDA: ``torch.cuda.max_memory_allocated`` (minus what was allocated at ``start`` unless ``include_existing``).
CPU: how far the process's peak resident set size rises (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``
at ``start``) over its resident size at that moment; where the reset is not allowed, the peak since the process
started (``ru_maxrss``). ``start`` first hands the heap glibc keeps free back to the system (``malloc_trim``): else
the measured code may reuse pages already resident and its peak reads as no rise at all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource

MB = 2**20


def proc_status_kb(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {key}")


def rss_bytes() -> int:
    """The resident set size now (``VmRSS``)."""
    return proc_status_kb("VmRSS") * 1024


def trim_heap() -> None:
    """Give the memory Python and glibc hold free back to the system, so the resident size holds only live memory
    and later allocations show as a rise."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: a rise may then under-count reused memory
        pass


def reset_peak() -> bool:
    """Reset the peak resident size (``VmHWM``) to the current one (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_bytes(was_reset: bool) -> int:
    """The peak resident size since the last reset, or since the process started where resets are refused."""
    if was_reset:
        return proc_status_kb("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory added by the code run between ``start()`` and ``peak_mb()``.

    ``include_existing``: on CUDA, count what was allocated before ``start`` too (a model's weights).
    """

    def __init__(self, device, include_existing: bool = False) -> None:
        self.device = device
        self.include_existing = include_existing

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = 0 if self.include_existing else torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated" + ("" if self.include_existing else
                                                         " - memory_allocated before")
            return
        trim_heap()
        self.base = rss_bytes()
        self.was_reset = reset_peak()
        self.method = ("VmHWM (reset before warm-up) - VmRSS before" if self.was_reset else
                       "ru_maxrss (since process start) - VmRSS before")  # the child does little before this point
        self.method += ", heap trimmed before"

    def peak_mb(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / MB
        return max(0.0, (peak_bytes(self.was_reset) - self.base) / MB)
