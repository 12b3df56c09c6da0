"""Write a prepared patient's views as the images ``predict.py`` reads (16-bit PNG, the model's input convention).

    python -m x2ct.data.export_views DATA_DIR PATIENT_ID [--out DIR] [--split test]

One ``<view>.png`` per view: the views exactly as the data set gives them to a model (normalised line integrals
in [0, 1], bone bright), so ``predict.py CHECKPOINT DIR/pa.png DIR/lateral.png`` reconstructs that patient.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from x2ct.data.dataset import PatientDRRDataset
from x2ct.data.layout import SPLITS
from x2ct.data.xray_io import write_xray_png


def export_views(root: str | os.PathLike, patient_id: str, out_dir: str | os.PathLike,
                 views: list[str] | None = None) -> list[Path]:
    """Write ``out_dir/<view>.png`` for each view of ``patient_id``; returns the paths, in view order."""
    for split in SPLITS:
        dataset = PatientDRRDataset(root, split, views=views)
        if patient_id in dataset.patient_ids:
            item = dataset[dataset.patient_ids.index(patient_id)]
            images = item["views"][:, 0].clamp(0, 1).numpy()
            return [write_xray_png(image, Path(out_dir) / f"{name}.png")
                    for name, image in zip(dataset.view_names, images, strict=True)]
    raise KeyError(f"patient {patient_id!r} is in no split of {root}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.data.export_views", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="prepared data set")
    parser.add_argument("patient_id")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: ./views_<patient>)")
    args = parser.parse_args(argv)
    try:
        paths = export_views(args.root, args.patient_id, args.out or Path(f"views_{args.patient_id}"))
    except (KeyError, ValueError) as err:
        print(f"export_views: error: {err}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
