"""The training data: the loaders and their samplers (the folder itself: ``x2ct.data.ensure``).

Every rank reads the same folder; the train loader shards it with a ``DistributedSampler`` (re-seeded per epoch,
so a resumed run draws what an unbroken one would), validation and test with ``ShardSampler`` (no padding, so
metrics count each patient once).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from x2ct.data.collate import collate_samples
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.realism import RadiographRealism
from x2ct.data.view_selection import ViewSubsetCollate
from x2ct.engine.distributed import DistInfo


class ShardSampler(Sampler[int]):
    """Every rank takes indices ``rank, rank + world, ...``: no padding, so metrics count each sample once."""

    def __init__(self, length: int, dist: DistInfo) -> None:
        self.indices = list(range(dist.rank, length, dist.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loaders(data_cfg: DictConfig, root: Path, dist: DistInfo, seed: int):
    realism = realism_from_config(data_cfg)  # training only: validation and test see clean DRRs

    def dataset(split: str, augment: bool) -> PatientDRRDataset:
        num_views = data_cfg.get("num_views")
        views = None if num_views is not None or data_cfg.views is None else list(data_cfg.views)
        return PatientDRRDataset(root, split, views=views, num_views=num_views,
                                 render_on_the_fly=bool(data_cfg.render_on_the_fly and augment),
                                 angle_jitter_deg=data_cfg.angle_jitter_deg if augment else 0.0,
                                 noise_photons=data_cfg.noise_photons if augment else None,
                                 radiograph=data_cfg.radiograph, view_effects=realism if augment else None)

    train_set, val_set, test_set = dataset("train", True), dataset("val", False), dataset("test", False)
    for name, ds in (("train", train_set), ("val", val_set)):
        if len(ds) == 0:
            raise ValueError(f"the {name} split of {root} is empty (data={data_cfg.name}); training needs train and "
                             "val patients")
    train_sampler = DistributedSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                       seed=seed)
    workers = int(data_cfg.num_workers)
    common = {"batch_size": data_cfg.batch_size, "num_workers": workers, "pin_memory": torch.cuda.is_available()}
    # Loaders draw their workers' seeds from their own generators, never from the global RNG; the train one is
    # re-seeded every epoch (see `epoch_seed`), so a resumed run sees the same augmentation as an unbroken one.
    dropout = data_cfg.get("view_dropout")
    collate = (ViewSubsetCollate(int(dropout.min_views), dropout.get("max_views"), list(dropout.get("always") or []))
               if dropout else collate_samples)  # training only: validation and test see all the selected views
    # Workers that outlive an epoch save their start-up every epoch, but keep their random streams: the train
    # loader keeps them only when it draws nothing at random (else exact resume needs workers seeded per epoch).
    augments = bool(dropout or data_cfg.render_on_the_fly or data_cfg.noise_photons or realism)
    train_loader = DataLoader(train_set, sampler=train_sampler, drop_last=False, generator=torch.Generator(),
                              collate_fn=collate, persistent_workers=workers > 0 and not augments, **common)

    def eval_loader(ds):
        return DataLoader(ds, sampler=ShardSampler(len(ds), dist), generator=torch.Generator().manual_seed(seed),
                          collate_fn=collate_samples, persistent_workers=workers > 0, **common)

    test_loader = eval_loader(test_set) if len(test_set) else None
    return train_set, train_loader, train_sampler, eval_loader(val_set), test_loader


def realism_from_config(data_cfg: DictConfig) -> RadiographRealism | None:
    """``data.realism`` parsed (`x2ct.data.realism`), or None when it is null or absent; bad settings raise a
    ValueError naming the key."""
    realism = data_cfg.get("realism")
    if realism is None:
        return None
    return RadiographRealism.from_config(OmegaConf.to_container(realism, resolve=True), key="data.realism")


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the train loader's generator for one epoch on one rank."""
    return (seed * 1_000_003 + epoch) * 4_099 + rank

