"""Reconstruct a CT volume from X-ray images with a trained checkpoint.

    python predict.py CHECKPOINT pa.png lateral.png [--out DIR]
    python predict.py CHECKPOINT lateral=lat.dcm pa=pa.dcm          (named views, any order)
    python predict.py CHECKPOINT drr_pa.npy drr_lat.npy --line-integrals

Images: PNG/TIFF (greyscale, 8 or 16 bit), DICOM, or NumPy .npy, one per view the model was trained on, of the
size it was trained on, in its input convention: [0, 1] with bone bright, as the views of its data set
(`python -m x2ct.data.export_views` writes a data set's views as such PNGs). --line-integrals: the files hold
raw line integrals (a data set's drr.npy), normalised as in training.

Writes DIR/prediction.nii.gz (HU, on the training grid centred on the isocentre) and DIR/prediction.png.
Exit code 0 on success, 1 on bad input (the message names the file) or an OS error (one line naming the path: full
disk, permission, --out under a file; the output folder is checked before the model is loaded), 2 on bad options.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from x2ct.engine.checkpoint import CheckpointError
from x2ct.os_errors import check_writable_dir, exit_on_os_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file (best.pt, last.pt, ...)")
    parser.add_argument("views", nargs="*", help="one image per view, in the model's view order, or NAME=FILE")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default outputs/predictions/<date>_<time>)")
    parser.add_argument("--line-integrals", action="store_true", help="the files hold raw line integrals")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    parser.add_argument("--no-figure", action="store_true", help="do not draw prediction.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path("outputs") / "predictions" / datetime.now().strftime("%Y%m%d_%H%M%S")
    with exit_on_os_error("predict.py", where=out):
        if args.checkpoint.is_file():  # a missing checkpoint is reported as such below
            check_writable_dir(out)  # before inference, not after it
        return _predict(args, out)


def _predict(args: argparse.Namespace, out: Path) -> int:
    import torch

    from x2ct.engine.trained_model import load_trained_model
    from x2ct.inference import input_spec, load_views, order_view_files, predict_volume

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    try:
        trained = load_trained_model(args.checkpoint, device=device, weights=args.weights)
        spec = input_spec(trained)
        paths = order_view_files(args.views, spec["views"])
        views = load_views(paths, spec, line_integrals=args.line_integrals)
        volume = predict_volume(trained, views, spec)
    except (FileNotFoundError, CheckpointError, ValueError) as err:  # XrayReadError, InputSpecError are ValueErrors
        print(f"predict.py: error: {err}", file=sys.stderr)
        return 1
    nifti = volume.save_nifti(out / "prediction.nii.gz")
    print(f"prediction: {nifti} ({'x'.join(map(str, volume.shape))} voxels of "
          f"{'x'.join(f'{s:.2f}' for s in volume.spacing)} mm, HU)")
    if not args.no_figure:
        from x2ct.evaluation.figures import build_comparison_figure, save_figure

        figure = build_comparison_figure(views[:, 0].numpy(), spec["views"], volume.hu, spacing_mm=volume.spacing,
                                         hu_window=tuple(spec["hu_window"]),
                                         title=f"from {', '.join(p.name for p in paths)} ({trained.run_dir.name}/"
                                               f"{trained.path.name})")
        print(f"figure: {save_figure(out / 'prediction.png', figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
