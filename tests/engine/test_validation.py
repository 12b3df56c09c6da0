"""Validation scores each patient over its scanned voxels where some were not scanned, as evaluate.py does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from x2ct.engine.precision import resolve_precision
from x2ct.engine.validation import validation_metrics
from x2ct.models import Reconstruction, ReconstructionModel
from x2ct.ops.metrics import psnr, ssim3d


class Fixed(ReconstructionModel):
    """A "model" answering one fixed volume per sample, whatever the views."""

    def __init__(self, volume: torch.Tensor) -> None:
        super().__init__()
        self.volume, self.num_views, self.volume_size = volume, 2, volume.shape[-1]
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, views: torch.Tensor, angles_deg=None) -> Reconstruction:
        return Reconstruction(self.volume[: len(views)] + 0 * self.anchor)


def batches(scanned: torch.Tensor):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 16, 16, 16, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    pred[:, :, :3] = 1.0  # the model paints a body where nobody scanned
    batch = {"views": torch.zeros(2, 2, 1, 8, 8), "ct": target, "angles_deg": torch.zeros(2, 2), "scanned": scanned}
    return Fixed(pred), [batch], pred, target


@pytest.mark.parametrize("truncated", [True, False])
def test_validation_scores_the_scanned_voxels(truncated):
    scanned = torch.ones(2, 1, 16, 16, 16, dtype=torch.bool)
    if truncated:
        scanned[:, :, :3] = False
    model, loader, pred, target = batches(scanned)
    device = torch.device("cpu")
    out = validation_metrics(model, loader, device, resolve_precision("fp32", device))
    mask = scanned if truncated else None
    assert out["psnr"] == pytest.approx(psnr(pred, target, mask=mask).mean().item(), abs=1e-9)
    assert out["ssim"] == pytest.approx(ssim3d(pred, target, mask=mask).mean().item(), abs=1e-9)
    whole = psnr(pred, target).mean().item()
    assert (out["psnr"] > whole + 1.0) if truncated else (out["psnr"] == pytest.approx(whole, abs=1e-9))
