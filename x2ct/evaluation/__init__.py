"""Evaluation: validation metrics (``metrics``: pure functions on tensors)."""

from x2ct.evaluation.metrics import psnr, ssim3d

__all__ = ["psnr", "ssim3d"]
