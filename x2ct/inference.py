"""Reconstruct a CT from X-ray files with a trained checkpoint: read, fit or check, normalise as in training,
predict, report.

The checkpoint carries the model's input spec (views, detector geometry, radiograph convention, normalisation,
the training views' distribution, HU window, CT grid; see ``PatientDRRDataset.input_spec``), so inference needs
no data set. `prepare_views` reads each file (``x2ct.data.xray_io``) and either takes it as-is, in the model's
input convention ("log" radiographs: [0, 1], bone bright), or fits a clinical radiograph of another size to the
model's detector (``x2ct.data.radiograph_fit``); raw line integrals (``.npy`` as in a data set's ``drr.npy``) are
normalised exactly as the training data were. `prediction_report` and `build_input_figure` record what was done:
every step, every assumption, and each file beside the input the model got.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from x2ct.atomic_io import atomic_path, write_json_atomic, write_text_atomic
from x2ct.data.ct_volume import CTVolume
from x2ct.data.input_spec import InputSpec, InputSpecError
from x2ct.data.radiograph_fit import FitOptions, fit_radiograph
from x2ct.data.xray_io import XrayReadError, read_radiograph, read_xray
from x2ct.engine.trained_model import TrainedModel, finite_output
from x2ct.ops.hu_window import denormalise
from x2ct.physics.radiograph import normalise_views, to_intensity

# Slack around the [0, 1] input convention for rounding or resampling of an image saved in it. Values further out
# are another convention (raw line integrals, detector counts, HU), not a slightly brighter film.
VIEW_RANGE_TOLERANCE = 0.02

# Above this a "line integral" is not one: 50 is 2.6 m of water (mu_water 0.0193/mm). Below it, values over 1
# in a view file are most likely a data set's raw drr.npy given without --line-integrals.
MAX_PLAUSIBLE_LINE_INTEGRAL = 50.0

# How predict.py treats a file: fit it to the detector when its size differs (auto), always, or never.
FIT_MODES = ("auto", "always", "never")

# The input figure shows a file's image at most this many pixels across (strided), enough for a 4-inch panel.
FIGURE_MAX_PIXELS = 1024


def input_spec(trained: TrainedModel) -> InputSpec:
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


@dataclass(frozen=True, eq=False)
class PreparedView:
    """One view as the model gets it, and how it was made from its file.

    ``image`` ``(rows, cols)`` float32: the model's input. ``original``: the file's image (bone bright), turned to
    the view's orientation when fitted; ``field_px`` (top, bottom, left, right): the detector's outline on it, and
    ``isocentre_spacing_mm`` its pixel size at the isocentre (fitted views; None when used as-is). ``record``:
    JSON of every step (``mode``: ``as-is``, ``line integrals`` or ``fitted``); ``assumptions``: sentences.
    """

    view: str
    path: Path
    image: np.ndarray
    original: np.ndarray
    record: dict
    assumptions: tuple[str, ...] = ()
    field_px: tuple[float, float, float, float] | None = None
    isocentre_spacing_mm: tuple[float, float] | None = None


def prepare_views(paths: Sequence[str | os.PathLike], spec: InputSpec, fit: str = "auto",
                  options: FitOptions | None = None, line_integrals: bool = False) -> list[PreparedView]:
    """Read each file (in the model's view order) and make it the model's input for its view.

    ``fit``: ``auto`` fits a file whose image is not of the detector's size (`fit_radiograph`: orientation,
    size at the isocentre, field, intensity) and takes one of that size as-is, in the model's convention
    (`view_range`: [0, 1] for the usual normalisations; a file outside it is refused, naming it, its range and
    the expected one); ``always`` fits every file; ``never`` takes every file as-is (another size is refused).
    ``line_integrals``: the files hold raw line integrals (a data set's ``drr.npy`` convention, any value >= 0)
    of the detector's size, normalised here as in training (or turned into transmission for
    ``radiograph=intensity`` models); they are never fitted.
    """
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    shape = tuple(spec.view_shape)
    prepared = []
    for path, view in zip(paths, spec.views, strict=True):
        path = Path(path)
        if line_integrals:
            prepared.append(_line_integral_view(path, view, spec))
            continue
        radiograph = read_radiograph(path)  # refuses unreadable files, NaN and inf, naming the file
        if fit == "never" or (fit == "auto" and radiograph.shape == shape):
            image = read_xray(path, expected_shape=shape)
            _check_view_range(path, image, spec)
            record = {"view": view, "mode": "as-is", "file": radiograph.to_dict(),
                      "reason": "--fit never" if fit == "never" else "the image has the detector's size"}
            prepared.append(PreparedView(view, path, image, image, record, (
                f"{path.name} has the detector's size {shape[0]}x{shape[1]}: taken to be in the model's input "
                "convention already (a view exported from its data set); --fit always fits it instead",)))
            continue
        fitted = fit_radiograph(radiograph, spec, view, options)
        record = {"view": view, "mode": "fitted", **fitted.steps}
        prepared.append(PreparedView(view, path, fitted.image, fitted.oriented, record, fitted.assumptions,
                                     field_px=fitted.field_px,
                                     isocentre_spacing_mm=tuple(fitted.steps["spacing"]["isocentre_spacing_mm"])))
    return prepared


def views_tensor(prepared: Sequence[PreparedView]) -> torch.Tensor:
    """The prepared views as the model's input ``(V, 1, rows, cols)`` float32."""
    return torch.stack([torch.from_numpy(np.ascontiguousarray(p.image, dtype=np.float32)) for p in prepared])[:, None]


