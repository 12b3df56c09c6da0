"""The mean training CT: the reference a model must beat ("predict the average patient").

Training logs its score (``val_mean_volume``) and may start a model's output from it (``initialise_prior``);
evaluation scores it beside the model (``ref_psnr``, ``ref_ssim``).
"""

from __future__ import annotations

import torch

from x2ct.data.dataset import PatientDRRDataset


def mean_volume(dataset: PatientDRRDataset, limit: int = 64) -> torch.Tensor:
    """Mean CT ``(1, D, H, W)`` of the first ``limit`` patients of ``dataset``."""
    n = min(limit, len(dataset))
    return torch.stack([dataset.ct(i) for i in range(n)]).mean(dim=0)
