"""Check a prepared data set folder before training on it: counts, shapes, ranges, NaNs, missing views, split
overlap and checksums. Every problem names the file; ``python verify.py DIR`` exits non-zero on any."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from x2ct.data.layout import SPLITS, DatasetLayout, sha256_file

# A preprocessed CT outside this HU range is almost surely corrupt (wrong units or scaling).
PLAUSIBLE_HU = (-2048.0, 4096.0)


@dataclass
class VerifyReport:
    root: Path
    problems: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"data set {self.root}"]
        lines += [f"  {key}: {value}" for key, value in self.summary.items()]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("OK: no problems found")
        return "\n".join(lines)


def verify_dataset(root: str | os.PathLike, checksums: bool = True) -> VerifyReport:
    layout = DatasetLayout(root)
    report = VerifyReport(Path(root))
    if not layout.manifest.exists():
        report.problems.append(f"{layout.manifest}: missing (not a data set made by prepare.py, or it never finished)")
        return report
    manifest = _read_json(layout.manifest, report)
    if manifest is None:
        return report
    try:
        names = manifest["views"]["names"]
        detector = tuple(manifest["geometry"]["detector_shape"])
        ct_size = tuple(manifest["ct"]["size"])
        patients = manifest["patients"]
    except KeyError as err:
        report.problems.append(f"{layout.manifest}: incomplete, no key {err} (not written by prepare.py, or edited)")
        return report
    except TypeError:
        report.problems.append(f"{layout.manifest}: malformed: 'views', 'geometry' and 'ct' must be the objects "
                               "prepare.py writes")
        return report
    if not isinstance(patients, list) or not all(isinstance(p, str) for p in patients):
        report.problems.append(f"{layout.manifest}: 'patients' must be a list of patient ids, got {patients!r:.80}")
        return report
    if not patients:
        report.problems.append(f"{layout.manifest}: lists no patients; there is nothing to train or evaluate on "
                               "(did every patient fail to prepare?)")
    if layout.failures.exists():
        failed = _read_json(layout.failures, report)
        if isinstance(failed, list):
            report.problems.append(f"{layout.failures}: {len(failed)} patient(s) failed during prepare: "
                                   + ", ".join(str(f.get("patient_id", "?")) if isinstance(f, dict) else "?"
                                               for f in failed))

    ct_range, view_range = [np.inf, -np.inf], [np.inf, -np.inf]
    for pid in patients:
        _check_patient(layout, pid, names, detector, ct_size, checksums, report, ct_range, view_range)
    on_disk = sorted(p.name for p in layout.patients_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if layout.patients_dir.exists() else []
    extra = sorted(set(on_disk) - set(patients))
    if extra:
        report.problems.append(f"{layout.patients_dir}: folders not listed in dataset.json: {extra}")

    splits = {}
    for split in SPLITS:
        path = layout.split_file(split)
        if not path.exists():
            report.problems.append(f"{path}: split file missing")
            continue
        try:
            ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            report.problems.append(f"{path}: unreadable ({err})")
            continue
        splits[split] = ids
        unknown = sorted(set(ids) - set(patients))
        if unknown:
            report.problems.append(f"{path}: patients not in the data set: {unknown}")
        if len(set(ids)) != len(ids):
            report.problems.append(f"{path}: lists a patient twice")
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            overlap = sorted(set(splits.get(a, [])) & set(splits.get(b, [])))
            if overlap:
                report.problems.append(f"splits {a} and {b} overlap: {overlap}")
    unassigned = sorted(set(patients) - set().union(*splits.values())) if splits else []
    if unassigned:
        report.problems.append(f"patients in no split: {unassigned}")

    report.summary = {
        "protocol": manifest.get("protocol"),
        "patients": len(patients),
        "splits": {s: len(ids) for s, ids in splits.items()},
        "views": f"{len(names)} x {detector[0]}x{detector[1]} {names}",
        "ct grid": "x".join(map(str, ct_size)),
        "ct HU range": [round(float(v), 1) for v in ct_range] if patients else None,
        "line integral range": [round(float(v), 4) for v in view_range] if patients else None,
        "view normalisation": f"{manifest['views'].get('normalisation')} (scale {manifest['views'].get('scale')})",
    }
    return report


def _read_json(path: Path, report: VerifyReport) -> Any | None:
    """The JSON in ``path``, or None with a problem naming the file (truncated, not JSON, unreadable)."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        report.problems.append(f"{path}: not valid JSON (truncated or corrupt: {err})")
    except OSError as err:
        report.problems.append(f"{path}: unreadable ({err})")
    return None


