"""Which of a data set's stored views a model sees: a fixed evenly spread subset, or a random one per batch.

A data set prepared with many views (e.g. 24 over 180 degrees) serves every N-view experiment:
`evenly_spread_views` picks the N views a sparse-view protocol uses, and `ViewSubsetCollate` drops views at
random during training so that one model learns to reconstruct from any number of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from x2ct.data.collate import collate_samples


def evenly_spread_views(angles_deg: Sequence[float], n: int, arc_deg: float = 180.0,
                        tol_deg: float = 1e-3) -> list[int]:
    """Indices into ``angles_deg`` of the views at gantry angles ``k * arc_deg / n`` for k = 0..n-1, in that order.

    Angles match modulo 360 within ``tol_deg``. Raises ValueError listing the missing and the stored angles when
    a wanted angle is not stored; the message reads on after a prefix such as ``"data.num_views=6: "``.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"the number of views must be a positive integer, got {n!r}")
    if not arc_deg > 0:
        raise ValueError(f"arc_deg must be > 0, got {arc_deg!r}")
    if not tol_deg >= 0:
        raise ValueError(f"tol_deg must be >= 0, got {tol_deg!r}")
    n = int(n)
    stored = [float(a) for a in angles_deg]
    wanted = [arc_deg * k / n for k in range(n)]
    indices, missing = [], []
    for angle in wanted:
        match = next((i for i, a in enumerate(stored) if _angle_distance(a, angle) <= tol_deg), None)
        if match is None:
            missing.append(angle)
        else:
            indices.append(match)
    if missing:
        raise ValueError(f"{n} views evenly spread over {arc_deg:g} degrees need views at {_fmt(wanted)} degrees; "
                         f"missing {_fmt(missing)}; the data set stores views at {_fmt(stored)}")
    return indices


def _angle_distance(a: float, b: float) -> float:
    d = (a - b) % 360.0
    return min(d, 360.0 - d)


def _fmt(angles: Sequence[float]) -> str:
    return "[" + ", ".join(f"{a:g}" for a in angles) + "]"


class ViewSubsetCollate:
    """DataLoader ``collate_fn`` for view dropout: every batch keeps a random subset of its samples' views.

    Per batch: draw k uniformly in [``min_views``, ``max_views``] (``None``: all V views of the samples), then k
    of the V view positions, the same for every sample so that the batch stacks; positions in ``always`` (e.g.
    ``(0,)`` to keep the PA view) are always among them. Each sample's ``"views"`` ``(V, 1, rows, cols)`` and
    ``"angles_deg"`` ``(V,)`` (and its ``"geometry"``) are cut to the kept positions in stored order, then
    `collate_samples` gives ``"views"`` ``(B, k, 1, rows, cols)``, ``"angles_deg"`` ``(B, k)`` and ``"geometry"`` a
    list of B geometries with k views each. Other keys pass through untouched.
    Draws use torch's global RNG, so ``torch.manual_seed`` and DataLoader worker seeding make them reproducible.
    """

    def __init__(self, min_views: int, max_views: int | None = None, always: Sequence[int] = ()) -> None:
        if isinstance(min_views, bool) or int(min_views) != min_views or min_views < 1:
            raise ValueError(f"view dropout: min_views must be an integer >= 1, got {min_views!r}")
        if max_views is not None and (isinstance(max_views, bool) or int(max_views) != max_views
                                      or max_views < min_views):
            raise ValueError(f"view dropout: max_views must be None (all views) or an integer >= min_views "
                             f"({min_views}), got {max_views!r}")
        always = tuple(int(i) for i in always)
        if any(i < 0 for i in always) or len(set(always)) != len(always):
            raise ValueError(f"view dropout: always must list distinct view positions >= 0, got {list(always)}")
        if len(always) > min_views:
            raise ValueError(f"view dropout: always keeps {len(always)} views {list(always)}, more than min_views "
                             f"({min_views})")
        self.min_views = int(min_views)
        self.max_views = None if max_views is None else int(max_views)
        self.always = always

    def __call__(self, samples: list[dict]) -> dict:
        positions = self.draw(self._num_views(samples))
        return collate_samples([self._subset(sample, positions) for sample in samples])

    def draw(self, num_views: int) -> torch.Tensor:
        """Kept view positions ``(k,)`` int64, ascending, for samples that hold ``num_views`` views."""
        high = num_views if self.max_views is None else self.max_views
        if high > num_views:
            raise ValueError(f"view dropout: max_views={self.max_views} but the samples hold only {num_views} views")
        if self.min_views > num_views:
            raise ValueError(f"view dropout: min_views={self.min_views} but the samples hold only {num_views} views")
        if self.always and max(self.always) >= num_views:
            raise ValueError(f"view dropout: always={list(self.always)} names a view position out of range for "
                             f"samples with {num_views} views")
        k = int(torch.randint(self.min_views, high + 1, ()).item())
        rest = torch.tensor([i for i in range(num_views) if i not in self.always], dtype=torch.long)
        chosen = rest[torch.randperm(len(rest))[:k - len(self.always)]]
        return torch.cat([torch.tensor(self.always, dtype=torch.long), chosen]).sort().values

    @staticmethod
    def _num_views(samples: list[dict]) -> int:
        if not samples:
            raise ValueError("view dropout: empty batch")
        counts = set()
        for sample in samples:
            if "views" not in sample:
                raise ValueError(f"view dropout: a sample has no 'views' entry (keys: {sorted(sample)})")
            counts.add(int(sample["views"].shape[0]))
            if "angles_deg" in sample and len(sample["angles_deg"]) != sample["views"].shape[0]:
                raise ValueError(f"view dropout: a sample has {sample['views'].shape[0]} views but "
                                 f"{len(sample['angles_deg'])} angles_deg")
        if len(counts) != 1:
            raise ValueError(f"view dropout: samples of one batch hold different numbers of views {sorted(counts)}")
        return counts.pop()

    @staticmethod
    def _subset(sample: dict, positions: torch.Tensor) -> dict:
        out = dict(sample)  # never modify the data set's own dict
        out["views"] = sample["views"][positions]
        if "angles_deg" in sample:
            out["angles_deg"] = torch.as_tensor(sample["angles_deg"])[positions]
        if "geometry" in sample:
            angles = sample["geometry"].angles_deg
            out["geometry"] = sample["geometry"].with_angles([angles[i] for i in positions.tolist()])
        return out

    def __repr__(self) -> str:
        return f"ViewSubsetCollate(min_views={self.min_views}, max_views={self.max_views}, always={list(self.always)})"
