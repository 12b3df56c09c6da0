"""Build a data set of (X-ray views, CT) pairs from a folder of CT scans or from the phantom generator.

Per patient: read (or generate) -> preprocess onto the grid -> render the views -> write ``ct.nii.gz``,
``drr.npy`` and ``meta.json`` into a folder that appears atomically (a rename), so a crashed or interrupted run
leaves only complete patients behind and a rerun skips them. Patients run in parallel worker processes, which
end on their own when the parent is killed.
One failing patient does not stop the others: failures are collected, listed, and reported to the caller.
See `x2ct.data.layout` for the folder layout.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

import x2ct
from x2ct.atomic_io import atomic_directory, write_json_atomic, write_text_atomic
from x2ct.data.ct_volume import CTVolume
from x2ct.data.layout import FORMAT_VERSION, SPLITS, DatasetLayout, sha256_file, sha256_tree
from x2ct.data.phantom import GENERATORS, generate_chest_phantom
from x2ct.data.preprocess import Preprocessing, crop_or_pad, remove_bed, resample_isotropic, resize_to
from x2ct.data.readers import hu_outside_scale
from x2ct.data.regions import (
    REGIONS,
    legend_region_map,
    phantom_region_map,
    read_structure_legend,
    regions_on_grid,
    save_regions,
)
from x2ct.data.scanned import padding_as_air, save_scanned, scanned_on_grid, scanner_padding
from x2ct.data.views import render_views, resized_geometry, view_names
from x2ct.folder_lock import hold_folder, is_held
from x2ct.physics.geometry import ProjectionGeometry, angles_for_views
from x2ct.progress import Progress

# How often (seconds) a preparation worker checks that its parent still lives (`_exit_with_parent`).
PARENT_POLL_S = 0.5

# Settings left out of prepare_settings.json while at these values, so that a data set prepared before the key
# existed still matches its settings (`_check_same_settings`) and is not prepared again.
SETTINGS_OMITTED_AT = {("source", "generator"): "v1"}

# ----------------------------------------------------------------------------------------------- config schema
# Values live in conf/ (YAML); these schemas give every key a type, so a typo or a wrong type fails at start
# with the key named.


@dataclass
class SourceConfig:
    kind: str  # phantom | folder | example_ct
    name: str
    path: str | None = None  # folder of CT files (kind=folder)
    num_patients: int = 0  # kind=phantom
    seed: int = 0  # kind=phantom: patient i uses a seed derived from (seed, i)
    generator: str = "v1"  # kind=phantom: v1 (the benchmark's chests) | v2 (shoulders, arms, abdomen, tables, ...)
    shape: list[int] | None = None  # kind=phantom: generator grid (D, H, W)
    spacing_mm: list[float] | None = None  # kind=phantom: generator voxel size (D, H, W)
    phantom: dict[str, Any] = field(default_factory=dict)  # kind=phantom: PhantomConfig overrides


@dataclass
class PreprocessConfig:
    spacing_mm: float
    fov_mm: list[float]
    size: list[int]
    hu_window: list[float]
    pad_hu: float
    remove_bed: bool


@dataclass
class GeometryConfig:
    kind: str
    views: list[Any] | None  # names ('pa', 'lateral') or gantry angles in degrees
    num_views: int | None  # instead of views: this many angles spread evenly over arc_deg from 0
    arc_deg: float
    detector_shape: list[int]
    pixel_spacing_mm: list[float]
    source_to_isocenter_mm: float | None
    source_to_detector_mm: float | None
    detector_offset_mm: list[float]


@dataclass
class ProtocolConfig:
    name: str
    description: str
    preprocess: PreprocessConfig
    mu_water: float
    geometry: GeometryConfig
    render_from: str  # grid: the stored CT; fov: the isotropic field of view before resizing
    view_size: list[int] | None  # resize rendered views to (rows, cols)
    view_normalisation: str  # none | per_image_max | global_max | fixed
    view_scale: float | None  # for view_normalisation=fixed


@dataclass
class SplitConfig:
    seed: int
    train: float
    val: float
    test: float


@dataclass
class PrepareConfig:
    source: SourceConfig
    protocol: ProtocolConfig
    output_dir: str
    workers: int  # 0: one per CPU core (at most one per patient)
    split: SplitConfig


def load_prepare_config(cfg: DictConfig | dict) -> PrepareConfig:
    """Validate a composed config against the schema; errors name the offending key."""
    schema = OmegaConf.structured(PrepareConfig)
    merged = OmegaConf.merge(schema, cfg)
    obj: PrepareConfig = OmegaConf.to_object(merged)
    _check_choices(obj)
    return obj


def _check_choices(cfg: PrepareConfig) -> None:
    def one_of(key: str, value: Any, allowed: tuple) -> None:
        if value not in allowed:
            raise ValueError(f"config key {key}={value!r} is not one of {list(allowed)}")

    one_of("source.kind", cfg.source.kind, ("phantom", "folder", "example_ct"))
    one_of("source.generator", cfg.source.generator, tuple(GENERATORS))
    one_of("protocol.render_from", cfg.protocol.render_from, ("grid", "fov"))
    one_of("protocol.view_normalisation", cfg.protocol.view_normalisation,
           ("none", "per_image_max", "global_max", "fixed"))
    if cfg.source.kind == "folder" and not cfg.source.path:
        raise ValueError("config key source.path is required for source.kind=folder (a folder of CT files)")
    if cfg.source.kind == "phantom" and cfg.source.num_patients < 1:
        raise ValueError(f"config key source.num_patients must be >= 1, got {cfg.source.num_patients}")
    if cfg.protocol.view_normalisation == "fixed" and not (cfg.protocol.view_scale or 0) > 0:
        raise ValueError("config key protocol.view_scale must be > 0 when protocol.view_normalisation=fixed")
    fractions = (cfg.split.train, cfg.split.val, cfg.split.test)
    if min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"config keys split.train/val/test must be >= 0 and sum to 1, got {fractions}")


def protocol_geometry(protocol: ProtocolConfig) -> tuple[ProjectionGeometry, list[str]]:
    """The geometry to render with, and a name per view."""
    g = protocol.geometry
    if (g.views is None) == (g.num_views is None):
        raise ValueError("config: set exactly one of protocol.geometry.views and protocol.geometry.num_views")
    views = list(g.views) if g.views is not None else [g.arc_deg * i / g.num_views for i in range(g.num_views)]
    geometry = ProjectionGeometry(
        kind=g.kind, angles_deg=angles_for_views(views), detector_shape=tuple(g.detector_shape),
        pixel_spacing_mm=tuple(g.pixel_spacing_mm), source_to_isocenter_mm=g.source_to_isocenter_mm,
        source_to_detector_mm=g.source_to_detector_mm, detector_offset_mm=tuple(g.detector_offset_mm))
    return geometry, view_names(views)


def preprocessing(protocol: ProtocolConfig) -> Preprocessing:
    p = protocol.preprocess
    return Preprocessing(spacing_mm=p.spacing_mm, fov_mm=tuple(p.fov_mm), size=tuple(p.size),
                         hu_window=tuple(p.hu_window), pad_hu=p.pad_hu, remove_bed=p.remove_bed)


# ---------------------------------------------------------------------------------------------------- patients


@dataclass(frozen=True)
class PatientTask:
    patient_id: str
    path: str | None = None  # CT file or DICOM folder
    seed: int | None = None  # phantom seed


@dataclass
class PrepareReport:
    root: Path
    prepared: list[str]
    skipped: list[str]
    failures: list[dict]
    view_scale: float | None

    @property
    def ok(self) -> bool:
        return not self.failures


def list_patients(source: SourceConfig) -> list[PatientTask]:
    if source.kind == "phantom":
        return [PatientTask(f"phantom_{i:04d}", seed=phantom_seed(source.seed, i)) for i in range(source.num_patients)]
    if source.kind == "example_ct":
        from x2ct.data.example_ct import example_ct_path, fetch_example_ct

        path = example_ct_path() or fetch_example_ct()
        return [PatientTask("example_cxr", path=str(path))]
    from x2ct.data.readers import CTReadError, find_ct_files

    paths = find_ct_files(source.path)
    if not paths:
        raise CTReadError(f"{source.path}: no CT files found (expected .nii/.nii.gz files or DICOM folders)")
    tasks, seen = [], set()
    for p in paths:
        pid = _patient_id(p, Path(source.path))
        if pid in seen:
            raise ValueError(f"{p}: two inputs map to the patient id {pid!r}; rename one of them")
        seen.add(pid)
        tasks.append(PatientTask(pid, path=str(p)))
    return tasks


def phantom_seed(base_seed: int, index: int) -> int:
    """Independent, reproducible seed for phantom patient ``index`` of a data set seeded with ``base_seed``."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def _patient_id(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path != root else Path(path.name)
    name = str(rel).removesuffix(".gz").removesuffix(".nii")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "patient"


