"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

The schedule is stepped once per optimizer step (not per epoch). With ``s`` optimizer steps taken so far,
the learning rate is ``base_lr * warmup_cosine_factor(s, ...)``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps.

    - ``step < warmup_steps``: ``(step + 1) / warmup_steps`` (from ``1 / warmup_steps``, never exactly 0, up to 1).
    - then cosine from 1 at ``warmup_steps`` down to ``min_lr_ratio`` at ``total_steps``:
      ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup) / (total - warmup)``.
    - ``step >= total_steps``: stays at ``min_lr_ratio``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(optimizer: Optimizer, warmup_steps: int, total_steps: int,
                       min_lr_ratio: float = 0.0) -> LambdaLR:
    """A ``LambdaLR`` following ``warmup_cosine_factor``; call ``scheduler.step()`` after each optimizer step.

    Args:
        warmup_steps: optimizer steps of linear warmup (0 for none), at most ``total_steps``.
        total_steps: optimizer steps of the whole run (epochs * steps per epoch / accumulation).
        min_lr_ratio: final learning rate as a fraction of the base one, in [0, 1].

    Its ``state_dict`` holds the step count and base learning rates but not these arguments (the factor is a
    plain function), so on resume the schedule follows the current config: a longer ``total_steps`` stretches
    the remaining decay.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}: the run would "
                         "end before warmup does; lower warmup_steps or train for more steps")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        return warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio)

    return LambdaLR(optimizer, lr_lambda=factor)