def load_views(paths: Sequence[str | os.PathLike], spec: InputSpec, line_integrals: bool = False) -> torch.Tensor:
    """Files of the detector's size in the model's convention (or raw line integrals) -> ``(V, 1, rows, cols)``;
    `prepare_views` with ``fit="never"``."""
    return views_tensor(prepare_views(paths, spec, fit="never", line_integrals=line_integrals))


def _line_integral_view(path: Path, view: str, spec: InputSpec) -> PreparedView:
    raw = read_xray(path, expected_shape=tuple(spec.view_shape))  # refuses NaN and inf, naming the file
    if (raw < 0).any():
        raise XrayReadError(f"{path}: negative values cannot be line integrals (min {raw.min():.4g}); raw "
                            "line integrals (a data set's drr.npy) are >= 0")
    tensor = torch.from_numpy(np.ascontiguousarray(raw))
    if spec.radiograph == "intensity":
        image = to_intensity(tensor)
    else:
        image = normalise_views(tensor, spec.normalisation, spec.scale)
    record = {"view": view, "mode": "line integrals", "file": {"path": str(path), "shape": list(raw.shape)},
              "normalisation": "transmission exp(-p)" if spec.radiograph == "intensity"
              else f"{spec.normalisation} (scale {spec.scale})"}
    return PreparedView(view, path, image.float().numpy(), raw, record)


def with_view_quantiles(trained: TrainedModel, spec: InputSpec) -> tuple[InputSpec, str]:
    """``spec`` holding the training views' quantiles for the intensity fit, and where they came from: the
    checkpoint, else (a checkpoint trained before they were stored) its data set when it is here and still fits
    the model (``InputSpec.compatible_with``: a folder prepared again with other settings does not), else none."""
    if spec.view_quantiles is not None:
        return spec, "the checkpoint"
    from x2ct.data.dataset import DatasetError, PatientDRRDataset
    from x2ct.data.radiograph_fit import dataset_view_quantiles

    root = (trained.config.get("data") or {}).get("root")
    if root is not None and (Path(root) / "dataset.json").exists():
        try:
            dataset = PatientDRRDataset(root, "train", views=list(spec.views), radiograph=spec.radiograph)
            fits = not spec.compatible_with(dataset.input_spec(view_quantiles=False))
            quantiles = dataset_view_quantiles(dataset) if fits else None
        except (DatasetError, OSError, ValueError, KeyError):
            quantiles = None
        if quantiles is not None:
            return (replace(spec, view_quantiles=quantiles | {"source": f"data set {root}"}),
                    f"its data set {root}")
    return spec, "nowhere (the checkpoint predates them and its data set is not here or no longer fits it)"


def view_range(spec: InputSpec) -> tuple[float, float | None]:
    """``(low, high)`` of the views the model was trained on (``high`` None: unbounded): [0, 1] for
    transmission (``radiograph=intensity``) and for line integrals divided by a maximum (``global_max``,
    ``per_image_max``); only ``>= 0`` for line integrals divided by a chosen constant (``fixed``) or not at all."""
    if spec.radiograph == "intensity" or spec.normalisation in ("global_max", "per_image_max"):
        return 0.0, 1.0
    return 0.0, None


def _check_view_range(path: str | os.PathLike, image: np.ndarray, spec: InputSpec) -> None:
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
                        f"(radiograph {spec.radiograph}, views normalised {spec.normalisation} in training, "
                        f"tolerance {VIEW_RANGE_TOLERANCE}); {hint}")


