"""Evaluate a trained checkpoint on a split of a prepared data set.

    python evaluate.py outputs/runs/NAME/checkpoints/best.pt [--split test] [--data-root DIR] [--out DIR]
    python evaluate.py CHECKPOINT --data example_ct_demo      (a data config of conf/data/, prepared if missing)
    python evaluate.py CHECKPOINT --num-views 2               (a model that takes any number of views, e.g.
                                                               trained with data.view_dropout, on fewer)
    python evaluate.py CHECKPOINT --view-processing clinical  (views through the fixed clinical-style chain of
                                                               x2ct/data/clinical_processing.py first)
    torchrun --nproc_per_node=4 evaluate.py CHECKPOINT ...   (patients shared among GPUs; one report)

Writes, under --out (default: <run>/evaluation/<checkpoint>_<split>/, with _<N>views_<names> on other views than
the model's own and _clinical with --view-processing clinical): per_patient.{csv,json}, summary.{json,csv}
(mean, std, median, 95% interval of every metric), report.md, volumes/<patient>.nii.gz (the prediction in HU with
the target's affine: it overlays the target CT in 3D Slicer or ITK-SNAP) and figures/<patient>.png.
Exit code 0 on success, 1 on bad input (the message names the file or option) or an OS error (one line naming the
path: full disk, permission, --out under a file; the output folder is checked before the model is loaded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from x2ct.engine.checkpoint import CheckpointError
from x2ct.folder_lock import FolderInUseError
from x2ct.os_errors import check_writable_dir, exit_on_os_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file (best.pt, last.pt, epoch_NNNN.pt)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--data-root", type=Path, default=None,
                        help="prepared data set (default: data.root saved in the checkpoint)")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="a data config of conf/data/ (e.g. example_ct_demo), prepared first if missing")
    parser.add_argument("--views", default=None, metavar="A,B,...",
                        help="evaluate on these views (names, comma-separated) instead of the model's own; needs a "
                             "model that takes any number of views")
    parser.add_argument("--num-views", type=int, default=None, metavar="N",
                        help="evaluate on N views evenly spread over 180 degrees (as data.num_views)")
    parser.add_argument("--view-processing", default="none", choices=["none", "clinical"],
                        help="none: the clean DRRs; clinical: every view through the fixed clinical-style chain "
                             "(x2ct/data/clinical_processing.py) before the model, recorded in the summary and report")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--weights", default="auto", choices=["auto", "ema", "model"],
                        help="auto: the EMA weights when the run kept them (what validation used)")
    parser.add_argument("--no-volumes", action="store_true", help="do not write the predicted NIfTI volumes")
    parser.add_argument("--no-figures", action="store_true", help="do not draw the comparison figures")
    parser.add_argument("--no-reference", action="store_true", help="skip the mean-volume reference")
    parser.add_argument("--limit", type=int, default=None, help="first N patients only (a quick look)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table, summary and figures to W&B (mode from WANDB_MODE, default offline)")
    args = parser.parse_args(argv)
    if args.data and args.data_root:
        parser.error("give --data or --data-root, not both")
    if args.views is not None and args.num_views is not None:
        parser.error("give --views or --num-views, not both")
    if args.views is not None:
        args.views = [name.strip() for name in args.views.split(",") if name.strip()]
        if not args.views:
            parser.error("--views: no view names given")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from x2ct.engine.distributed import dist_info_from_env
    from x2ct.engine.trained_model import checkpoint_run_dir
    from x2ct.evaluation.evaluator import EvaluationSettings, evaluate

    settings = EvaluationSettings(
        checkpoint=args.checkpoint, data_root=args.data_root, data_config=args.data, split=args.split, out_dir=args.out,
        device=args.device, weights=args.weights, save_volumes=not args.no_volumes,
        save_figures=not args.no_figures, limit=args.limit, views=args.views, num_views=args.num_views,
        reference=not args.no_reference, wandb=args.wandb, view_processing=args.view_processing)
    # the default folder's name needs the model and data set; its parent is known now
    out = args.out or checkpoint_run_dir(args.checkpoint) / "evaluation"
    with exit_on_os_error("evaluate.py", where=out):
        try:
            # rank 0 writes (the others stop with it under torchrun); a missing checkpoint is reported as such
            if dist_info_from_env().is_main and args.checkpoint.is_file():
                check_writable_dir(out)
            result = evaluate(settings)
        except (FileNotFoundError, CheckpointError, ValueError, FolderInUseError) as err:
            print(f"evaluate.py: error: {err}", file=sys.stderr)
            return 1
    if result is not None:
        s = result.summary
        processed = "" if args.view_processing == "none" else f"; views through the {args.view_processing} chain"
        print(f"{len(result.rows)} patients: PSNR {s['psnr']['mean']:.2f} +- {s['psnr']['std']:.2f} dB, "
              f"SSIM {s['ssim']['mean']:.4f} +- {s['ssim']['std']:.4f}, MAE {s['mae_hu']['mean']:.1f} HU "
              f"(true 3D; X2CT-GAN metrics' PSNR {s['x2ct_gan_psnr_3d']['mean']:.2f} dB)"
              f"{processed}\n"
              f"report: {result.out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