def _check_patient(layout, pid, names, detector, ct_size, checksums, report, ct_range, view_range) -> None:
    meta_path = layout.meta(pid)
    if not meta_path.exists():
        report.problems.append(f"{meta_path}: missing (patient {pid} listed in dataset.json)")
        return
    meta = _read_json(meta_path, report)  # None: reported, the files are still checked
    recorded = meta.get("checksums") if isinstance(meta, dict) else None
    if meta is not None and not isinstance(recorded, dict):
        report.problems.append(f"{meta_path}: no 'checksums' record (not written by prepare.py, or edited)")
        recorded = None
    files = [("ct.nii.gz", layout.ct(pid)), ("drr.npy", layout.drr(pid))]
    if (recorded is not None and "regions.nii.gz" in recorded) or layout.regions(pid).exists():
        files.append(("regions.nii.gz", layout.regions(pid)))
    if (recorded is not None and "scanned.nii.gz" in recorded) or layout.scanned(pid).exists():
        files.append(("scanned.nii.gz", layout.scanned(pid)))
    for name, path in files:
        if not path.exists():
            report.problems.append(f"{path}: missing")
        elif recorded is None:
            continue
        elif name not in recorded:
            report.problems.append(f"{meta_path}: no checksum for {name}")
        elif checksums:
            try:
                if sha256_file(path) != recorded[name]:
                    report.problems.append(f"{path}: checksum differs from meta.json (file changed or corrupt)")
            except OSError as err:
                report.problems.append(f"{path}: unreadable ({err})")
    if layout.drr(pid).exists():
        try:
            drr = np.load(layout.drr(pid), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            report.problems.append(f"{layout.drr(pid)}: unreadable ({err})")
        else:
            if drr.shape != (len(names), *detector):
                report.problems.append(f"{layout.drr(pid)}: shape {drr.shape}, expected {(len(names), *detector)} "
                                       f"for views {names} (missing view?)")
            if not np.isfinite(drr).all():
                report.problems.append(f"{layout.drr(pid)}: {int((~np.isfinite(drr)).sum())} NaN/inf values")
            elif drr.min() < 0:
                report.problems.append(f"{layout.drr(pid)}: negative line integrals (min {drr.min():.4g})")
            else:
                view_range[0], view_range[1] = min(view_range[0], drr.min()), max(view_range[1], drr.max())
    if layout.ct(pid).exists():
        from x2ct.data.readers import CTReadError, read_nifti

        try:
            ct = read_nifti(layout.ct(pid))
        except CTReadError as err:
            report.problems.append(str(err))
            return
        if ct.shape != ct_size:
            report.problems.append(f"{layout.ct(pid)}: CT shape {ct.shape}, expected {ct_size}")
        if layout.scanned(pid).exists():
            _check_scanned(layout.scanned(pid), ct.shape, report)
        lo, hi = float(ct.hu.min()), float(ct.hu.max())
        if lo < PLAUSIBLE_HU[0] or hi > PLAUSIBLE_HU[1]:
            report.problems.append(f"{layout.ct(pid)}: HU range [{lo:.0f}, {hi:.0f}] outside plausible {PLAUSIBLE_HU}")
        ct_range[0], ct_range[1] = min(ct_range[0], lo), max(ct_range[1], hi)


def _check_scanned(path: Path, shape: tuple[int, ...], report: VerifyReport) -> None:
    """A scanned-voxel mask: readable, 0/1, on the CT's grid, and not empty."""
    from x2ct.data.readers import CTReadError
    from x2ct.data.scanned import load_scanned

    try:
        mask = load_scanned(path)
    except (CTReadError, ValueError) as err:
        report.problems.append(str(err))
        return
    if mask.shape != shape:
        report.problems.append(f"{path}: mask shape {mask.shape}, expected the CT's {shape}")
    elif not mask.any():
        report.problems.append(f"{path}: no voxel of the grid was scanned")
