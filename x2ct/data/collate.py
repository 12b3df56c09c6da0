"""Batching of `PatientDRRDataset` items: tensors stacked, each sample's imaging geometry kept as an object.

An item carries its views' `ProjectionGeometry` (``"geometry"``: the data set's geometry at the item's own,
possibly jittered, angles). `torch.utils.data.default_collate` cannot stack a dataclass, so the loaders use
`collate_samples`: every other key as ``default_collate`` gives it, ``"geometry"`` as a list of one geometry per
sample.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate

KEPT_AS_LIST = ("geometry",)


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` of the samples, except ``"geometry"``: a list ``[ProjectionGeometry] * B``."""
    kept = {key: [sample[key] for sample in samples] for key in KEPT_AS_LIST if samples and key in samples[0]}
    batch = default_collate([{k: v for k, v in sample.items() if k not in kept} for sample in samples])
    return batch | kept