def prepare_patient(task: PatientTask, cfg: PrepareConfig, root: Path) -> dict:
    """Build one patient's folder atomically; returns its metadata."""
    layout = DatasetLayout(root)
    ct, source_record, source_regions = _load(task, cfg.source)
    prep = preprocessing(cfg.protocol)
    # a source read from a file was counted (and warned about) by read_ct; a phantom is counted here
    outside = ct.metadata.get("hu_outside_scale") or hu_outside_scale(ct.hu)
    original = {"shape": list(ct.shape), "spacing_mm": list(ct.spacing), "origin_mm": list(ct.origin),
                "hu_outside_scale": outside}
    # scanner padding becomes air before any resampling; the scanned mask remembers where it was
    padding = scanner_padding(ct)
    ct = source_ct = padding_as_air(ct, padding, prep.pad_hu)
    if prep.remove_bed:
        ct = remove_bed(ct, pad_hu=prep.pad_hu)
    fov_ct = crop_or_pad(resample_isotropic(ct, prep.spacing_mm), prep.fov_mm, pad_hu=prep.pad_hu)
    exact = fov_ct.shape == tuple(prep.size) and np.allclose(fov_ct.extent_mm, prep.fov_mm)
    # crop_or_pad keeps whole voxels; resizing with the extent makes the grid span fov_mm exactly
    grid_ct = fov_ct if exact else resize_to(fov_ct, prep.size, extent_mm=prep.fov_mm)
    _check_finite(grid_ct, task)

    regions = regions_on_grid(source_regions, ct, grid_ct) if source_regions is not None else None
    scanned = scanned_on_grid(source_ct, grid_ct, padding)

    geometry, names = protocol_geometry(cfg.protocol)
    render_ct = fov_ct if cfg.protocol.render_from == "fov" else grid_ct
    drr = render_views(render_ct, geometry, cfg.protocol.mu_water, cfg.protocol.view_size).numpy()
    if not np.isfinite(drr).all():
        raise ValueError(f"patient {task.patient_id}: rendered views contain NaN or inf")

    with atomic_directory(layout.patient_dir(task.patient_id)) as tmp:
        grid_ct.save_nifti(tmp / "ct.nii.gz")
        np.save(tmp / "drr.npy", drr.astype(np.float32))
        if regions is not None:
            save_regions(regions, grid_ct, tmp / "regions.nii.gz")
        save_scanned(scanned, grid_ct, tmp / "scanned.nii.gz")
        meta = {
            "patient_id": task.patient_id,
            "source": source_record,
            "original": original,
            "ct": {"shape": list(grid_ct.shape), "spacing_mm": list(grid_ct.spacing),
                   "origin_mm": list(grid_ct.origin), "hu_window": list(prep.hu_window),
                   "hu_range": [float(grid_ct.hu.min()), float(grid_ct.hu.max())]},
            "views": {"names": names, "angles_deg": list(geometry.angles_deg), "shape": list(drr.shape),
                      "max_line_integral": float(drr.max()), "rendered_from": cfg.protocol.render_from},
            "scanned": {"fraction": float(scanned.mean()), "padding_voxels_in_source": int(padding.sum()),
                        "scan_range_z_mm": ct_scan_range_z_mm(source_ct)},
            "checksums": {name: sha256_file(tmp / name)
                          for name in ("ct.nii.gz", "drr.npy", "regions.nii.gz", "scanned.nii.gz")
                          if (tmp / name).exists()},
        }
        if regions is not None:
            meta["regions"] = {name: int((regions == label).sum()) for name, label in REGIONS.items()}
        write_json_atomic(tmp / "meta.json", meta)
    return meta


