"""Peak memory of the code run between two calls, for the benchmarks (each case in a fresh process).

CUDA: ``torch.cuda.max_memory_allocated`` (minus what was allocated at ``start`` unless ``include_existing``).
CPU: how far the process's peak resident set size rises (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``
at ``start``) over its resident size at that moment; where the reset is not allowed, the peak since the process
started (``ru_maxrss``).
"""

from __future__ import annotations

import resource

MB = 2**20


def proc_status_kb(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {key}")


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
        self.base = proc_status_kb("VmRSS") * 1024
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM (reset before warm-up) - VmRSS before"
        except OSError:  # peak since process start; the child does little before this point
            self.method = "ru_maxrss (since process start) - VmRSS before"

    def peak_mb(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / MB
        if self.method.startswith("VmHWM"):
            peak = proc_status_kb("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return max(0.0, (peak - self.base) / MB)
