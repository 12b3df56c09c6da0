"""``generate_chest_phantom``: one synthetic chest CT for a seed, from the generator version its config names.

Both versions take the same arguments and differ only in their config type (``PhantomV2Config`` extends
``PhantomConfig``), so the config alone chooses the version; data preparation names it by ``GENERATORS`` key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from x2ct.data.ct_volume import CTVolume
from x2ct.data.phantom.assembly import render_chest
from x2ct.data.phantom.config import PhantomConfig
from x2ct.data.phantom.partial_volume import Grid, checked_seed_and_grid
from x2ct.data.phantom.v2.assembly import render_chest_v2
from x2ct.data.phantom.v2.config import PhantomV2Config

# version name (data.prepare's ``generator``) -> its config type and painter (which takes that config type)
GENERATORS: dict[str, tuple[type[PhantomConfig], Callable[[int, Grid, Any], tuple[CTVolume, np.ndarray]]]]
GENERATORS = {"v1": (PhantomConfig, render_chest), "v2": (PhantomV2Config, render_chest_v2)}


def generate_chest_phantom(
    seed: int,
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing_mm: tuple[float, float, float] | None = None,
    config: PhantomConfig | None = None,
    with_labels: bool = False,
) -> CTVolume | tuple[CTVolume, np.ndarray]:
    """One synthetic chest CT, in HU, for patient ``seed``: v1 for a ``PhantomConfig``, v2 for a ``PhantomV2Config``.

    Args:
        seed: non-negative integer; the same seed gives the identical patient, any other seed another one.
        shape: grid (D, H, W) in the CTVolume RAS layout (D -> superior, H -> anterior, W -> patient right).
        spacing_mm: voxel size (D, H, W) in mm; None spreads ``config.fov_mm`` over ``shape``. The volume is
            centred on the world origin either way, so the anatomy does not move with the grid.
        config: ranges of the anatomy, and by its type the version; None is v1 with its defaults.
        with_labels: also return the label map.

    Returns:
        ``CTVolume`` with ``hu`` float32 (D, H, W) and metadata; with ``with_labels`` also labels uint8 (D, H, W),
        ids in ``LABELS`` (v1) or ``LABELS_V2``. A truncated v2 scan keeps only its scanned slab (D' < D slices,
        ``origin`` moved); see ``render_chest`` and ``render_chest_v2`` for each version's metadata.
    """
    config = PhantomConfig() if config is None else config
    # the most derived config type that fits: a PhantomV2Config (or a subclass of it) is a PhantomConfig too
    fits = [(kind, render) for kind, render in GENERATORS.values() if isinstance(config, kind)]
    render = max(fits, key=lambda fit: len(fit[0].__mro__))[1] if fits else None
    if render is None:
        raise ValueError("generate_chest_phantom: config must be a PhantomConfig (v1) or a PhantomV2Config (v2), "
                         f"got {type(config).__name__}")
    seed, grid = checked_seed_and_grid("generate_chest_phantom", seed, shape, spacing_mm, config.fov_mm,
                                       config.edge_width_voxels)
    ct, labels = render(seed, grid, config)
    return (ct, labels) if with_labels else ct