def _load(task: PatientTask, source: SourceConfig) -> tuple[CTVolume, dict, np.ndarray | None]:
    """The CT, a record of where it came from, and its region map (`x2ct.data.regions`) when the source has one."""
    if task.seed is not None:
        config_type, _ = GENERATORS[source.generator]
        ct, labels = generate_chest_phantom(task.seed, shape=tuple(source.shape), spacing_mm=tuple(source.spacing_mm),
                                            config=config_type(**(source.phantom or {})), with_labels=True)
        record = {"kind": "phantom", "seed": task.seed, "generator": f"x2ct {x2ct.__version__}",
                  "generator_version": source.generator, "shape": list(source.shape),
                  "spacing_mm": list(source.spacing_mm)}
        return ct, record, phantom_region_map(labels)
    from x2ct.data.readers import read_ct

    path = Path(task.path)
    ct = read_ct(path)
    checksum = sha256_tree(path) if path.is_dir() else sha256_file(path)
    record = {"kind": "file", "path": str(path.resolve()), "sha256": checksum}
    regions = _example_ct_regions(path, ct) if source.kind == "example_ct" else None
    return ct, record, regions


def _example_ct_regions(ct_path: Path, ct: CTVolume) -> np.ndarray:
    """The example CT's TotalSegmentator mask (shipped beside it) as a region map on the CT's grid."""
    from x2ct.data.example_ct import MASK_NAME, STRUCTURES_NAME
    from x2ct.data.readers import read_nifti

    mask = read_nifti(ct_path.parent / MASK_NAME)
    if mask.shape != ct.shape or not np.allclose(mask.affine, ct.affine, atol=1e-3):
        raise ValueError(f"{mask.source}: label map grid {mask.shape} does not match its CT {ct_path} {ct.shape}")
    return legend_region_map(np.rint(mask.hu), read_structure_legend(ct_path.parent / STRUCTURES_NAME))


