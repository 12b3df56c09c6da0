"""Scoring during training: validation and test (PSNR and 3D SSIM per patient, summed and all-reduced so every rank
agrees), and the slices of one validation patient logged to W&B."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from x2ct.engine.distributed import all_reduce_mean, unwrap_model
from x2ct.engine.precision import Precision, autocast
from x2ct.losses import ReconstructionLoss
from x2ct.models import Reconstruction
from x2ct.ops.metrics import psnr, ssim3d, stage_metric_names, stage_metrics

METRIC_DEFINITIONS = ("PSNR = 10 log10(1 / MSE) on [0, 1] volumes; SSIM = 3D Gaussian-window SSIM (sigma 1.5, "
                      "K1 0.01, K2 0.03, data_range 1), both per patient over its scanned voxels (all voxels when "
                      "every one was scanned), averaged over the split")


@torch.no_grad()
def validation_metrics(model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision,
                       criterion: ReconstructionLoss | None = None, limit: int | None = None,
                       constant: torch.Tensor | None = None) -> dict[str, float]:
    """Mean PSNR / 3D SSIM (and loss) over a split, summed per sample and all-reduced across ranks; over each
    patient's scanned voxels where the batch holds unscanned ones (`x2ct.data.scanned`).

    ``constant`` evaluates a fixed prediction instead of the model (the mean-volume reference). A model of several
    stages (``stage_sizes``, the multi-resolution cascade) is also scored at every earlier stage's size, against the
    target area-averaged to it (``x2ct.ops.metrics.stage_metrics``).
    """
    model.eval()
    inner = unwrap_model(model)
    # stage sizes known up front: every rank all-reduces the same values, even one whose shard is empty
    staged = constant is None and len(inner.stage_sizes) > 1
    names = ["psnr", "ssim", "loss", "count"] + (stage_metric_names(list(inner.stage_sizes[:-1])) if staged else [])
    totals = torch.zeros(len(names), dtype=torch.float64, device=device)
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        views, target = batch["views"].to(device), batch["ct"].to(device)
        angles = batch.get("angles_deg")
        scanned = batch.get("scanned")
        # scored over the scanned voxels where some were not; a data set scanned everywhere keeps the plain mean
        mask = None if scanned is None or bool(scanned.all()) else scanned.to(device)
        stages = []
        if constant is not None:
            pred = constant.to(device).expand_as(target)
        else:
            with autocast(device, precision):
                stages = (inner.stage_outputs(views, angles_deg=angles) if staged
                          else [model(views, angles_deg=angles).volume])
            stages = [s.float() for s in stages]
            pred = stages[-1]
        sums = {"psnr": psnr(pred, target, mask=mask), "ssim": ssim3d(pred, target, mask=mask),
                **stage_metrics(stages[:-1], target)}
        if criterion is not None:
            sums["loss"] = criterion(Reconstruction(pred), target, volume_only=True, views=views, angles_deg=angles,
                                     scanned=mask)[0] * len(target)
        for name, value in sums.items():
            totals[names.index(name)] += value.sum().double()
        totals[names.index("count")] += len(target)
    summed = all_reduce_mean(totals) * _world_size()  # sums over ranks
    count = summed[names.index("count")].clamp(min=1)
    return {name: (value / count).item() for name, value in zip(names, summed, strict=True)
            if name != "count" and (name != "loss" or criterion is not None)}


@torch.no_grad()
def log_slices(logger, model, loader, device, precision, step) -> None:
    """Mid axial / coronal / sagittal slices of the first validation patient: prediction above, target below."""
    batch = next(iter(loader))
    with autocast(device, precision):
        pred = model(batch["views"][:1].to(device), angles_deg=batch["angles_deg"][:1]).volume.float()[0, 0].cpu()
    target = batch["ct"][0, 0]
    d, h, w = target.shape
    images, captions = [], []
    # radiological display: axial anterior up and patient right on the left; coronal and sagittal head up,
    # patient right / anterior on the left (volume axes D, H, W run superior, anterior, patient right)
    for name, take in (("axial", lambda v: v[d // 2].flip(0).flip(1)),
                       ("coronal", lambda v: v[:, h // 2].flip(0).flip(1)),
                       ("sagittal", lambda v: v[:, :, w // 2].flip(0).flip(1))):
        images.append(torch.cat([take(pred), take(target)], dim=0).clamp(0, 1).numpy())
        captions.append(f"{name}: prediction (top) / target (bottom), {batch['patient_id'][0]}")
    logger.log_images("val/slices", images, step=step, captions=captions)


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
