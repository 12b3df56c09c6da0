"""Progress display that suits both a terminal and a log file.

On a terminal (stderr is a TTY) it is a tqdm bar with live metrics. Otherwise (SLURM, ``nohup``, CI) a bar
would fill the log with carriage returns, so it writes a plain line every ``log_every`` steps instead::

    train epoch 3: 200/1000 (20%) 12.5 it/s eta 64s loss=0.0123 lr=0.0003

Create it with ``enabled=dist.is_main`` so only rank 0 prints.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

DEFAULT_LOG_EVERY = 50


def format_postfix(values: dict[str, Any]) -> str:
    """``"loss=0.0123 lr=0.0003"``: numbers with 4 significant digits, 0-d tensors converted with ``.item()``."""
    parts = []
    for key, value in values.items():
        if hasattr(value, "item"):
            value = value.item()  # for a CUDA tensor this waits for the GPU: pass Python floats when you can
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class Progress:
    """Counts steps toward ``total`` (None if unknown) and shows them with the latest metrics.

    Args:
        total: expected number of steps, or None.
        desc: label in front, e.g. ``"train epoch 3"``.
        enabled: False makes every call a no-op (ranks other than 0, or ``trainer.progress=false``).
        log_every: without a TTY, write a line every this many steps (and one at ``close``).
        stream: where to write; default ``sys.stderr``.
        tty: force bar (True) or plain lines (False); default: ``stream.isatty()``.
    """

    def __init__(self, total: int | None, desc: str, enabled: bool = True, *, log_every: int = DEFAULT_LOG_EVERY,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.log_every = log_every
        self.count = 0
        self._stream = stream if stream is not None else sys.stderr
        self._postfix: dict[str, Any] = {}
        self._last_logged = 0
        self._start = time.monotonic()
        self._closed = False
        is_tty = tty if tty is not None else bool(getattr(self._stream, "isatty", lambda: False)())
        self._bar = tqdm(total=total, desc=desc, file=self._stream, dynamic_ncols=True) if enabled and is_tty else None

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` steps and remember ``postfix`` metrics (shown on the bar or the next log line)."""
        if not self.enabled or self._closed:
            return
        self.count += n
        self._postfix.update(postfix)
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(format_postfix(self._postfix), refresh=False)
            self._bar.update(n)
        elif self.count - self._last_logged >= self.log_every:
            self._write_line()

    def _write_line(self) -> None:
        elapsed = time.monotonic() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        where = f"{self.count}"
        if self.total:
            where += f"/{self.total} ({100 * self.count / self.total:.0f}%)"
        line = f"{self.desc}: {where} {rate:.3g} it/s"
        if self.total and rate > 0:
            line += f" eta {max(0.0, (self.total - self.count) / rate):.0f}s"
        if self._postfix:
            line += " " + format_postfix(self._postfix)
        self._stream.write(line + "\n")
        self._stream.flush()
        self._last_logged = self.count

    def close(self) -> None:
        """Finish the bar, or write the final line if steps were taken since the last one."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.count != self._last_logged:
            self._write_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
