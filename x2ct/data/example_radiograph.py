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

import argparse
import os
import sys
from pathlib import Path

from x2ct.data.wheel_files import WheelFiles

PACKAGE = "pydicom-data"
VERSION = "1.0.0"
ENV_VAR = "X2CT_EXAMPLE_RADIOGRAPH_DIR"
DEFAULT_DIR = Path("data/example_radiograph")
RADIOGRAPH_NAME = "RG1_UNCR.dcm"
LICENCE_NAME = "LICENSE-pydicom-data.txt"

# Wheel member -> file name in the destination folder.
WHEEL_FILES = {f"data_store/data/{RADIOGRAPH_NAME}": RADIOGRAPH_NAME}



class ExampleRadiographError(RuntimeError):
    """The example radiograph could not be fetched (pip failed, or the wheel lacks the expected files)."""


WHEEL = WheelFiles(PACKAGE, VERSION, WHEEL_FILES, LICENCE_NAME, ExampleRadiographError)


def example_radiograph_dir(dest_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the radiograph: ``dest_dir``, ``$X2CT_EXAMPLE_RADIOGRAPH_DIR`` or
    data/example_radiograph."""
    if dest_dir is not None:
        return Path(dest_dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def example_radiograph_path(dest_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of the example ``RG1_UNCR.dcm`` if it has been fetched (see `example_radiograph_dir`), else None."""
    folder = example_radiograph_dir(dest_dir)
    return folder / RADIOGRAPH_NAME if WHEEL.is_complete(folder) else None


def fetch_example_radiograph(dest_dir: str | os.PathLike | None = None,
                             wheel: str | os.PathLike | None = None) -> Path:
    """Extract the example radiograph and the licence from the pydicom-data wheel (``wheel``, else downloaded
    with pip); return the radiograph's path. Does nothing if they are already there."""
    folder = example_radiograph_dir(dest_dir)
    if not WHEEL.is_complete(folder):
        WHEEL.fetch(folder, wheel)
    return folder / RADIOGRAPH_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.data.example_radiograph",
                                     description=f"Fetch the example chest radiograph from the {PACKAGE}=={VERSION} "
                                                 "wheel.")
    parser.add_argument("--dest", default=None, help=f"destination folder (default: ${ENV_VAR} or {DEFAULT_DIR})")
    parser.add_argument("--wheel", default=None, help="a pydicom_data wheel already on disk (no download)")
    args = parser.parse_args(argv)
    was_there = example_radiograph_path(args.dest) is not None
    try:
        path = fetch_example_radiograph(args.dest, wheel=args.wheel)
    except ExampleRadiographError as err:
        print(f"example_radiograph: error: {err}", file=sys.stderr)
        return 1
    print(f"example radiograph {'already present' if was_there else 'fetched'}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
