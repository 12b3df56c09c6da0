"""Evaluation: metrics as papers publish them, summaries, figures, the evaluator (our metrics themselves:
``x2ct.ops.metrics``).

``figures``, ``evaluator`` and ``report`` are imported from their modules (they pull in matplotlib and the data
stack); the package itself exports the light pure functions.
"""

from x2ct.evaluation.published_metrics import slice_ssim, x2ct_gan_metrics
from x2ct.evaluation.summary import summarise, write_rows_csv, write_summary

__all__ = ["slice_ssim", "summarise", "write_rows_csv", "write_summary", "x2ct_gan_metrics"]
