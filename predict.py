"""Reconstruct a CT volume from X-ray images with a trained checkpoint.

    python predict.py CHECKPOINT chest.dcm [--out DIR]                  (a clinical radiograph, any size)
    python predict.py CHECKPOINT pa.png lateral.png                      (a data set's exported views)
    python predict.py CHECKPOINT lateral=lat.dcm pa=pa.dcm               (named views, any order)
    python predict.py CHECKPOINT film.png --pixel-spacing 0.2 --patient-orientation L,F
    python predict.py CHECKPOINT drr_pa.npy drr_lat.npy --line-integrals

One file per view the model was trained on: DICOM (CR, DX, for presentation or processing), PNG, JPEG, TIFF
(greyscale, 8 or 16 bit) or NumPy .npy. A file of another size than the model's detector is fitted to it
(x2ct/data/radiograph_fit.py: orientation from PatientOrientation, size at the isocentre from the pixel spacing
and magnification, centred crop or pad, area-averaged resampling, intensity matched to the training views'
distribution); a file of the detector's size is taken as-is, in the model's input convention ([0, 1], bone
bright, as `python -m x2ct.data.export_views` writes a data set's views). What a file lacks comes from the flags
below, else from a stated estimate; every assumption is printed and stored in the report. --line-integrals: the
files hold raw line integrals (a data set's drr.npy) of the detector's size, normalised as in training.

Writes to DIR: prediction.nii.gz (HU, on the training grid centred on the isocentre), prediction.png,
input.png (each file beside the model's input), model_input_<view>.npy (the exact input: give these back to
predict.py to reproduce the volume), report.md and report.json (every step and assumption).
Exit code 0 on success, 1 on bad input (the message names the file and the reason) or an OS error (one line
naming the path: full disk, permission, --out under a file; the output folder is checked before the model is
loaded), 2 on bad options.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from x2ct.engine.checkpoint import CheckpointError
from x2ct.folder_lock import FolderInUseError, hold_folder
from x2ct.os_errors import check_writable_dir, exit_on_os_error

if TYPE_CHECKING:
    from x2ct.data.input_spec import InputSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file (best.pt, last.pt, ...)")
    parser.add_argument("views", nargs="*", help="one image per view, in the model's view order, or NAME=FILE")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default outputs/predictions/<date>_<time>)")
    parser.add_argument("--line-integrals", action="store_true", help="the files hold raw line integrals")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "model"])
    parser.add_argument("--no-figure", action="store_true", help="do not draw prediction.png and input.png")
    fit = parser.add_argument_group("fitting a radiograph to the model's detector (apply to every file)")
    fit.add_argument("--fit", default="auto", choices=["auto", "always", "never"],
                     help="auto: fit files of another size than the detector, take the others as-is (default)")
    fit.add_argument("--pixel-spacing", type=_spacing, default=None, metavar="MM[,MM]",
                     help="the radiograph's pixel spacing at the detector, row[,col] (replaces the file's)")
    fit.add_argument("--magnification", type=float, default=None, metavar="M",
                     help="detector size over size at the patient's mid-plane, >= 1 (replaces SID/SOD)")
    fit.add_argument("--patient-orientation", type=_orientation, default=None, metavar="COLS,ROWS",
                     help="DICOM letters: where columns and rows point, e.g. L,F for a PA chest (replaces the "
                          "file's)")
    fit.add_argument("--view-position", type=str.upper, default=None, choices=["PA", "AP", "LL", "RL"],
                     help="the radiograph's view position (replaces the file's ViewPosition)")
    fit.add_argument("--align", default="centre", choices=["centre", "body"],
                     help="centre the model's field on the image (default) or on the body's left-right midline")
    fit.add_argument("--intensity", default="quantile", choices=["quantile", "linear"],
                     help="match the training views' distribution (default) or stretch percentiles linearly")
    args = parser.parse_args(argv)
    if args.magnification is not None and not args.magnification >= 1:
        parser.error(f"--magnification must be >= 1 (a projection only enlarges), got {args.magnification}")
    return args


def _spacing(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected one or two positive numbers in mm (ROW[,COL]), got {text!r}")
    return values[0], values[1]


def _orientation(text: str) -> tuple[str, str]:
    from x2ct.data.xray_io import parse_patient_orientation

    parsed = parse_patient_orientation(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected two DICOM direction codes (letters of APRLHF) such as L,F, "
                                         f"got {text!r}")
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path("outputs") / "predictions" / datetime.now().strftime("%Y%m%d_%H%M%S")
    with exit_on_os_error("predict.py", where=out):
        if args.checkpoint.is_file():  # a missing checkpoint is reported as such below
            check_writable_dir(out)  # before inference, not after it
        return _predict(args, out)


def _predict(args: argparse.Namespace, out: Path) -> int:

    from x2ct.data.radiograph_fit import FitOptions
    from x2ct.engine.distributed import DistInfo
    from x2ct.engine.precision import resolve_device
    from x2ct.engine.trained_model import load_trained_model
    from x2ct.inference import (
        input_spec,
        order_view_files,
        predict_volume,
        prepare_views,
        views_tensor,
        with_view_quantiles,
    )

    device = resolve_device(args.device, DistInfo(), key="--device")
    options = FitOptions(pixel_spacing_mm=args.pixel_spacing, magnification=args.magnification,
                         patient_orientation=args.patient_orientation, view_position=args.view_position,
                         align=args.align, intensity=args.intensity)
    try:
        trained = load_trained_model(args.checkpoint, device=device, weights=args.weights)
        spec = input_spec(trained)
        paths = order_view_files(args.views, spec.views)
        spec, quantiles_from = with_view_quantiles(trained, spec)
        prepared = prepare_views(paths, spec, fit=args.fit, options=options, line_integrals=args.line_integrals)
        views = views_tensor(prepared)
        volume = predict_volume(trained, views, spec)
    except (FileNotFoundError, CheckpointError, ValueError) as err:  # XrayReadError, fit errors are ValueErrors
        print(f"predict.py: error: {err}", file=sys.stderr)
        return 1
    try:  # one process per output folder, from the first file written on
        lock = hold_folder(out, "prediction folder")
    except FolderInUseError as err:
        print(f"predict.py: error: {err}", file=sys.stderr)
        return 1
    try:
        return _write_outputs(args, out, trained, spec, prepared, volume, quantiles_from)
    finally:
        lock.release()


def _write_outputs(args: argparse.Namespace, out: Path, trained, spec: InputSpec, prepared, volume,
                   quantiles_from: str) -> int:
    """The volume, the model's inputs, the figures and the report, each written atomically into ``out``."""
    import numpy as np

    from x2ct.atomic_io import atomic_path
    from x2ct.inference import prediction_report, write_prediction_report

    for view in prepared:
        print(f"{view.view}: {view.path} ({view.record['mode']})")
        for assumption in view.assumptions:
            print(f"  assumption: {assumption}")
    if any(v.record["mode"] == "fitted" for v in prepared):
        print(f"training view distribution (intensity fit) from {quantiles_from}")
    outputs = {"prediction": str(volume.save_nifti(out / "prediction.nii.gz"))}
    print(f"prediction: {outputs['prediction']} ({'x'.join(map(str, volume.shape))} voxels of "
          f"{'x'.join(f'{s:.2f}' for s in volume.spacing)} mm, HU)")
    for view in prepared:
        with atomic_path(out / f"model_input_{view.view}.npy") as tmp:
            np.save(tmp, view.image.astype(np.float32))
        outputs[f"model_input_{view.view}"] = str(out / f"model_input_{view.view}.npy")
    if not args.no_figure:
        outputs |= _figures(out, prepared, volume, spec, trained)
        print(f"figures: {outputs['figure']}, {outputs['input_figure']}")
    report = prediction_report(trained, spec, prepared, volume, quantiles_from, outputs)
    markdown, json_path = write_prediction_report(out, report)
    print(f"report: {markdown} (and {json_path.name})")
    return 0


def _figures(out: Path, prepared, volume, spec: InputSpec, trained) -> dict[str, str]:
    """prediction.png (the model's inputs and the volume's slices) and input.png (each file beside its input)."""
    import numpy as np

    from x2ct.evaluation.figures import build_comparison_figure, save_figure
    from x2ct.inference import build_input_figure, save_input_figure, view_range

    figure = build_comparison_figure(np.stack([p.image for p in prepared]), spec.views, volume.hu,
                                     spacing_mm=volume.spacing, hu_window=tuple(spec.hu_window),
                                     title=f"from {', '.join(p.path.name for p in prepared)} "
                                           f"({trained.run_dir.name}/{trained.path.name})")
    return {"figure": str(save_figure(out / "prediction.png", figure)),
            "input_figure": str(save_input_figure(out / "input.png", build_input_figure(prepared, view_range(spec))))}


if __name__ == "__main__":
    sys.exit(main())
