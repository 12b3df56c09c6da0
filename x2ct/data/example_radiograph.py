"""The real example chest radiograph: fetched once from the pydicom-data wheel on PyPI (MIT licence) into a folder.

The wheel holds pydicom's test files, among them the NEMA WG04 compression test set (`RG1_UNCR.dcm`: an adult PA
chest computed radiograph, Philips Thoravision, 1955 x 1841 pixels, 15 bits stored, MONOCHROME1, PixelSpacing
[0, 0], DistanceSourceToDetector 1996 mm, PatientOrientation L\\F; anonymised, patient name
"CompressedSamples^RG1"). We download the wheel with pip (no dependencies, no install), copy that file and the
licence out of it, and leave the 34 MB wheel behind.

    python -m x2ct.data.example_radiograph [--dest DIR] [--wheel WHEEL]

``--wheel``: a pydicom_data wheel already on disk (e.g. from ``pip download --no-deps pydicom-data==1.0.0`` on
a machine with network), for offline machines. Where it lives: ``--dest`` / ``dest_dir``, else
``$X2CT_EXAMPLE_RADIOGRAPH_DIR``, else ``data/example_radiograph`` (relative to the working directory).
"""

from __future__ import annotations

import sys
from pathlib import Path

from x2ct.data.wheel_files import WheelFiles

RADIOGRAPH_NAME = "RG1_UNCR.dcm"
EXAMPLE_RADIOGRAPH = WheelFiles("pydicom-data", "1.0.0", {f"data_store/data/{RADIOGRAPH_NAME}": RADIOGRAPH_NAME},
                                "LICENSE-pydicom-data.txt", "X2CT_EXAMPLE_RADIOGRAPH_DIR",
                                Path("data/example_radiograph"))


def main(argv: list[str] | None = None) -> int:
    return EXAMPLE_RADIOGRAPH.main(argv, "x2ct.data.example_radiograph", "example radiograph")


if __name__ == "__main__":
    sys.exit(main())