def ct_grid(spec: InputSpec) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Spacing (D, H, W) and RAS origin (x, y, z) of the output grid, centred on the isocentre (the world origin)."""
    size, fov = spec.ct_size, spec.ct_fov_mm
    spacing = tuple(f / n for f, n in zip(fov, size, strict=True))
    d, h, w = (-(n - 1) / 2 * s for n, s in zip(size, spacing, strict=True))
    return spacing, (w, h, d)


@torch.no_grad()
def predict_volume(trained: TrainedModel, views: torch.Tensor, spec: InputSpec) -> CTVolume:
    """``views`` ``(V, 1, rows, cols)`` -> the predicted CT in HU on the training grid."""
    device = next(trained.model.parameters()).device
    output = finite_output(trained.model(views[None].to(device)).volume, trained.path, "the given views")
    pred = output.float().clamp(0, 1)[0, 0].cpu().numpy()
    spacing, origin = ct_grid(spec)
    return CTVolume(hu=denormalise(pred, spec.hu_window).astype(np.float32), spacing=spacing, origin=origin,
                    source=str(trained.path), metadata={"views": list(spec.views)})


# ------------------------------------------------------------------------------------------------ report
def prediction_report(trained: TrainedModel, spec: InputSpec, prepared: Sequence[PreparedView], volume: CTVolume,
                      quantiles_from: str, outputs: dict[str, str]) -> dict:
    """Everything a prediction did, as JSON types: the model, each view's file, steps and assumptions, outputs."""
    return {
        "checkpoint": str(trained.path), "weights": trained.weights, "epoch": trained.epoch,
        "model": {"views": list(spec.views), "view_shape": list(spec.view_shape),
                  "radiograph": spec.radiograph, "normalisation": spec.normalisation, "scale": spec.scale,
                  "geometry": spec.geometry.to_dict(), "training_view_quantiles_from": quantiles_from},
        "views": [p.record | {"assumptions": list(p.assumptions)} for p in prepared],
        "assumptions": [f"{p.view}: {a}" for p in prepared for a in p.assumptions],
        "volume": {"shape": list(volume.shape), "spacing_mm": list(volume.spacing), "origin_mm": list(volume.origin),
                   "hu_window": list(spec.hu_window)},
        "outputs": dict(outputs),
    }


def report_markdown(report: dict) -> str:
    """The report as a page a person reads: per view, what the file said, each step, and every assumption."""
    lines = ["# Prediction report", "",
             f"- checkpoint: `{report['checkpoint']}` ({report['weights']} weights, epoch {report['epoch']})",
             f"- model views: {', '.join(report['model']['views'])} on a "
             f"{'x'.join(map(str, report['model']['view_shape']))} detector; training view distribution from "
             f"{report['model']['training_view_quantiles_from']}",
             f"- volume: {'x'.join(map(str, report['volume']['shape']))} voxels of "
             f"{'x'.join(f'{s:.2f}' for s in report['volume']['spacing_mm'])} mm (D x H x W), HU",
             *[f"- {name}: `{path}`" for name, path in report["outputs"].items()], ""]
    for view in report["views"]:
        lines += [f"## View `{view['view']}`: `{view['file']['path']}` ({view['mode']})", ""]
        lines += [f"- {line}" for line in _view_summary(view)]
        if view["assumptions"]:
            lines += ["", "Assumptions:", ""] + [f"- {a}" for a in view["assumptions"]]
        lines.append("")
    return "\n".join(lines)


