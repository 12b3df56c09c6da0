"""Evaluate a checkpoint on a split of a prepared data set: per-patient metrics, volumes, figures, a summary.

One patient at a time (a test set of any size streams through bounded memory); under torchrun every rank takes
every ``world_size``-th patient and the metric rows are gathered on rank 0, which writes the summary. Per
patient the prediction is written as NIfTI with the target's affine and a comparison figure; at the end
``per_patient.{csv,json}``, ``summary.{json,csv}`` and ``report.md`` (see ``x2ct.evaluation.report``).

Metrics per patient (definitions in ``METRIC_DEFINITIONS``, written into summary.json and the report):

- the true 3D figures: ``psnr`` and ``ssim`` on the [0, 1] volumes (the HU window mapped linearly, as the model
  sees them), ``psnr_hu`` and ``mae_hu`` in HU against the stored target without clipping;
- over the scanned voxels only (`x2ct.data.scanned`; the data set stores the masks): ``scanned_psnr``,
  ``scanned_ssim``, ``scanned_psnr_hu``, ``scanned_mae_hu`` and ``scanned_fraction``; the headline wherever some
  voxels were not scanned (a real CT shorter than the grid, the corners outside its reconstruction circle);
- per region when the data set has region maps (lungs, bone, heart): ``<region>_psnr``, ``<region>_ssim``,
  ``<region>_mae_hu``;
- the X2CT-GAN metrics, labelled ``x2ct_gan_*`` (see ``x2ct.evaluation.published_metrics``);
- ``ref_psnr``, ``ref_ssim``: the mean training volume scored the same way, the bar any model must clear.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from x2ct.atomic_io import write_json_atomic
from x2ct.data.clinical_processing import CLINICAL_CHAIN
from x2ct.data.ct_volume import CTVolume
from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.input_spec import InputSpec
from x2ct.data.preprocess import AIR_HU
from x2ct.data.readers import read_nifti
from x2ct.data.reference import MEAN_VOLUME_PATIENTS, mean_volume
from x2ct.data.regions import REGIONS, load_regions
from x2ct.engine.precision import resolve_device
from x2ct.engine.trained_model import TrainedModel, finite_output, load_trained_model
from x2ct.evaluation.published_metrics import x2ct_gan_metrics
from x2ct.evaluation.summary import summarise, write_rows_csv, write_summary
from x2ct.ops.hu_window import denormalise
from x2ct.ops.metrics import mae, psnr, ssim3d, stage_metrics
from x2ct.progress import Progress

METRIC_DEFINITIONS: dict[str, str] = {
    "psnr": "10 log10(1 / MSE) over the whole volume, both volumes in [0, 1] (the data set's HU window mapped "
            "linearly, target clipped to it); equals skimage peak_signal_noise_ratio(data_range=1)",
    "ssim": "3D SSIM on the [0, 1] volumes: Gaussian window sigma 1.5 (11 voxels), K1 0.01, K2 0.03, population "
            "statistics, mean over voxels whose window fits inside the volume; equals skimage "
            "structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)",
    "psnr_hu": "10 log10(W^2 / MSE_HU), W the HU window's width, prediction in HU against the stored target in HU, "
               "not clipped to the window (errors above it count); target values below air (-1000 HU: scanner "
               "padding) count as air",
    "mae_hu": "mean |prediction - target| in HU over the volume, target as for psnr_hu",
    "scanned_*": "psnr, ssim, psnr_hu and mae_hu over the scanned voxels only: grid voxels whose centre lies inside "
                 "the source CT's extent and not on its scanner padding (outside the reconstruction circle); "
                 "scanned SSIM averages the 3D SSIM map over them. The headline where scanned_fraction < 1",
    "scanned_fraction": "share of the grid's voxels that were scanned (1 for phantoms not truncated)",
    "<region>_*": "the same, over the voxels of a region (lungs, bone, heart; a voxel belongs to the region of the "
                  "label at its centre); region SSIM averages the 3D SSIM map over the region",
    "x2ct_gan_psnr_3d": "X2CT-GAN metrics: volumes rescaled to [0, 2500] and truncated to integers, PSNR with peak "
                        "4095 over the volume (about 4.29 dB above psnr)",
    "x2ct_gan_psnr_slice": "X2CT-GAN metrics: the same PSNR per 2D slice (100 dB for an exact slice), averaged "
                           "over slices and the 3 axes; _d/_h/_w: one axis",
    "x2ct_gan_ssim_slice": "X2CT-GAN metrics: 2D SSIM (skimage defaults: 7x7 uniform window, sample covariance) "
                           "per slice of the [0, 1] volumes (data_range 1, as their test script), averaged over "
                           "slices and the 3 axes; _d/_h/_w: one axis",
    "x2ct_gan_mae": "X2CT-GAN metrics: mean absolute difference on the [0, 2500] integer scale",
    "psnr_stage<k>, ssim_stage<k>": "a cascade's (model=multires) stage k volume against the target area-averaged "
                                     "to its size (ssim where the 11-voxel window fits)",
    "ref_psnr, ref_ssim": "psnr and ssim of the mean CT of the model's training split, over its first "
                          f"{MEAN_VOLUME_PATIENTS} patients at most (predict-the-average reference)",
}


# --view-processing: what the views go through before the model sees them (none: the clean DRRs)
VIEW_PROCESSING = {"none": None, "clinical": CLINICAL_CHAIN}
VIEW_PROCESSING_DEFINITION = (
    "every input view was passed through the fixed clinical-style chain of x2ct/data/clinical_processing.py "
    "(scatter, heel effect, detector blur, quantum and electronic noise, multi-scale contrast enhancement and an "
    "S-shaped tone curve, shutters, a side marker; every value in summary.json's context.view_processing_chain) "
    "before the model saw it; the target CT is unchanged")


@dataclass
class EvaluationSettings:
    """What to evaluate and what to write (``evaluate.py``'s command line)."""

    checkpoint: Path
    data_root: Path | None = None  # default: the data.root saved in the checkpoint's config
    data_config: str | None = None  # instead of data_root: a conf/data/ config, prepared if missing
    split: str = "test"
    out_dir: Path | None = None  # default: <run>/evaluation/<checkpoint>_<split>
    device: str = "auto"
    weights: str = "auto"
    save_volumes: bool = True
    save_figures: bool = True
    limit: int | None = None  # first N patients only (quick looks; never for reported numbers)
    views: list[str] | None = None  # other views than the model was trained on (a model that takes any number)
    num_views: int | None = None  # or: N views evenly spread over 180 degrees (as data.num_views)
    reference: bool = True  # score the mean training volume too
    wandb: bool = False
    # "clinical": every view through the fixed clinical-style chain (x2ct/data/clinical_processing.py) first
    view_processing: str = "none"


@dataclass
class EvaluationResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]


