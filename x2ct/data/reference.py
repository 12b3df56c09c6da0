"""The mean training CT: the reference a model must beat ("predict the average patient").

Training logs its score (``val_mean_volume``) and may start a model's output from it (``initialise_prior``);
evaluation scores it beside the model (``ref_psnr``, ``ref_ssim``). Only scanned voxels enter the mean
(`x2ct.data.scanned`): the air a short scan is padded with is not the average patient's anatomy.

The mean is over the first ``MEAN_VOLUME_PATIENTS`` (64) patients of the training split, not all of it: the CTs
are stacked in memory (64 x 256^3 float32 is 4 GiB). On a split of 112 that is the first 64 of 112, so wherever
the reference is shown, its size is stated (``mean_volume_patients``).
"""

from __future__ import annotations

import torch

from x2ct.data.dataset import PatientDRRDataset

MEAN_VOLUME_PATIENTS = 64


def mean_volume_patients(dataset: PatientDRRDataset, limit: int = MEAN_VOLUME_PATIENTS) -> int:
    """How many patients ``mean_volume(dataset, limit)`` averages: the first ``limit``, or all of a smaller split."""
    return min(limit, len(dataset))


def mean_volume(dataset: PatientDRRDataset, limit: int = MEAN_VOLUME_PATIENTS) -> torch.Tensor:
    """Mean CT ``(1, D, H, W)`` of the first ``limit`` patients of ``dataset``, each voxel over the patients that
    scanned it (air, 0, where none did); the plain mean when every voxel was scanned."""
    n = mean_volume_patients(dataset, limit)
    cts = torch.stack([dataset.ct(i) for i in range(n)])
    scanned = torch.stack([dataset.scanned(dataset.patient_ids[i], ct.shape[1:]) for i, ct in enumerate(cts)])
    if scanned.all():
        return cts.mean(dim=0)
    count = scanned.sum(dim=0)
    total = torch.where(scanned, cts, torch.zeros((), dtype=cts.dtype)).sum(dim=0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros((), dtype=cts.dtype))
