"""`PatientDRRDataset`: (X-ray views, CT) pairs of one split of a prepared data set.

Ranges the model sees:

- ``ct``: ``(1, D, H, W)`` float32 in [0, 1], the HU window of the data set mapped linearly (values outside
  clipped).
- ``views``: ``(V, 1, rows, cols)`` float32. With ``radiograph="log"`` (default): line integrals divided by the
  data set's view scale (``global_max``: the largest line integral of the whole data set, so [0, 1];
  ``per_image_max``: each image's own maximum, [0, 1]; ``fixed``: a chosen constant; ``none``: raw line
  integrals). With ``radiograph="intensity"``: Beer-Lambert transmission ``exp(-p)`` in (0, 1], bright where
  little attenuates, like a raw detector image.
- ``angles_deg``: ``(V,)`` the views' gantry angles in degrees (with ``angle_jitter_deg``, the jittered ones).
- ``geometry``: the `ProjectionGeometry` that rendered these views (the data set's, at ``angles_deg``); the
  loaders batch it as a list (`x2ct.data.collate.collate_samples`).
- ``scanned``: ``(1, D, H, W)`` bool, the voxels of ``ct`` that were scanned (`x2ct.data.scanned`); all True for a
  data set prepared before masks were stored (``has_scanned_masks`` tells).

A NaN or infinite value anywhere in a patient's ``drr.npy`` or ``ct.nii.gz`` is a `DatasetError` (or
`CTReadError`) naming the file, even in a view that is not selected: a damaged file never reaches a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from x2ct.data.input_spec import InputSpec
from x2ct.data.layout import SPLITS, DatasetLayout
from x2ct.data.realism import ViewEffects
from x2ct.data.view_selection import evenly_spread_views
from x2ct.data.views import render_views
from x2ct.ops.hu_window import window_normalise
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.radiograph import add_poisson_noise, normalise_views, to_intensity


class DatasetError(ValueError):
    """A prepared data set that is incomplete or inconsistent; the message names the file."""


class PatientDRRDataset(Dataset):
    """One split of a data set written by ``prepare.py``.

    Args:
        root: the data set folder (holds ``dataset.json``).
        split: ``train``, ``val`` or ``test``.
        views: which views to return, by name (``'pa'``, ``'lateral'``, ``'angle_45'``) or index into the data
            set's views; ``None`` returns all, in stored order.
        num_views: instead of ``views``: the ``num_views`` views spread evenly over 180 degrees from 0 (PA), i.e.
            at ``k * 180 / num_views`` (`evenly_spread_views`); the data set must store them (a data set with 24
            views every 7.5 degrees serves 2, 4, 6 and 8). ``None``: use ``views``.
        render_on_the_fly: render views from the stored CT at every access instead of reading ``drr.npy``.
        angle_jitter_deg: with on-the-fly rendering, add a uniform random offset in [-j, j] degrees to every
            view's gantry angle (drawn from torch's global RNG, so DataLoader seeding applies).
        noise_photons: if set, add Poisson noise for this many photons per unattenuated pixel.
        radiograph: ``"log"`` (normalised line integrals) or ``"intensity"`` (transmission ``exp(-p)``).
        view_effects: applied to the item's line integrals ``(V, rows, cols)`` before they are normalised: the
            training realism (`x2ct.data.realism.RadiographRealism`) or the fixed scoring chain
            (`x2ct.data.clinical_processing.CLINICAL_CHAIN`). Each item seeds its own ``torch.Generator`` with one
            draw of torch's global RNG, so DataLoader worker seeding and the per-rank seed apply. ``None``: the
            views are exactly those without it.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", views: Sequence[str | int] | None = None,
                 render_on_the_fly: bool = False, angle_jitter_deg: float = 0.0,
                 noise_photons: float | None = None, radiograph: str = "log", num_views: int | None = None,
                 view_effects: ViewEffects | None = None) -> None:
        self.layout = DatasetLayout(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not self.layout.manifest.exists():
            raise DatasetError(f"{self.layout.manifest}: not found; is {root} a data set made by prepare.py?")
        self.manifest = json.loads(self.layout.manifest.read_text())
        self.split = split
        self.patient_ids = _read_split(self.layout.split_file(split))
        names = self.manifest["views"]["names"]
        self.geometry = ProjectionGeometry.from_dict(self.manifest["geometry"])
        if num_views is not None:
            if views is not None:
                raise ValueError(f"give views ({list(views)}) or num_views ({num_views}), not both")
            try:
                self.view_indices = evenly_spread_views(self.geometry.angles_deg, num_views)
            except ValueError as err:
                raise DatasetError(f"num_views={num_views}: {err} ({self.layout.manifest})") from err
        else:
            self.view_indices = _select_views(views, names, self.layout.manifest)
        self.view_names = [names[i] for i in self.view_indices]
        self.hu_window = tuple(self.manifest["ct"]["hu_window"])
        self.normalisation = self.manifest["views"]["normalisation"]
        self.view_scale = self.manifest["views"]["scale"]
        self.render_on_the_fly = render_on_the_fly
        self.angle_jitter_deg = float(angle_jitter_deg)
        self.noise_photons = noise_photons
        if radiograph not in ("log", "intensity"):
            raise ValueError(f"radiograph must be 'log' or 'intensity', got {radiograph!r}")
        self.radiograph = radiograph
        self.view_effects = view_effects
        if angle_jitter_deg and not render_on_the_fly:
            raise ValueError("angle_jitter_deg needs render_on_the_fly=True (stored views have fixed angles)")

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, index: int) -> dict:
        patient_id = self.patient_ids[index]
        ct = self._load_ct(patient_id)
        stored = [self.geometry.angles_deg[i] for i in self.view_indices]
        angles = torch.tensor(stored)
        if self.angle_jitter_deg:
            angles = angles + (torch.rand(len(angles)) * 2 - 1) * self.angle_jitter_deg
        geometry = self.geometry.with_angles(angles.tolist() if self.angle_jitter_deg else stored)
        if self.render_on_the_fly:
            line_integrals = render_views(ct, geometry, self.manifest["mu_water"])
        else:
            line_integrals = torch.from_numpy(self._load_drr(patient_id)[self.view_indices])
        if self.noise_photons:
            line_integrals = add_poisson_noise(line_integrals, self.noise_photons)
        if self.view_effects is not None:
            seed = int(torch.randint(0, 2**62, ()))
            line_integrals = self.view_effects(line_integrals, self.geometry.pixel_spacing_mm,
                                               torch.Generator().manual_seed(seed))
        if self.radiograph == "intensity":
            views = to_intensity(line_integrals)
        else:
            views = normalise_views(line_integrals, self.normalisation, self.view_scale)
        return {"views": views[:, None].float(), "ct": self._normalised(ct), "patient_id": patient_id,
                "angles_deg": angles.float(), "geometry": geometry, "scanned": self.scanned(patient_id, ct.shape)}

    @property
    def has_scanned_masks(self) -> bool:
        """Whether the data set stores scanned-voxel masks (prepared with them); else every voxel counts."""
        return bool(self.manifest.get("scanned_masks"))

    def scanned(self, patient_id: str, shape: Sequence[int]) -> torch.Tensor:
        """``(1, D, H, W)`` bool: the patient's scanned voxels; all True without a stored mask."""
        path = self.layout.scanned(patient_id)
        if not path.exists():
            if self.has_scanned_masks:
                raise DatasetError(f"{path}: scanned-voxel mask missing for patient {patient_id} (the data set "
                                   "lists masks in its dataset.json); prepare it again")
            return torch.ones(1, *shape, dtype=torch.bool)
        from x2ct.data.scanned import load_scanned

        mask = load_scanned(path)
        if mask.shape != tuple(shape):
            raise DatasetError(f"{path}: mask of shape {mask.shape} does not match the CT's {tuple(shape)}")
        return torch.from_numpy(mask)[None]

    def input_spec(self, view_quantiles: bool = True) -> InputSpec:
        """What a model trained on this data expects (stored in checkpoints for evaluation and predict.py).

        Views (names, angles, shape, radiograph kind, normalisation and scale) and the CT grid (size, field of
        view, HU window) that the [0, 1] output volumes live on. ``view_quantiles``: the split's clean views'
        distribution per view name, which predict.py matches a clinical radiograph's intensities to
        (`x2ct.data.radiograph_fit.dataset_view_quantiles`; it reads up to 64 patients' views: ``view_quantiles=False``
        leaves it None where only the rest is needed).
        """
        from x2ct.data.radiograph_fit import dataset_view_quantiles

        angles = tuple(float(self.geometry.angles_deg[i]) for i in self.view_indices)
        return InputSpec(
            protocol=self.manifest.get("protocol"), views=tuple(self.view_names), angles_deg=angles,
            view_shape=tuple(int(n) for n in self.geometry.detector_shape), radiograph=self.radiograph,
            normalisation=self.normalisation, scale=None if self.view_scale is None else float(self.view_scale),
            hu_window=tuple(float(v) for v in self.hu_window),
            ct_size=tuple(int(n) for n in self.manifest["ct"]["size"]),
            ct_fov_mm=tuple(float(v) for v in self.manifest["ct"]["fov_mm"]),
            mu_water=float(self.manifest["mu_water"]), geometry=self.geometry.with_angles(list(angles)),
            view_quantiles=dataset_view_quantiles(self) if view_quantiles else None)

    def ct(self, index: int) -> torch.Tensor:
        """Only the CT of item ``index``, ``(1, D, H, W)`` in [0, 1]: no views are read or rendered."""
        return self._normalised(self._load_ct(self.patient_ids[index]))

    def _normalised(self, ct) -> torch.Tensor:
        return torch.from_numpy(window_normalise(ct.hu, self.hu_window).astype(np.float32))[None]

    def _load_ct(self, patient_id: str):
        from x2ct.data.readers import read_nifti

        path = self.layout.ct(patient_id)
        if not path.exists():
            raise DatasetError(f"{path}: CT file missing for patient {patient_id}")
        return read_nifti(path)

    def _load_drr(self, patient_id: str) -> np.ndarray:
        path = self.layout.drr(patient_id)
        if not path.exists():
            raise DatasetError(f"{path}: views file missing for patient {patient_id}")
        try:
            drr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DatasetError(f"{path}: unreadable views file ({err})") from err
        expected = (len(self.manifest["views"]["names"]), *self.geometry.detector_shape)
        if drr.shape != expected:
            raise DatasetError(f"{path}: views have shape {drr.shape}, expected {expected} "
                               f"(views {self.manifest['views']['names']}); a view is missing or the file is stale")
        # the whole file, not only the selected views: a damaged file must not pass because a view went unused
        finite = np.isfinite(drr)
        if not finite.all():
            names = self.manifest["views"]["names"]
            damaged = [names[v] for v in range(len(drr)) if not finite[v].all()]
            raise DatasetError(f"{path}: {int(finite.size - finite.sum())} NaN or infinite line integrals in "
                               f"view(s) {damaged} of patient {patient_id}; the data set is damaged (python "
                               f"verify.py {self.layout.root} lists every such file; prepare it again)")
        return drr


def _read_split(path: Path) -> list[str]:
    if not path.exists():
        raise DatasetError(f"{path}: split file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _select_views(views: Sequence[str | int] | None, names: list[str], manifest: Path) -> list[int]:
    if views is None:
        return list(range(len(names)))
    if len(views) == 0:
        raise ValueError("views is empty: select at least one view (or None for all)")
    indices = []
    for view in views:
        if isinstance(view, str):
            if view.lower() not in names:
                raise DatasetError(f"view {view!r} is not in the data set ({manifest}): it has {names}")
            indices.append(names.index(view.lower()))
        else:
            if not 0 <= int(view) < len(names):
                raise DatasetError(f"view index {view} out of range: the data set ({manifest}) has {len(names)} "
                                   f"views {names}")
            indices.append(int(view))
    return indices