def default_out_dir(trained: TrainedModel, split: str, views: list[str] | None = None,
                    view_processing: str = "none") -> Path:
    """``<run>/evaluation/<checkpoint>_<split>``, with ``_<N>views_<names>`` when evaluated on other views than
    the model was trained on and ``_<view_processing>`` when the views were processed."""
    name = f"{trained.path.stem}_{split}"
    if views is not None and list(views) != trained.view_names:
        name += f"_{len(views)}views_{'-'.join(views)}"
    if view_processing != "none":
        name += f"_{view_processing}"
    return trained.run_dir / "evaluation" / name


def patient_metrics(pred: torch.Tensor, target: torch.Tensor, target_hu: torch.Tensor,
                    hu_window: tuple[float, float], regions: torch.Tensor | None = None,
                    reference: torch.Tensor | None = None, scanned: torch.Tensor | None = None) -> dict[str, float]:
    """All metrics of one patient; ``pred``, ``target`` ``(D, H, W)`` in [0, 1], ``target_hu`` ``(D, H, W)`` in HU,
    ``regions`` ``(D, H, W)`` integer ids of ``REGIONS`` (or None), ``reference`` the mean volume in [0, 1],
    ``scanned`` ``(D, H, W)`` bool, the scanned voxels (None: the data set stores no mask; no scanned_* metrics)."""
    width = float(hu_window[1] - hu_window[0])
    pred_hu = denormalise(pred.double(), hu_window)
    # nothing attenuates less than air: values below it are scanner padding (e.g. -2048 outside the reconstruction
    # circle of the example CT), not anatomy a model should be charged for
    target_hu = target_hu.double().clamp(min=AIR_HU)
    row = {"psnr": psnr(pred, target).item(), "ssim": ssim3d(pred, target).item(),
           "psnr_hu": psnr(pred_hu, target_hu, data_range=width).item(), "mae_hu": mae(pred_hu, target_hu).item()}
    if scanned is not None:
        row |= {"scanned_psnr": psnr(pred, target, mask=scanned).item(),
                "scanned_ssim": ssim3d(pred, target, mask=scanned).item(),
                "scanned_psnr_hu": psnr(pred_hu, target_hu, data_range=width, mask=scanned).item(),
                "scanned_mae_hu": mae(pred_hu, target_hu, mask=scanned).item(),
                "scanned_fraction": scanned.double().mean().item()}
    if regions is not None:
        for name, label in REGIONS.items():
            mask = regions == label
            row[f"{name}_psnr"] = psnr(pred, target, mask=mask).item()
            row[f"{name}_ssim"] = ssim3d(pred, target, mask=mask).item()
            row[f"{name}_mae_hu"] = mae(pred_hu, target_hu, mask=mask).item()
    row.update({f"x2ct_gan_{k}": float(v) for k, v in x2ct_gan_metrics(pred, target).items()})
    if reference is not None:
        row["ref_psnr"] = psnr(reference, target).item()
        row["ref_ssim"] = ssim3d(reference, target).item()
        if scanned is not None:
            row["ref_scanned_psnr"] = psnr(reference, target, mask=scanned).item()
            row["ref_scanned_ssim"] = ssim3d(reference, target, mask=scanned).item()
    return row


