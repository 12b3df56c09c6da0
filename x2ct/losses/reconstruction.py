"""The reconstruction objective: a weighted sum of named loss components."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from x2ct.data.input_spec import InputSpec
from x2ct.losses.registry import LOSS_COMPONENTS, build_loss_component
from x2ct.models import Reconstruction
from x2ct.ops.patches import crop_patches


class ReconstructionLoss(nn.Module):
    """``total = sum_k weights[k] * component_k(pred, target)`` over the components with a non-zero weight.

    Args:
        weights: component name -> weight (>= 0). A weight of 0 skips the component entirely (not built, not
            computed, not logged); names are checked against the registry either way, so a typo fails loudly.
        component_kwargs: optional component name -> constructor arguments (e.g. a window size).

    ``forward(pred, target)`` returns ``(total, parts)``: ``total`` a scalar with gradients, ``parts`` the
    *unweighted* value of each active component, detached, for logging. ``pred`` is a model's ``Reconstruction``:
    components whose class sets ``uses_deep_supervision = True`` get its ``deep_supervision`` list, the others its
    volume ``(B, 1, D, H, W)``. A patch (``pred.is_patch``: a cascade trained on patches) is compared with the same
    crop of the target (deep supervision still sees whole volumes).

    Unscanned voxels (``scanned``, ``(B, 1, D, H, W)`` bool, `x2ct.data.scanned`): with ``scanned_only`` the
    prediction takes the target's value there before any component sees it, so those voxels carry no error and
    no gradient in every component alike (windowed and Fourier terms included); a real CT padded with air where
    nobody scanned does not teach the model to paint air. An all-True mask changes nothing, bit for bit.
    """

    def __init__(self, weights: Mapping[str, float], component_kwargs: Mapping[str, Mapping] | None = None,
                 input_spec: InputSpec | None = None, scanned_only: bool = True) -> None:
        super().__init__()
        self.scanned_only = bool(scanned_only)
        component_kwargs = dict(component_kwargs or {})
        for name in [*weights, *component_kwargs]:
            if name not in LOSS_COMPONENTS:
                raise ValueError(f"unknown loss component {name!r}; known components: {sorted(LOSS_COMPONENTS)}")
        for name, weight in weights.items():
            if not math.isfinite(float(weight)) or float(weight) < 0:
                raise ValueError(f"loss weight for {name!r} must be a finite number >= 0, got {weight}")
        self.weights = {name: float(w) for name, w in weights.items() if float(w) > 0}
        if not self.weights:
            raise ValueError(f"ReconstructionLoss needs at least one component with a positive weight, "
                             f"got {dict(weights)}")
        # components that compare with the input views (projection consistency) also need the data set's geometry
        # and normalisation: the data set's input_spec()
        self.components = nn.ModuleDict(
            {name: build_loss_component(name, **component_kwargs.get(name, {}),
                                        **({"input_spec": input_spec} if input_spec is not None
                                           and LOSS_COMPONENTS[name].uses_views else {}))
             for name in self.weights})

    def forward(self, pred: Reconstruction, target: Tensor, volume_only: bool = False,
                views: Tensor | None = None, angles_deg: Tensor | None = None,
                scanned: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``volume_only``: skip the deep-supervision components (validation: models return no deep-supervision
        volumes in eval mode, and the validation loss is that of the final volume). ``views`` (B, V, 1, h, w) and
        ``angles_deg`` (B, V): the model's inputs, for components that compare with them (``uses_views``).
        ``scanned`` (B, 1, D, H, W) bool: the target's scanned voxels (see the class docstring)."""
        volume, auxiliary = pred.volume, pred.deep_supervision
        volume_target = target
        if not self.scanned_only:
            scanned = None
        if scanned is not None and scanned.shape != target.shape:
            raise ValueError(f"scanned mask {tuple(scanned.shape)} does not match the target {tuple(target.shape)}")
        volume_scanned = scanned
        if pred.is_patch:  # a cascade's fine stage trained on one patch
            size = (int(pred.patch_size),) * 3
            volume_target = crop_patches(target, pred.patch_origins, size)
            if scanned is not None:
                volume_scanned = crop_patches(scanned, pred.patch_origins, size)
        if volume_scanned is not None:
            volume = torch.where(volume_scanned.to(volume.device), volume, volume_target.to(volume.dtype))
        parts = {}
        for name, component in self.components.items():
            if component.uses_deep_supervision:
                if volume_only:
                    continue
                if not auxiliary:
                    raise ValueError(f"loss component {name!r} has weight {self.weights[name]} but the model returns "
                                     "no deep-supervision outputs; set loss.weights." + name + "=0 for this model")
                parts[name] = component(auxiliary, target, regions=pred.deep_supervision_regions, scanned=scanned)
            elif component.uses_views:
                if views is None or angles_deg is None:
                    raise ValueError(f"loss component {name!r} compares the prediction with the input views: pass "
                                     "views= and angles_deg=")
                if volume_target is not target:
                    raise ValueError(f"loss component {name!r} renders the whole predicted volume, but the model "
                                     "returned a patch (set model.train_patch_size=null or loss.weights." + name
                                     + "=0)")
                parts[name] = component(volume, views, angles_deg, target)
            else:
                parts[name] = component(volume, volume_target)
        if not parts:
            raise ValueError(f"no loss component applies to the final volume (weights {self.weights})")
        total = torch.stack([self.weights[name] * value for name, value in parts.items()]).sum()
        return total, {name: value.detach() for name, value in parts.items()}
