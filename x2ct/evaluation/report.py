"""``report.md``: an evaluation a reader can put beside a paper's table, with each number's definition.

Three tables, never mixed: the true 3D metrics (what x2ct reports), the same per region, and the X2CT-GAN
metrics (what most published X-ray-to-CT tables use; several dB higher for the same volumes). Then
the mean-volume reference, the definitions, and one line per patient with a link to its figure.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from x2ct.atomic_io import write_text_atomic
from x2ct.data.regions import REGIONS

MAIN_METRICS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "psnr_hu": "PSNR over the HU window (dB)",
                "mae_hu": "MAE (HU)"}
SCANNED_METRICS = {f"scanned_{key}": label for key, label in MAIN_METRICS.items()}
REGION_METRICS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae_hu": "MAE (HU)"}
X2CT_GAN_METRICS = {"x2ct_gan_psnr_3d": "PSNR 3D, [0, 2500] / peak 4095 (dB)",
                    "x2ct_gan_psnr_slice": "PSNR, slice average over 3 axes (dB)",
                    "x2ct_gan_ssim_slice": "SSIM, 2D slices averaged over 3 axes",
                    "x2ct_gan_mae": "MAE on the [0, 2500] scale"}


def write_evaluation_report(path: str | os.PathLike, rows: list[dict[str, Any]],
                            summary: dict[str, dict[str, float]], context: dict[str, Any],
                            definitions: dict[str, str]) -> Path:
    """Write the Markdown report atomically; ``summary`` as from ``x2ct.evaluation.summary.summarise``."""
    lines = [
        f"# Evaluation: {Path(context['checkpoint']).name} on the {context['split']} split",
        "",
        f"- checkpoint: `{context['checkpoint']}` (epoch {context['epoch'] + 1}, {context['weights']} weights)",
        f"- model: `{context['model']}`",
        f"- data: `{context['data_root']}`, split `{context['split']}`, {context['patients']} patients"
        + (" (**limited to the first patients: not for reporting**)" if context.get("limited") else ""),
        f"- views: {', '.join(context['views'])}; HU window {context['hu_window']}",
        f"- evaluated {datetime.fromtimestamp(context['time']).strftime('%Y-%m-%d %H:%M')}",
        "",
        *_true_3d_tables(summary),
    ]
    if "ref_psnr" in summary:
        prefix = "scanned_" if _scanned_headline(summary) else ""
        ref, ours = summary[f"ref_{prefix}psnr"], summary[f"{prefix}psnr"]
        where = "over the scanned voxels" if prefix else "over the whole volume"
        lines += ["", f"Mean training volume (predict-the-average reference), {where}: PSNR {_pm(ref)} dB, SSIM "
                      f"{_pm(summary[f'ref_{prefix}ssim'], 4)}; the model is {ours['mean'] - ref['mean']:+.2f} dB "
                      "above it."]
    region_rows = {f"{region}_{metric}": f"{region}: {label}" for region in REGIONS
                   for metric, label in REGION_METRICS.items() if f"{region}_{metric}" in summary}
    if region_rows:
        lines += ["", "## Per region", "", *_table(summary, region_rows)]
        if any(summary[key]["n"] < context["patients"] for key in region_rows):
            # the evaluator allows NaN only here (no such region); say so rather than let n differ unexplained
            lines += ["", f"n below {context['patients']}: the other patients' region maps hold no such region "
                          "(their value is NaN and left out of that row)."]
    if any(k in summary for k in X2CT_GAN_METRICS):
        lines += ["", "## X2CT-GAN metrics (for comparison with published tables only)", "",
                  "Published X-ray-to-CT results (X2CT-GAN and most work that compares with it) use these "
                  "definitions. They are not the true 3D figures above: the PSNR is about 4.3 dB higher by "
                  "construction (peak 4095 over a [0, 2500] range), and the SSIM averages 2D slices.", "",
                  *_table(summary, X2CT_GAN_METRICS)]
    lines += ["", "## Definitions", "", *[f"- `{name}`: {text}" for name, text in definitions.items()],
              "- mean +- std: over patients (sample std); 95% interval: 2.5th-97.5th percentile of the patients' "
              "values (their spread, not a confidence interval of the mean)",
              "", "## Per patient", ""]
    scanned = "scanned_psnr" in summary
    lines += ["| patient | PSNR (dB) | SSIM | MAE (HU) |" + (" scanned PSNR (dB) | scanned share |" if scanned else "")
              + " figure |", "|---|---|---|---|" + ("---|---|" if scanned else "") + "---|"]
    for row in rows:
        figure = f"[png]({row['figure']})" if "figure" in row else "-"
        extra = f" {row['scanned_psnr']:.2f} | {row['scanned_fraction']:.3f} |" if scanned else ""
        lines.append(f"| {row['patient_id']} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['mae_hu']:.1f} |{extra} "
                     f"{figure} |")
    return write_text_atomic(path, "\n".join(lines) + "\n")


def _scanned_headline(summary: dict[str, dict[str, float]]) -> bool:
    """Scanned-voxel figures lead where some voxels were not scanned."""
    fraction = summary.get("scanned_fraction")
    return fraction is not None and fraction["min"] < 1.0


def _true_3d_tables(summary: dict[str, dict[str, float]]) -> list[str]:
    """The true 3D metrics: over the scanned voxels first where they differ from the whole volume."""
    if not _scanned_headline(summary):
        note = (["", "Every voxel of these patients was scanned: the scanned-voxel figures equal these."]
                if "scanned_fraction" in summary else
                ["", "The data set stores no scanned-voxel masks (prepared by an older x2ct): padding is scored as "
                     "air."])
        return ["## True 3D metrics", "", *_table(summary, MAIN_METRICS), *note]
    fraction = summary["scanned_fraction"]
    return ["## True 3D metrics over the scanned voxels (the headline)", "",
            f"Only {fraction['mean']:.1%} of the grid's voxels were scanned on average (min {fraction['min']:.1%}): "
            "the rest lie outside the source CT's extent or its reconstruction circle and hold padding (air), "
            "which a model is not charged for here.", "",
            *_table(summary, SCANNED_METRICS), "",
            "## True 3D metrics over the whole volume (padding scored as air)", "",
            *_table(summary, MAIN_METRICS)]


def _table(summary: dict[str, dict[str, float]], metrics: dict[str, str]) -> list[str]:
    out = ["| metric | mean +- std | median | 95% interval | n |", "|---|---|---|---|---|"]
    for key, label in metrics.items():
        if key not in summary:
            continue
        s = summary[key]
        digits = 4 if "ssim" in key else 2
        out.append(f"| {label} | {_pm(s, digits)} | {_f(s['median'], digits)} | "
                   f"{_f(s['ci95_low'], digits)} - {_f(s['ci95_high'], digits)} | {s['n']} |")
    return out


def _pm(stats: dict[str, float], digits: int = 2) -> str:
    return f"{_f(stats['mean'], digits)} +- {_f(stats['std'], digits)}"


def _f(value: float, digits: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