def evaluate(settings: EvaluationSettings) -> EvaluationResult | None:
    """Run the evaluation; returns the result on rank 0 (None on other ranks)."""
    from x2ct.engine.distributed import (
        barrier,
        cleanup_distributed,
        gather_objects,
        hold_folder_on_main,
        init_distributed,
    )

    dist = init_distributed()
    succeeded = False
    lock = None
    try:
        device = resolve_device(settings.device, dist, key="--device")
        trained = load_trained_model(settings.checkpoint, device=device, weights=settings.weights)
        if settings.data_config is not None:
            settings.data_root = prepared_data_root(settings.data_config)
        dataset, hu_window = _dataset(trained, settings)
        out_dir = (Path(settings.out_dir) if settings.out_dir
                   else default_out_dir(trained, settings.split, dataset.view_names, settings.view_processing))
        # one evaluation per output folder: another process writing it is named and refused (FolderInUseError)
        lock = hold_folder_on_main(out_dir, "evaluation folder")
        count = len(dataset) if settings.limit is None else min(settings.limit, len(dataset))
        if count == 0:
            raise ValueError(f"the {settings.split} split of {dataset.layout.root} is empty: nothing to evaluate")
        reference = _reference_volume(dataset, trained) if settings.reference else None
        if not dataset.has_scanned_masks and dist.is_main:
            print(f"{dataset.layout.root} stores no scanned-voxel masks (prepared by an older x2ct): every voxel is "
                  "scored, padding as air, and no scanned_* metrics are written; prepare it again to get them",
                  flush=True)
        mine = list(range(dist.rank, count, dist.world_size))
        rows = _evaluate_patients(trained, dataset, mine, hu_window, reference, out_dir, settings, device,
                                  progress=dist.is_main)
        rows = [row for part in gather_objects(rows) for row in part]
        result = None
        if dist.is_main:
            order = {pid: i for i, pid in enumerate(dataset.patient_ids)}
            rows.sort(key=lambda r: order[r["patient_id"]])
            result = _write_results(rows, out_dir, trained, dataset, settings)
            if settings.wandb:
                _log_wandb(result, trained, settings)
        succeeded = True
        return result
    finally:
        if succeeded:
            barrier()  # ranks leave the group together (see x2ct.engine.trainer.train)
        cleanup_distributed()
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------------------------- internals