def _check_finite(ct: CTVolume, task: PatientTask) -> None:
    if not np.isfinite(ct.hu).all():
        raise ValueError(f"patient {task.patient_id} ({task.path or 'phantom'}): preprocessed CT has NaN or inf")


def _run_task(task: PatientTask, cfg: PrepareConfig, root: str, threads: int) -> tuple[str, dict | None, str | None]:
    import torch

    previous = torch.get_num_threads()  # in-process (workers=1, or a trainer preparing its data): put it back
    torch.set_num_threads(threads)
    try:
        return task.patient_id, prepare_patient(task, cfg, Path(root)), None
    except Exception as err:  # one bad patient must not stop the others
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return task.patient_id, None, detail
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------- the data set


def make_splits(patient_ids: list[str], split: SplitConfig) -> dict[str, list[str]]:
    """Deterministic split: sort, shuffle with ``split.seed``, cut by the fractions (each split non-empty when
    there are at least three patients and its fraction is positive)."""
    ids = sorted(patient_ids)
    order = np.random.default_rng(split.seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    n = len(ids)
    n_val = round(split.val * n)
    n_test = round(split.test * n)
    if n >= 3:
        n_val = max(n_val, 1 if split.val > 0 else 0)
        n_test = max(n_test, 1 if split.test > 0 else 0)
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    return {"test": sorted(shuffled[:n_test]), "val": sorted(shuffled[n_test:n_test + n_val]),
            "train": sorted(shuffled[n_test + n_val:])}


def prepare_dataset(cfg: PrepareConfig, progress: bool = True, lock_wait_s: float = 0.0) -> PrepareReport:
    """Prepare every patient of ``cfg.source`` under ``cfg.output_dir``; skip those already complete.

    One process prepares a folder at a time (``x2ct.folder_lock``): another one preparing it is waited for up to
    ``lock_wait_s`` (then its patients are complete and skipped here), else refused with ``FolderInUseError``
    naming it.
    """
    root = Path(cfg.output_dir)
    held_before = is_held(root)
    lock = hold_folder(root, "data set", wait_s=lock_wait_s)
    try:
        return _prepare_held(cfg, root, progress)
    finally:
        if not held_before:
            lock.release()


def _prepare_held(cfg: PrepareConfig, root: Path, progress: bool) -> PrepareReport:
    layout = DatasetLayout(root)
    settings = _settings_record(cfg)
    _check_same_settings(layout, settings)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "prepare_settings.json", settings)

    tasks = list_patients(cfg.source)
    todo = [t for t in tasks if not layout.meta(t.patient_id).exists()]
    skipped = [t.patient_id for t in tasks if layout.meta(t.patient_id).exists()]
    workers = cfg.workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)

    prepared, failures = [], []
    bar = Progress(total=len(todo), desc=f"prepare {root.name}", enabled=progress, log_every=max(1, len(todo) // 10))
    if workers == 1:
        results = (_run_task(t, cfg, str(root), threads) for t in todo)
        _collect(results, prepared, failures, bar, tasks)
    else:
        ctx = multiprocessing.get_context("spawn")  # torch's thread pools do not survive fork reliably
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                                    initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_run_task, t, cfg, str(root), threads) for t in todo]
            _collect((f.result() for f in cf.as_completed(futures)), prepared, failures, bar, tasks)
    bar.close()

    complete = sorted(t.patient_id for t in tasks if layout.meta(t.patient_id).exists())
    view_scale = _write_manifest(cfg, layout, complete, settings)
    if failures:
        write_json_atomic(layout.failures, failures)
    elif layout.failures.exists():
        layout.failures.unlink()
    return PrepareReport(root, sorted(prepared), sorted(skipped), failures, view_scale)


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker once the process that started it is gone (re-parented workers see
    another parent id). A killed parent cannot shut its pool down, and its workers would otherwise live on,
    blocked on a task queue whose other end they hold themselves. Polling, not Linux's PR_SET_PDEATHSIG: that
    fires when the *thread* that started the worker ends, which in a pool is not the parent's end."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _collect(results, prepared, failures, bar, tasks) -> None:
    paths = {t.patient_id: t.path for t in tasks}
    for patient_id, _meta, error in results:
        if error is None:
            prepared.append(patient_id)
        else:
            failures.append({"patient_id": patient_id, "source": paths.get(patient_id) or "phantom", "error": error})
            print(f"FAILED {patient_id}: {error}", file=sys.stderr, flush=True)
        bar.update(1, done=len(prepared), failed=len(failures))


