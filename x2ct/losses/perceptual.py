"""2.5D perceptual loss: VGG16 feature distances on slices of the volume along all three axes.

Voxel losses average away texture; distances between ImageNet features of slices penalise blur and lost
structure the way a reader sees them. A 3D network pretrained on CT would be better but none is standard, so
slices through each axis stand in for the volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from x2ct.losses.registry import LossComponent, register_loss_component
from x2ct.losses.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16Features

MIN_SLICE_SIZE = 4  # two 2x2 max pools before relu3_3
FEATURE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@register_loss_component("perceptual")
class PerceptualLoss(LossComponent):
    """Mean L1 distance between VGG16 features of matching slices of ``pred`` and ``target`` ``(B, 1, D, H, W)``.

    Args:
        weights: ``"imagenet"``, a local torchvision VGG16 ``.pth`` file, or ``"random"`` (tests only); see
            ``x2ct.losses.vgg``.
        slices_per_axis: slices taken along each of D, H and W, at the centres of equal bins (8 of 64 slices:
            4, 12, ..., 60); all slices when an axis is shorter. 8 per axis (24 per volume) samples every region of
            the volume; the cost grows linearly with it (64^3, batch 2: ~2.5 s forward + backward on 2 CPU cores).
        layers: VGG16 ReLU outputs compared, each counting equally (``relu1_2`` edges, ``relu2_2`` textures,
            ``relu3_3`` parts of shapes).
        dtype: ``"float32"`` or ``"bfloat16"``: the precision the VGG16 features are computed in (bf16 under
            autocast; the feature distances and the returned loss stay float32), for the GPU's bf16 convolution
            rate. On phantom CTs (random VGG weights) bf16 moved the loss by under 0.5% and kept the gradient's
            cosine to float32's at 0.999 for a blurred, noisy prediction, 0.987 for one close to its target
            (tests/losses/test_perceptual.py bounds both).

    Grey slices in [0, 1] are repeated to three channels and normalised with the ImageNet mean and std. The
    loss is the mean over axes and layers of ``mean(|phi(pred slices) - phi(target slices)|)``. The network is
    frozen and stays in eval mode; move the loss to the data's device with ``.to(device)``.
    """

    def __init__(self, weights: str = "imagenet", slices_per_axis: int = 8,
                 layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"), dtype: str = "float32") -> None:
        super().__init__()
        if int(slices_per_axis) < 1:
            raise ValueError(f"perceptual loss: slices_per_axis must be >= 1, got {slices_per_axis}")
        if dtype not in FEATURE_DTYPES:
            raise ValueError(f"perceptual loss: dtype must be one of {list(FEATURE_DTYPES)}, got {dtype!r}")
        self.slices_per_axis = int(slices_per_axis)
        self.feature_dtype = FEATURE_DTYPES[dtype]
        self.vgg = VGG16Features(weights, layers=tuple(layers))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 5 or pred.shape[1] != 1:
            raise ValueError(f"perceptual loss: expected pred and target of one shape (B, 1, D, H, W), got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        if pred.device != self.mean.device:
            raise ValueError(f"perceptual loss: the VGG16 network is on {self.mean.device} but pred is on "
                             f"{pred.device}; move the loss there with .to(device)")
        distances = []
        for axis in (2, 3, 4):
            pred_slices, target_slices = self._slices(pred, axis), self._slices(target, axis)
            with torch.no_grad():
                target_features = self._features(target_slices)
            for p, t in zip(self._features(pred_slices), target_features, strict=True):
                distances.append((p - t).abs().mean())
        return torch.stack(distances).mean()

    def _features(self, slices: Tensor) -> list[Tensor]:
        """VGG16 activations of ``(N, 3, h, w)`` slices; with bf16 computed under autocast, returned in float32."""
        if self.feature_dtype == torch.float32:
            return self.vgg(slices)
        with torch.autocast(slices.device.type, dtype=self.feature_dtype):
            features = self.vgg(slices)
        return [f.float() for f in features]

    def _slices(self, volume: Tensor, axis: int) -> Tensor:
        """``(B, 1, D, H, W) -> (B * k, 3, h, w)``: ``k`` evenly spaced slices along ``axis``, ImageNet-normalised."""
        size = volume.shape[axis]
        k = min(self.slices_per_axis, size)
        index = ((torch.arange(k, device=volume.device) + 0.5) * size / k).long()
        slices = volume.index_select(axis, index).movedim(axis, 1)  # (B, k, 1, h, w)
        slices = slices.reshape(-1, 1, *slices.shape[-2:])
        if min(slices.shape[-2:]) < MIN_SLICE_SIZE:
            raise ValueError(f"perceptual loss: slices of {tuple(slices.shape[-2:])} voxels across axis {axis} of a "
                             f"volume {tuple(volume.shape)} are too small for VGG16 (at least {MIN_SLICE_SIZE})")
        return (slices.expand(-1, 3, -1, -1).to(self.mean.dtype) - self.mean) / self.std