def prepared_data_root(name: str) -> Path:
    """The root of data config ``conf/data/<name>.yaml``, prepared (by rank 0) if it does not exist yet."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from x2ct.config_files import CONF_DIR, compose_config
    from x2ct.data.ensure import ensure_dataset
    from x2ct.engine.distributed import run_on_main_then_wait

    try:
        cfg = compose_config("train", [f"data={name}"])
    except (MissingConfigException, ConfigCompositionException) as err:
        choices = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
        raise ValueError(f"--data {name}: no such data config in {CONF_DIR}/data (choices: {choices})") from err
    return ensure_dataset(cfg.data, partial(run_on_main_then_wait, timeout_s=60.0 * cfg.trainer.data_wait_timeout_min))


def _dataset(trained: TrainedModel, settings: EvaluationSettings) -> tuple[PatientDRRDataset, tuple[float, float]]:
    data_cfg = trained.config.get("data", {})
    root = settings.data_root or data_cfg.get("root")
    if root is None:
        raise ValueError(f"checkpoint {trained.path} names no data set (data.root); pass --data-root")
    if not (Path(root) / "dataset.json").exists():
        raise FileNotFoundError(f"data set {root} (from {'--data-root' if settings.data_root else 'the checkpoint'}"
                                f") has no dataset.json; pass --data-root with the prepared data set to evaluate on")
    if settings.views is not None and settings.num_views is not None:
        raise ValueError(f"give --views ({settings.views}) or --num-views ({settings.num_views}), not both")
    views = trained.view_names if settings.views is None and settings.num_views is None else settings.views
    if settings.view_processing not in VIEW_PROCESSING:
        raise ValueError(f"--view-processing {settings.view_processing!r}: expected one of {list(VIEW_PROCESSING)}")
    try:
        dataset = PatientDRRDataset(root, settings.split, views=views, num_views=settings.num_views,
                                    radiograph=data_cfg.get("radiograph", "log"),
                                    view_effects=VIEW_PROCESSING[settings.view_processing])
    except ValueError as err:
        raise ValueError(f"{err} (views for the model of {trained.path})") from err
    data_spec = dataset.input_spec(view_quantiles=False)
    model_spec = trained.input_spec or _spec_from_config(trained, data_spec)
    reasons = model_spec.compatible_with(data_spec, any_views=trained.model.any_view_count)
    if reasons:
        raise ValueError(f"data set {root} does not fit the model of {trained.path} "
                         f"({trained.config['model']['_target_']}): " + "; ".join(reasons))
    if (model_spec.normalisation, model_spec.scale) != (data_spec.normalisation, data_spec.scale):
        # another data set (e.g. the real CT for a phantom-trained model): its line integrals are scaled as the
        # model's training views were, not by that data set's own maximum
        print(f"views of {root} are normalised as in training ({model_spec.normalisation}, scale "
              f"{model_spec.scale}), not by the data set's own {data_spec.normalisation} (scale {data_spec.scale})",
              flush=True)
        dataset.normalisation, dataset.view_scale = model_spec.normalisation, model_spec.scale
    return dataset, tuple(float(v) for v in dataset.hu_window)


def _spec_from_config(trained: TrainedModel, data_spec: InputSpec) -> InputSpec:
    """What a checkpoint written before input specs were stored says of its inputs, from its model config: the
    views and the sizes (the data set's preparation is taken as the model's)."""
    model_cfg = trained.config["model"]
    return replace(data_spec, views=tuple(trained.view_names), angles_deg=tuple(model_cfg["view_angles_deg"]),
                   view_shape=(int(model_cfg["view_size"]),) * 2, ct_size=(int(model_cfg["volume_size"]),) * 3)


def _reference_volume(dataset: PatientDRRDataset, trained: TrainedModel) -> torch.Tensor | None:
    """The mean CT of the model's own training split (the evaluated data set's, if the training data are not
    here); None when neither has training patients."""
    trained_on = trained.config.get("data", {}).get("root")
    root = trained_on if trained_on and (Path(trained_on) / "dataset.json").exists() else dataset.layout.root
    train = PatientDRRDataset(root, "train", views=trained.view_names)
    if not len(train) or train.manifest["ct"]["size"] != dataset.manifest["ct"]["size"]:
        return None
    return mean_volume(train)[0].double()


@torch.no_grad()
def _evaluate_patients(trained, dataset, indices, hu_window, reference, out_dir, settings, device,
                       progress: bool) -> list[dict[str, Any]]:
    rows = []
    bar = Progress(total=len(indices), desc=f"evaluate {settings.split}", enabled=progress,
                   log_every=max(1, len(indices) // 10))
    for index in indices:
        item = dataset[index]
        pid = item["patient_id"]
        ct = read_nifti(dataset.layout.ct(pid))
        regions_path = dataset.layout.regions(pid)
        regions = torch.from_numpy(load_regions(regions_path)) if regions_path.exists() else None
        scanned = item["scanned"][0] if dataset.has_scanned_masks else None
        views = item["views"][None].to(device)
        # a cascade also gives its earlier stages, scored at their own size against the area-averaged target
        angles = item["angles_deg"][None]
        stages = trained.model.stage_outputs(views, angles_deg=angles)
        stages = [finite_output(stage, trained.path, f"patient {pid} ({dataset.layout.patient_dir(pid)})")
                  for stage in stages]
        pred = stages[-1].float().clamp(0, 1)[0, 0].cpu().double()
        target = item["ct"][0].double()
        target_hu = np.maximum(ct.hu, np.float32(AIR_HU))  # as patient_metrics counts it (figure's error maps)
        row = {"patient_id": pid, **patient_metrics(pred, target, torch.from_numpy(target_hu), hu_window, regions,
                                                   reference, scanned)}
        row.update({name: value.item() for name, value in stage_metrics(
            [stage.float().clamp(0, 1).cpu().double() for stage in stages[:-1]], target[None, None]).items()})
        _check_metrics(row, trained.path)
        pred_hu = denormalise(pred.float().numpy(), hu_window)
        if settings.save_volumes:
            volume = CTVolume(hu=pred_hu, spacing=ct.spacing, origin=ct.origin, source=str(trained.path))
            row["volume"] = str(volume.save_nifti(out_dir / "volumes" / f"{pid}.nii.gz").relative_to(out_dir))
        if settings.save_figures:
            from x2ct.evaluation.figures import build_comparison_figure, save_figure

            title = (f"{pid}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, MAE {row['mae_hu']:.0f} HU "
                     f"({trained.path.name}, {settings.split})")
            if row.get("scanned_fraction", 1.0) < 1.0:
                title += f"; scanned voxels ({row['scanned_fraction']:.0%}): PSNR {row['scanned_psnr']:.2f} dB"
            figure = build_comparison_figure(item["views"][:, 0].numpy(), dataset.view_names, pred_hu, target_hu,
                                             spacing_mm=ct.spacing, hu_window=hu_window, title=title,
                                             scanned=None if scanned is None else scanned.numpy())
            path = save_figure(out_dir / "figures" / f"{pid}.png", figure)
            row["figure"] = str(path.relative_to(out_dir))
        rows.append(row)
        bar.update(1, psnr=f"{row['psnr']:.2f}")
    bar.close()
    return rows


def _check_metrics(row: dict[str, Any], checkpoint: Path) -> None:
    """Refuse a NaN whole-volume metric: the summary would skip it while the patient still counts, so the means
    and their n would silently cover fewer patients than evaluated. Only a region metric may be NaN (the patient
    has no such region; the report's n shows it)."""
    regional = tuple(f"{name}_" for name in REGIONS)
    bad = [key for key, value in row.items()
           if key != "patient_id" and not key.startswith(regional) and math.isnan(value)]
    if bad:
        raise ValueError(f"checkpoint {checkpoint}, patient {row['patient_id']}: metric(s) {bad} are NaN although "
                         "the prediction and the target are finite")


def _write_results(rows, out_dir: Path, trained: TrainedModel, dataset: PatientDRRDataset,
                   settings: EvaluationSettings) -> EvaluationResult:
    from x2ct.evaluation.report import write_evaluation_report

    numeric = [k for k in rows[0] if k not in ("patient_id", "volume", "figure")]
    summary = summarise(rows, numeric)
    context = {
        "checkpoint": str(trained.path), "epoch": trained.epoch, "weights": trained.weights,
        "model": trained.config["model"]["_target_"], "data_root": str(dataset.layout.root),
        "split": settings.split, "patients": len(rows), "limited": settings.limit is not None,
        "hu_window": list(dataset.hu_window), "views": dataset.view_names, "time": time.time(),
        "view_normalisation": [dataset.normalisation, dataset.view_scale],
        "scanned_masks": dataset.has_scanned_masks, "view_processing": settings.view_processing,
    }
    definitions = dict(METRIC_DEFINITIONS)
    if settings.view_processing == "clinical":
        context["view_processing_chain"] = CLINICAL_CHAIN.to_dict()
        definitions["view_processing"] = VIEW_PROCESSING_DEFINITION
    write_rows_csv(rows, out_dir / "per_patient.csv")
    write_json_atomic(out_dir / "per_patient.json", rows)
    # the JSON summary carries what was evaluated and the definitions beside the numbers
    write_summary(summary, out_dir / "summary.json", out_dir / "summary.csv",
                  extra={"context": context, "definitions": definitions})
    write_evaluation_report(out_dir / "report.md", rows, summary, context, definitions)
    return EvaluationResult(out_dir=out_dir, rows=rows, summary=summary)


def _log_wandb(result: EvaluationResult, trained: TrainedModel, settings: EvaluationSettings) -> None:
    """The per-patient table, the summary and the figures, as a W&B run of its own (job type evaluation)."""
    from PIL import Image

    from x2ct.engine.wandb_logger import WandbLogger

    logger_cfg = trained.config.get("logger", {})
    mode = os.environ.get("WANDB_MODE", logger_cfg.get("mode", "offline"))
    run_name = trained.run_dir.name
    with WandbLogger.create({"checkpoint": str(trained.path), "split": settings.split, "train": trained.config},
                            project=logger_cfg.get("project", "x2ct"), entity=logger_cfg.get("entity"),
                            mode=mode, group=run_name, name=f"eval_{run_name}_{trained.path.stem}_{settings.split}",
                            run_dir=result.out_dir, tags=["evaluation"]) as logger:
        logger.log_table(f"{settings.split}/per_patient", result.rows)
        logger.summary({f"{settings.split}/{metric}_{stat}": value for metric, stats in result.summary.items()
                        for stat, value in stats.items() if stat in ("mean", "std", "median")})
        figures = [r for r in result.rows if "figure" in r]
        if figures:
            images = [np.asarray(Image.open(result.out_dir / r["figure"]).convert("RGB")) for r in figures]
            logger.log_images(f"{settings.split}/figures", images, step=0, captions=[r["patient_id"] for r in figures])
