"""The mean training CT: the reference a model must beat ("predict the average patient").

Training logs its score (``val_mean_volume``) and may start a model's output from it (``initialise_prior``);
evaluation scores it beside the model (``ref_psnr``, ``ref_ssim``). Only scanned voxels enter the mean
(`x2ct.data.scanned`): the air a short scan is padded with is not the average patient's anatomy.
"""

from __future__ import annotations

import torch

from x2ct.data.dataset import PatientDRRDataset


def mean_volume(dataset: PatientDRRDataset, limit: int = 64) -> torch.Tensor:
    """Mean CT ``(1, D, H, W)`` of the first ``limit`` patients of ``dataset``, each voxel over the patients that
    scanned it (air, 0, where none did); the plain mean when every voxel was scanned."""
    n = min(limit, len(dataset))
    cts = torch.stack([dataset.ct(i) for i in range(n)])
    scanned = torch.stack([dataset.scanned(dataset.patient_ids[i], ct.shape[1:]) for i, ct in enumerate(cts)])
    if scanned.all():
        return cts.mean(dim=0)
    count = scanned.sum(dim=0)
    total = torch.where(scanned, cts, torch.zeros((), dtype=cts.dtype)).sum(dim=0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros((), dtype=cts.dtype))
