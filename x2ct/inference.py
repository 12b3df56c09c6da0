"""Reconstruct a CT from X-ray files with a trained checkpoint: read, check, normalise as in training, predict.

The checkpoint carries the model's input spec (views, image size, radiograph convention, normalisation, HU
window, CT grid; see ``PatientDRRDataset.input_spec``), so inference needs no data set. Images are read by
``x2ct.data.xray_io`` into the model's input convention ("log" radiographs: [0, 1], bone bright); raw line
integrals (``.npy`` as in a data set's ``drr.npy``) are normalised exactly as the training data were.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from x2ct.data.ct_volume import CTVolume
from x2ct.data.xray_io import XrayReadError, read_xray
from x2ct.engine.trained_model import TrainedModel, finite_output
from x2ct.ops.hu_window import denormalise
from x2ct.physics.radiograph import normalise_views, to_intensity

# Slack around the [0, 1] input convention for rounding or resampling of an image saved in it. Values further out
# are another convention (raw line integrals, detector counts, HU), not a slightly brighter film.
VIEW_RANGE_TOLERANCE = 0.02

# Above this a "line integral" is not one: 50 is 2.6 m of water (mu_water 0.0193/mm). Below it, values over 1
# in a view file are most likely a data set's raw drr.npy given without --line-integrals.
MAX_PLAUSIBLE_LINE_INTEGRAL = 50.0


class InputSpecError(ValueError):
    """The checkpoint does not say how its inputs were prepared, or the inputs do not match it."""


def input_spec(trained: TrainedModel) -> dict:
    """The checkpoint's input spec; for checkpoints older than it, read from the data set it was trained on."""
    if trained.input_spec is not None:
        return trained.input_spec
    from x2ct.data.dataset import PatientDRRDataset

    data = trained.config.get("data", {})
    root = data.get("root")
    if root is None or not (Path(root) / "dataset.json").exists():
        raise InputSpecError(f"checkpoint {trained.path} predates stored input specs and its data set {root} is not "
                             "here: cannot tell how its inputs were normalised")
    return PatientDRRDataset(root, "train", views=list(data["views"]), radiograph=data.get("radiograph", "log")
                             ).input_spec()


def order_view_files(files: Sequence[str], view_names: Sequence[str]) -> list[Path]:
    """Files in the model's view order. Either plain paths, in that order, or ``name=path`` for every view."""
    named = [f for f in files if "=" in f and f.split("=", 1)[0] in view_names]
    if len(files) != len(view_names):
        raise InputSpecError(f"the model takes {len(view_names)} views ({', '.join(view_names)}), got "
                             f"{len(files)} file(s): {', '.join(files) or 'none'}")
    if not named:
        return [Path(f) for f in files]
    if len(named) != len(files):
        raise InputSpecError(f"mix of named and unnamed views {list(files)}: name all (e.g. {view_names[0]}=FILE) "
                             "or none")
    by_name = dict(f.split("=", 1) for f in files)
    missing = [v for v in view_names if v not in by_name]
    if missing:
        raise InputSpecError(f"no file for view(s) {missing}; the model takes {list(view_names)}")
    return [Path(by_name[v]) for v in view_names]


def load_views(paths: Sequence[str | os.PathLike], spec: dict, line_integrals: bool = False) -> torch.Tensor:
    """Read and prepare the views: ``(V, 1, rows, cols)`` float32, as the model saw its training views.

    Files are in the model's input convention (`view_range`: [0, 1] for the usual normalisations); a file outside
    it is refused, naming it, its range and the expected one. ``line_integrals``: the files hold raw line
    integrals (a data set's ``drr.npy`` convention, any value >= 0), normalised here with the training
    normalisation (or turned into transmission for ``radiograph=intensity`` models).
    """
    shape = tuple(spec["view_shape"])
    images = []
    for path in paths:
        image = read_xray(path, expected_shape=shape)  # refuses NaN and inf, naming the file
        if line_integrals and (image < 0).any():
            raise XrayReadError(f"{path}: negative values cannot be line integrals (min {image.min():.4g}); raw "
                                "line integrals (a data set's drr.npy) are >= 0")
        if not line_integrals:
            _check_view_range(path, image, spec)
        images.append(torch.from_numpy(np.ascontiguousarray(image)))
    views = torch.stack(images)
    if line_integrals:
        if spec["radiograph"] == "intensity":
            views = to_intensity(views)
        else:
            views = normalise_views(views, spec["normalisation"], spec["scale"])
    return views[:, None].float()


def view_range(spec: dict) -> tuple[float, float | None]:
    """``(low, high)`` of the views the model was trained on (``high`` None: unbounded): [0, 1] for
    transmission (``radiograph=intensity``) and for line integrals divided by a maximum (``global_max``,
    ``per_image_max``); only ``>= 0`` for line integrals divided by a chosen constant (``fixed``) or not at all."""
    if spec["radiograph"] == "intensity" or spec["normalisation"] in ("global_max", "per_image_max"):
        return 0.0, 1.0
    return 0.0, None


def _check_view_range(path: str | os.PathLike, image: np.ndarray, spec: dict) -> None:
    """Refuse a view file outside the model's input range (`view_range`, `VIEW_RANGE_TOLERANCE` of slack): the
    model would still answer, with a volume that means nothing."""
    low, high = view_range(spec)
    lo, hi = float(image.min()), float(image.max())
    if lo >= low - VIEW_RANGE_TOLERANCE and (high is None or hi <= high + VIEW_RANGE_TOLERANCE):
        return
    expected = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
    if lo < low - VIEW_RANGE_TOLERANCE:
        hint = "negative values mean another convention (a log image with another sign or offset?)"
    elif hi <= MAX_PLAUSIBLE_LINE_INTEGRAL:
        hint = "these look like raw line integrals (a data set's drr.npy): pass --line-integrals"
    else:
        hint = ("values this large look like detector counts or grey levels: save the image as an 8- or 16-bit "
                "PNG, or divide it by its full-scale value")
    raise XrayReadError(f"{path}: values span [{lo:.4g}, {hi:.4g}], outside the model's input range {expected} "
                        f"(radiograph {spec['radiograph']}, views normalised {spec['normalisation']} in training, "
                        f"tolerance {VIEW_RANGE_TOLERANCE}); {hint}")


def ct_grid(spec: dict) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Spacing (D, H, W) and RAS origin (x, y, z) of the output grid, centred on the isocentre (the world origin)."""
    size, fov = spec["ct_size"], spec["ct_fov_mm"]
    spacing = tuple(f / n for f, n in zip(fov, size, strict=True))
    d, h, w = (-(n - 1) / 2 * s for n, s in zip(size, spacing, strict=True))
    return spacing, (w, h, d)


@torch.no_grad()
def predict_volume(trained: TrainedModel, views: torch.Tensor, spec: dict) -> CTVolume:
    """``views`` ``(V, 1, rows, cols)`` -> the predicted CT in HU on the training grid."""
    device = next(trained.model.parameters()).device
    output = finite_output(trained.model(views[None].to(device)), trained.path, "the given views")
    pred = output.float().clamp(0, 1)[0, 0].cpu().numpy()
    spacing, origin = ct_grid(spec)
    return CTVolume(hu=denormalise(pred, spec["hu_window"]).astype(np.float32), spacing=spacing, origin=origin,
                    source=str(trained.path), metadata={"views": spec["views"]})