def _settings_record(cfg: PrepareConfig) -> dict:
    record = {"source": dataclasses.asdict(cfg.source), "protocol": dataclasses.asdict(cfg.protocol)}
    for (group, key), value in SETTINGS_OMITTED_AT.items():
        if record[group].get(key) == value:
            del record[group][key]
    return record


def ct_scan_range_z_mm(ct: CTVolume) -> list[float]:
    """World z (mm) of the first and last voxel edge of a CT along the body axis: the scanned slab."""
    z0 = ct.origin[2] - ct.spacing[0] / 2
    return [z0, z0 + ct.extent_mm[0]]


def _check_same_settings(layout: DatasetLayout, settings: dict) -> None:
    previous = layout.root / "prepare_settings.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        if old != json.loads(json.dumps(settings)):
            raise ValueError(f"{layout.root} was prepared with other source/protocol settings ({previous}); "
                             "choose another output_dir or delete the folder")


def _write_manifest(cfg: PrepareConfig, layout: DatasetLayout, complete: list[str], settings: dict) -> float | None:
    geometry, names = protocol_geometry(cfg.protocol)
    stored_geometry = resized_geometry(geometry, cfg.protocol.view_size)
    maxima = [json.loads(layout.meta(pid).read_text())["views"]["max_line_integral"] for pid in complete]
    scale = {"none": None, "per_image_max": None, "fixed": cfg.protocol.view_scale,
             "global_max": max(maxima) if maxima else None}[cfg.protocol.view_normalisation]
    splits = make_splits(complete, cfg.split)
    for name in SPLITS:
        write_text_atomic(layout.split_file(name), "".join(f"{pid}\n" for pid in splits[name]))
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_by": f"x2ct {x2ct.__version__}",
        "protocol": cfg.protocol.name,
        "description": cfg.protocol.description,
        "views": {"names": names, "angles_deg": list(geometry.angles_deg),
                  "normalisation": cfg.protocol.view_normalisation, "scale": scale,
                  "stored_as": "line_integral"},
        "geometry": stored_geometry.to_dict(),
        "render_geometry": geometry.to_dict(),
        "regions": dict(REGIONS) if any(layout.regions(pid).exists() for pid in complete) else None,
        "scanned_masks": all(layout.scanned(pid).exists() for pid in complete),
        "ct": {"size": list(cfg.protocol.preprocess.size), "fov_mm": list(cfg.protocol.preprocess.fov_mm),
               "hu_window": list(cfg.protocol.preprocess.hu_window), "stored_as": "HU"},
        "mu_water": cfg.protocol.mu_water,
        "patients": complete,
        "splits": {name: len(splits[name]) for name in SPLITS},
        "split_seed": cfg.split.seed,
        "settings": settings,
    }
    write_json_atomic(layout.manifest, manifest)
    return scale
