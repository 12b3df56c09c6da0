"""Model variants by name, so a composite model (the multi-resolution cascade) builds its parts without Hydra."""

from __future__ import annotations

from typing import Any

from x2ct.models.baseline_unet import BaselineUNet
from x2ct.models.hybrid_vit import HybridViT
from x2ct.models.interface import ReconstructionModel

MODELS: dict[str, type[ReconstructionModel]] = {"baseline_unet": BaselineUNet, "hybrid_vit": HybridViT}


def model_from_name(name: str, **kwargs: Any) -> ReconstructionModel:
    """``MODELS[name](**kwargs)``; an unknown name is an error that lists the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)} (x2ct/models/registry.py)")
    return MODELS[name](**kwargs)
