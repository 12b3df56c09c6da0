"""Training machinery: the loop and what it leans on.

- ``distributed``: torchrun process group, collectives that also work in one process, ``unwrap_model``.
- ``seeding``: seeds, deterministic mode, RNG state capture/restore.
- ``checkpoint``: the file format: atomic save, ``weights_only`` load, checksums.
- ``training_state``: the run's parts a checkpoint holds, listed once: saved and restored alike (exact resume).
- ``resume``: which checkpoint to resume from, fallback to the newest intact one, copies restored.
- ``trained_model``: a model rebuilt from its checkpoint, for evaluation and prediction (the layers above).
- ``ema``: exponential moving average of the weights.
- ``schedule``: warmup + cosine learning rate.
- ``metrics_log``: the run's JSON-lines metrics file.
- ``wandb_logger``: W&B on rank 0 (``NullLogger`` elsewhere).
- progress display: ``x2ct.progress`` (shared with data preparation).

Import from the submodules (``from x2ct.engine.training_state import TrainingState``); this package imports
nothing so that e.g. ``wandb`` is only needed by code that logs to it.
"""
