"""Where things live inside a prepared data set folder; `prepare`, the dataset and `verify` all read this.

::

    <root>/
      dataset.json               protocol, geometry, view names, normalisation, patient list (written last)
      splits/{train,val,test}.txt  one patient id per line
      patients/<id>/ct.nii.gz    preprocessed CT in HU (float32, RAS affine with the grid's true spacing)
      patients/<id>/drr.npy      (V, rows, cols) float32 line integrals, in the view order of dataset.json
      patients/<id>/regions.nii.gz  optional: uint8 region map (lungs 1, bone 2, heart 3; x2ct.data.regions) on
                                    the CT's grid, when the source has labels (phantoms, the example CT)
      patients/<id>/scanned.nii.gz  uint8 1 where the grid voxel was scanned, 0 where preparation padded it with
                                    air (outside the scan's extent or the reconstruction circle; x2ct.data.scanned);
                                    absent in data sets prepared before masks were stored
      patients/<id>/meta.json    source file and checksum, geometry, HU window, checksums of the files above
      failures.json              only when some patients failed to prepare
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


class DatasetLayout:
    """Paths of one prepared data set."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "dataset.json"

    @property
    def failures(self) -> Path:
        return self.root / "failures.json"

    @property
    def patients_dir(self) -> Path:
        return self.root / "patients"

    def split_file(self, split: str) -> Path:
        return self.root / "splits" / f"{split}.txt"

    def patient_dir(self, patient_id: str) -> Path:
        return self.patients_dir / patient_id

    def ct(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "ct.nii.gz"

    def drr(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "drr.npy"

    def regions(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "regions.nii.gz"

    def scanned(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "scanned.nii.gz"

    def meta(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "meta.json"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: str | os.PathLike) -> str:
    """One checksum for a folder of files (a DICOM series): names and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
