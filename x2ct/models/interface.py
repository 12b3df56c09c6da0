"""What every model returns and what it declares: the seam between the models and the engine, losses and evaluation.

A model is a ``ReconstructionModel``: ``forward(views, angles_deg)`` returns a ``Reconstruction`` in every mode,
and the model states its abilities (how many views it takes, its stage sizes, whether it has a template volume)
instead of callers probing it with ``hasattr``. The training loop, the loss, validation, evaluation and
inference read these names and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.utils import _pytree


@dataclass
class Reconstruction:
    """A model's output.

    Attributes:
        volume: ``(B, 1, n, n, n)`` in [0, 1] in eval mode (linear in training); a patch ``(B, 1, p, p, p)`` of the
            ``n^3`` grid when ``patch_origins`` is set (a cascade's last stage trained on patches).
        deep_supervision: coarser volumes of the same patients, finest first, for the deep-supervision loss; empty
            in eval mode and for models without auxiliary heads.
        deep_supervision_regions: per ``deep_supervision`` entry, None (a whole volume) or ``(origins (B, 3),
            grid side)``: the entry is a patch of that grid starting at those voxels (None: all whole volumes).
        patch_origins: ``(B, 3)`` long, the first voxel (D, H, W) of ``volume``'s patch in the ``n^3`` grid.
        patch_size: the patch side ``p`` when ``patch_origins`` is set.
    """

    volume: Tensor
    deep_supervision: list[Tensor] = field(default_factory=list)
    deep_supervision_regions: list[tuple[Tensor, int] | None] | None = None
    patch_origins: Tensor | None = None
    patch_size: int | None = None

    def __post_init__(self) -> None:
        if (self.patch_origins is None) != (self.patch_size is None):
            raise ValueError("Reconstruction: patch_origins and patch_size are given together or not at all")

    @property
    def is_patch(self) -> bool:
        """Whether ``volume`` is a patch of the whole grid (compare it with the same crop of the target)."""
        return self.patch_origins is not None

    def float(self) -> Reconstruction:
        """The volumes in float32 (losses run in full precision after an autocast forward); origins unchanged."""
        return replace(self, volume=self.volume.float(), deep_supervision=[v.float() for v in self.deep_supervision])


# a pytree node, so that DDP's output hooks and torch.compile see the tensors inside
_pytree.register_dataclass(Reconstruction)


class ReconstructionModel(nn.Module):
    """Views ``(B, V, 1, S, S)`` and their gantry angles -> a ``Reconstruction``: the interface of every model.

    Subclasses set ``num_views`` and ``volume_size`` and implement ``forward``; the defaults below describe a
    single-stage model built for exactly ``num_views`` views, without a template volume.
    """

    num_views: int
    volume_size: int

    def forward(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> Reconstruction:
        """``views`` (B, V, 1, S, S); ``angles_deg`` (V,) or (B, V) with equal rows, default the constructor's."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward(views, angles_deg)")

    @property
    def any_view_count(self) -> bool:
        """Whether a forward pass takes any number of views from ``min_views`` on, given their angles (view
        dropout and evaluation on other views need it); False: exactly ``num_views``."""
        return False

    @property
    def min_views(self) -> int:
        """The fewest views one forward pass takes."""
        return 1 if self.any_view_count else self.num_views

    @property
    def max_views(self) -> int | None:
        """The most views one forward pass takes (None: no limit)."""
        return None if self.any_view_count else self.num_views

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """The grid side of each volume ``stage_outputs`` returns, coarse first; the last is ``volume_size``."""
        return (int(self.volume_size),)

    def stage_outputs(self, views: Tensor, angles_deg: Tensor | Sequence[float] | None = None) -> list[Tensor]:
        """Eval mode: each stage's volume ``(B, 1, n_k, n_k, n_k)``, coarse first (one stage: the volume)."""
        return [self(views, angles_deg=angles_deg).volume]

    @torch.no_grad()
    def initialise_prior(self, mean_volume: Tensor) -> None:
        """Start a template volume at the training set's mean CT ``(1, n, n, n)``; models without one ignore it."""


def check_model(model: nn.Module, where: str) -> ReconstructionModel:
    """``model`` if it implements the interface, else a ``TypeError`` naming ``where`` (its config key)."""
    if not isinstance(model, ReconstructionModel):
        raise TypeError(f"{where}: {type(model).__module__}.{type(model).__name__} is not an "
                        "x2ct.models.ReconstructionModel; a model subclasses it and returns a Reconstruction from "
                        "forward(views, angles_deg)")
    return model


__all__ = ["Reconstruction", "ReconstructionModel", "check_model"]
