"""Scoring during training: validation and test (PSNR and 3D SSIM per patient, summed and all-reduced so every rank
agrees), and the slices of one validation patient logged to W&B."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from x2ct.engine.distributed import all_reduce_mean, unwrap_model
from x2ct.engine.precision import Precision, autocast
from x2ct.losses import ReconstructionLoss
from x2ct.models.inputs import forward_views
from x2ct.ops.metrics import psnr, ssim3d

MIN_SSIM_SIZE = 11  # the 3D SSIM window (sigma 1.5) needs this many voxels per axis
METRIC_DEFINITIONS = ("PSNR = 10 log10(1 / MSE) on [0, 1] volumes; SSIM = 3D Gaussian-window SSIM (sigma 1.5, "
                      "K1 0.01, K2 0.03, data_range 1), both per patient over its scanned voxels (all voxels when "
                      "every one was scanned), averaged over the split")


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision,
             criterion: ReconstructionLoss | None = None, limit: int | None = None,
             constant: torch.Tensor | None = None) -> dict[str, float]:
    """Mean PSNR / 3D SSIM (and loss) over a split, summed per sample and all-reduced across ranks; over each
    patient's scanned voxels where the batch holds unscanned ones (`x2ct.data.scanned`).

    ``constant`` evaluates a fixed prediction instead of the model (the mean-volume reference). A model with
    ``stage_outputs`` (the multi-resolution cascade) is also scored at every earlier stage's size, against the
    target area-averaged to it: ``psnr_stage<k>`` (and ``ssim_stage<k>`` where the 11-voxel window fits).
    """
    model.eval()
    staged = constant is None and hasattr(unwrap_model(model), "stage_outputs")
    # sizes known up front: every rank all-reduces the same shape, even one whose shard is empty
    sizes = [int(n) for n in unwrap_model(model).stage_sizes[:-1]] if staged else []
    totals = torch.zeros(4 + 2 * len(sizes), dtype=torch.float64, device=device)  # psnr, ssim, loss, count, stages
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
                stages = (forward_views(unwrap_model(model), views, angles, "stage_outputs") if staged
                          else [forward_views(model, views, angles)])
            stages = [s.float() for s in stages]
            pred = stages[-1]
        totals[0] += psnr(pred, target, mask=mask).sum().double()
        totals[1] += ssim3d(pred, target, mask=mask).sum().double()
        if criterion is not None:
            totals[2] += criterion(pred, target, volume_only=True, views=views, angles_deg=angles,
                                   scanned=mask)[0].double() * len(target)
        totals[3] += len(target)
        for k, stage in enumerate(stages[:-1]):
            coarse_target = F.interpolate(target, size=stage.shape[-3:], mode="area")
            totals[4 + 2 * k] += psnr(stage, coarse_target).sum().double()
            if min(stage.shape[-3:]) >= MIN_SSIM_SIZE:
                totals[5 + 2 * k] += ssim3d(stage, coarse_target).sum().double()
    totals = all_reduce_mean(totals) * _world_size()  # sums over ranks
    count = totals[3].clamp(min=1)
    out = {"psnr": (totals[0] / count).item(), "ssim": (totals[1] / count).item()}
    if criterion is not None:
        out["loss"] = (totals[2] / count).item()
    for k, size in enumerate(sizes):
        out[f"psnr_stage{k + 1}"] = (totals[4 + 2 * k] / count).item()
        if size >= MIN_SSIM_SIZE:
            out[f"ssim_stage{k + 1}"] = (totals[5 + 2 * k] / count).item()
    return out


@torch.no_grad()
def log_slices(logger, model, loader, device, precision, step) -> None:
    """Mid axial / coronal / sagittal slices of the first validation patient: prediction above, target below."""
    batch = next(iter(loader))
    with autocast(device, precision):
        pred = forward_views(model, batch["views"][:1].to(device), batch["angles_deg"][:1]).float()[0, 0].cpu()
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