def _view_summary(view: dict) -> list[str]:
    file = view["file"]
    lines = [f"file: {file.get('file_format', 'npy')} {'x'.join(map(str, file['shape']))}"
             + (f", {file['modality']} {file.get('body_part') or ''}" if file.get("modality") else "")]
    lines += [f"read: {note}" for note in file.get("notes", [])]
    if view["mode"] != "fitted":
        return [*lines, f"used as-is: {view.get('reason') or view.get('normalisation')}"]
    o, s, d, f, a, i = (view[k] for k in ("orientation", "spacing", "model_detector", "field", "alignment",
                                          "intensity"))
    lines += [
        f"orientation: {o['source']} {','.join(o['given'])} -> the view's {','.join(o['model'])} (transpose "
        f"{o['transpose']}, flip rows {o['flip_rows']}, flip columns {o['flip_cols']})",
        f"pixel spacing: {_mm(s['detector_spacing_mm'])} at the {s['plane']} ({s['spacing_source']}), magnification "
        f"{s['magnification']:.4f} ({s['magnification_source']}) -> {_mm(s['isocentre_spacing_mm'])} at the "
        "isocentre",
        f"model detector: {'x'.join(map(str, d['shape']))} pixels of {_mm(d['isocentre_spacing_mm'])} at the "
        f"isocentre ({_mm(d['detector_spacing_mm'])} at the detector, magnification {d['magnification']:.4f}), "
        f"field {_mm(d['field_mm'])}",
        f"field: radiograph {_mm(f['radiograph_mm'])} at the isocentre; cropped (negative: padded) "
        + ", ".join(f"{k} {v:.1f} mm" for k, v in f["crop_mm"].items())
        + f"; {100 * f['padded_fraction']:.1f} % of the detector padded",
        f"alignment: {a['mode']}, shift {_mm(a['shift_mm'])}" + (f" (fell back: {a['fallback']})"
                                                                 if a.get("fallback") else ""),
        f"intensity: {i['mode']} on {i['domain']}, " + (
            f"air and body matched to the training views' from {i['quantiles_from']} ({i['training_patients']} "
            f"patients); air {100 * i['air_fraction']['radiograph']:.1f} % of the detector (training views "
            f"{100 * i['air_fraction']['training']:.1f} %)" if i["mode"] == "quantile"
            else f"input range {_mm(i['input_range'], 'g')} stretched onto [0, 1]"),
    ]
    return lines


def _mm(values: Sequence[float], fmt: str = ".3g") -> str:
    return " x ".join(f"{v:{fmt}}" for v in values) + (" mm" if fmt != "g" else "")


def write_prediction_report(out_dir: str | os.PathLike, report: dict) -> tuple[Path, Path]:
    """``out_dir/report.md`` and ``out_dir/report.json``, each written atomically."""
    out_dir = Path(out_dir)
    return (write_text_atomic(out_dir / "report.md", report_markdown(report)),
            write_json_atomic(out_dir / "report.json", report))


def build_input_figure(prepared: Sequence[PreparedView], value_range: tuple[float, float | None] = (0.0, 1.0),
                       panel_inches: float = 3.5) -> Figure:
    """Per view: the file's image (turned to the view's orientation, the detector's field outlined) beside the
    model's input, in the same millimetres at the isocentre for fitted views. The input is shown on the model's
    ``value_range`` (`view_range`; an open top: the input's own maximum), the file's image between its 1st and
    99th percentiles. A bare Agg ``Figure``."""
    figure = Figure(figsize=(2 * panel_inches, panel_inches * len(prepared) + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(prepared), 2, squeeze=False)
    for (left, right), view in zip(axes, prepared, strict=True):
        stride = max(1, max(view.original.shape) // FIGURE_MAX_PIXELS)
        original = view.original[::stride, ::stride]
        lo, hi = np.percentile(original, (1, 99))
        shown = {"cmap": "gray", "vmin": value_range[0],
                 "vmax": value_range[1] if value_range[1] is not None else max(float(view.image.max()), 1e-6)}
        if view.field_px is None:
            left.imshow(original, cmap="gray", vmin=lo, vmax=hi)
            right.imshow(view.image, **shown)
            left.set_title(f"{view.path.name} (as stored)", fontsize=8)
        else:
            sr, sc = view.isocentre_spacing_mm
            top, bottom, first, last = view.field_px
            rows, cols = view.original.shape
            left.imshow(original, cmap="gray", vmin=lo, vmax=hi, extent=(0, cols * sc, rows * sr, 0))
            left.add_patch(Rectangle((first * sc, top * sr), (last - first) * sc, (bottom - top) * sr, fill=False,
                                     edgecolor="tab:orange", linewidth=1.2))
            right.imshow(view.image, extent=(first * sc, last * sc, bottom * sr, top * sr), **shown)
            right.set_xlim(left.get_xlim())
            right.set_ylim(left.get_ylim())
            left.set_title(f"{view.path.name}, turned as the view", fontsize=8)
            left.set_xlabel("mm at the isocentre; orange: the model's field", fontsize=7)
            right.set_xlabel("mm at the isocentre", fontsize=7)
        right.set_title(f"model input '{view.view}' ({view.record['mode']}), "
                        f"{'x'.join(map(str, view.image.shape))}", fontsize=8)
        for ax in (left, right):
            ax.tick_params(labelsize=6)
    return figure


def save_input_figure(path: str | os.PathLike, figure: Figure, dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG, atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path
