"""Comparison figures: input X-rays, predicted and target CT slices, and their absolute error, in one PNG.

Rows (top to bottom; ``figure_layout`` names every panel)::

    input X-rays      view 1 ... view V           each with its own 1st-99th percentile grey window
    prediction        axial  coronal  sagittal    grey, HU window ``hu_window``  ┐ one shared "HU" colour bar
    target            axial  coronal  sagittal    grey, HU window ``hu_window``  ┘
    absolute error    axial  coronal  sagittal    'magma' from 0 HU, one shared "absolute error (HU)" colour bar

Without a target (inference on new X-rays) only the first two rows are drawn. Volumes are ``(D, H, W)`` in HU
with axes running superior, anterior, patient right; slices are shown as a radiologist reads them
(``radiological_slice``) with the physical aspect ratio from the voxel spacing.

The figure is a bare ``matplotlib.figure.Figure`` drawn by the Agg canvas, so building one never touches
pyplot's global state or the session's backend (safe inside a training process or a notebook).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from x2ct.atomic_io import atomic_path

PLANES = ("axial", "coronal", "sagittal")
ROW_LABELS = ("input X-rays", "prediction", "target", "absolute error")
HU_COLORBAR_LABEL = "HU"
ERROR_COLORBAR_LABEL = "absolute error (HU)"
GREY_CMAP = "gray"
ERROR_CMAP = "magma"
UNSCANNED_GREY = "0.6"  # error maps: voxels nobody scanned

# Orientation letters at the (top, bottom, left, right) edges of each plane in radiological display.
ORIENTATION_LETTERS = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}

# Which volume axis each plane cuts, and which (row, col) axes of the volume the displayed slice shows.
_PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
_PLANE_ROW_COL_AXES = {"axial": (1, 2), "coronal": (0, 2), "sagittal": (0, 1)}


def figure_layout(view_names: Sequence[str], with_target: bool) -> list[list[str]]:
    """Panel titles per row: the view names, then ``"prediction axial"`` ..., ``"target ..."``, ``"error ..."``."""
    rows = [list(view_names), [f"prediction {p}" for p in PLANES]]
    if with_target:
        rows += [[f"target {p}" for p in PLANES], [f"error {p}" for p in PLANES]]
    return rows


def radiological_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The ``(rows, cols)`` slice of a ``(D, H, W)`` volume (superior, anterior, patient right) at ``index``.

    axial ``v[d]``: anterior up, patient right on the image left; coronal ``v[:, h]``: head up, patient right on
    the left; sagittal ``v[:, :, w]``: head up, anterior on the left. All three are the raw slice flipped on
    both axes, because every volume axis runs toward the side that is shown at the top or on the left.
    """
    if plane not in _PLANE_AXIS:
        raise ValueError(f"unknown plane {plane!r}; expected one of {PLANES}")
    return np.flip(np.take(volume, index, axis=_PLANE_AXIS[plane]), (0, 1))


def slice_aspect(plane: str, spacing_mm: Sequence[float]) -> float:
    """``imshow`` aspect (row spacing / column spacing) of a plane for voxel spacing ``(D, H, W)`` in mm."""
    row_axis, col_axis = _PLANE_ROW_COL_AXES[plane]
    return float(spacing_mm[row_axis]) / float(spacing_mm[col_axis])


def build_comparison_figure(
    views: np.ndarray,
    view_names: Sequence[str],
    pred: np.ndarray,
    target: np.ndarray | None = None,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    hu_window: tuple[float, float] = (-1000.0, 1000.0),
    title: str = "",
    error_max_hu: float | None = None,
    slice_index: tuple[int, int, int] | None = None,
    view_percentiles: tuple[float, float] = (1.0, 99.0),
    error_percentile: float = 99.5,
    panel_inches: float = 2.5,
    orientation_letters: bool = True,
    scanned: np.ndarray | None = None,
) -> Figure:
    """The comparison figure (see the module docstring) as an unsaved ``Figure``.

    views ``(V, rows, cols)`` (any range), pred / target ``(D, H, W)`` in HU, spacing ``(D, H, W)`` mm.
    ``slice_index`` ``(d, h, w)``: where the axial, coronal and sagittal slices cut (default: the middle,
    ``(D // 2, H // 2, W // 2)``). The error colour scale runs from 0 to ``error_max_hu``, or to the
    ``error_percentile`` of the errors over the three slices (1 HU if they are all zero), so one outlier
    does not wash the map out.

    ``scanned`` ``(D, H, W)`` bool (`x2ct.data.scanned`): the error maps leave unscanned voxels grey (no error is
    defined where nobody scanned) and scale over the scanned ones.

    Panels are findable by ``ax.get_label()`` (the titles of ``figure_layout``); the colour bars' axes are
    labelled ``"colorbar HU"`` and ``"colorbar error"``.
    """
    views, pred, target = _checked_inputs(views, view_names, pred, target, spacing_mm, hu_window)
    index = _checked_slice_index(slice_index, pred.shape)
    layout = figure_layout(view_names, target is not None)
    n_rows, n_cols = len(layout), max(len(views), len(PLANES))

    fig = Figure(figsize=((n_cols + 0.35) * panel_inches, n_rows * panel_inches + (0.4 if title else 0.0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1.0] * n_cols + [0.06])

    def panel(row: int, col: int, name: str):
        ax = fig.add_subplot(grid[row, col], label=name)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if col == 0:
            ax.set_ylabel(ROW_LABELS[row], fontsize=10)
        return ax

    for col, (name, view) in enumerate(zip(layout[0], views, strict=True)):
        low, high = np.percentile(view, view_percentiles)
        panel(0, col, name).imshow(view, cmap=GREY_CMAP, vmin=low, vmax=max(high, low + np.finfo(np.float32).eps),
                                   interpolation="nearest")

    volumes = [pred] if target is None else [pred, target]
    for row, volume in enumerate(volumes, start=1):
        for col, plane in enumerate(PLANES):
            ax = panel(row, col, layout[row][col])
            grey = ax.imshow(radiological_slice(volume, plane, index[col]), cmap=GREY_CMAP, vmin=hu_window[0],
                             vmax=hu_window[1], aspect=slice_aspect(plane, spacing_mm), interpolation="nearest")
            if orientation_letters:
                _draw_orientation_letters(ax, plane)
    hu_bar = fig.add_subplot(grid[1 : 1 + len(volumes), n_cols], label=f"colorbar {HU_COLORBAR_LABEL}")
    fig.colorbar(grey, cax=hu_bar, label=HU_COLORBAR_LABEL)

    if target is not None:
        errors = [np.abs(radiological_slice(pred, p, i) - radiological_slice(target, p, i))
                  for p, i in zip(PLANES, index, strict=True)]
        if scanned is not None:
            if np.shape(scanned) != pred.shape:
                raise ValueError(f"scanned mask of shape {np.shape(scanned)} does not match the volumes {pred.shape}")
            errors = [np.where(radiological_slice(np.asarray(scanned, dtype=bool), p, i), e, np.nan)
                      for p, i, e in zip(PLANES, index, errors, strict=True)]
        vmax = error_max_hu if error_max_hu is not None else _error_scale(errors, error_percentile)
        error_cmap = colormaps[ERROR_CMAP].with_extremes(bad=UNSCANNED_GREY)
        for col, (plane, error) in enumerate(zip(PLANES, errors, strict=True)):
            ax = panel(3, col, layout[3][col])
            heat = ax.imshow(error, cmap=error_cmap, vmin=0.0, vmax=vmax, aspect=slice_aspect(plane, spacing_mm),
                             interpolation="nearest")
            if orientation_letters:
                _draw_orientation_letters(ax, plane)
        error_bar = fig.add_subplot(grid[3, n_cols], label="colorbar error")
        fig.colorbar(heat, cax=error_bar, label=ERROR_COLORBAR_LABEL)

    if title:
        fig.suptitle(title)
    return fig


def save_figure(path: str | os.PathLike, figure: Figure, dpi: int = 100) -> Path:
    """Write ``figure`` (e.g. `build_comparison_figure`'s) to ``path`` as a PNG of ``figure size in inches * dpi``
    pixels, atomically (a reader never sees half an image); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


# ------------------------------------------------------------------------------------------------ helpers
def _checked_inputs(views, view_names, pred, target, spacing_mm, hu_window):
    views = np.asarray(views, dtype=np.float32)
    if views.ndim != 3 or len(views) == 0:
        raise ValueError(f"views must be (V, rows, cols) with V >= 1, got shape {views.shape}")
    if len(view_names) != len(views):
        raise ValueError(f"{len(view_names)} view names {list(view_names)} for {len(views)} views")
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 3:
        raise ValueError(f"pred must be a (D, H, W) volume in HU, got shape {pred.shape}")
    if target is not None:
        target = np.asarray(target, dtype=np.float32)
        if target.shape != pred.shape:
            raise ValueError(f"target shape {target.shape} differs from pred shape {pred.shape}")
    for name, array in (("views", views), ("pred", pred), ("target", target)):
        if array is not None and not np.isfinite(array).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm must be three positive (D, H, W) spacings in mm, got {tuple(spacing_mm)}")
    if not hu_window[0] < hu_window[1]:
        raise ValueError(f"hu_window must be (low, high) with low < high, got {tuple(hu_window)}")
    return views, pred, target


def _checked_slice_index(slice_index, shape) -> tuple[int, int, int]:
    if slice_index is None:
        return tuple(n // 2 for n in shape)
    if len(slice_index) != 3 or not all(0 <= i < n for i, n in zip(slice_index, shape, strict=True)):
        raise ValueError(f"slice_index {tuple(slice_index)} is outside the volume of shape {shape}")
    return tuple(int(i) for i in slice_index)


def _error_scale(errors: list[np.ndarray], percentile: float) -> float:
    values = np.concatenate([e.ravel() for e in errors])
    values = values[np.isfinite(values)]
    scale = float(np.percentile(values, percentile)) if values.size else 0.0
    return scale if scale > 0 else 1.0


def _draw_orientation_letters(ax, plane: str) -> None:
    top, bottom, left, right = ORIENTATION_LETTERS[plane]
    style = {"transform": ax.transAxes, "color": "yellow", "fontsize": 7, "ha": "center", "va": "center"}
    for letter, (x, y) in ((top, (0.5, 0.95)), (bottom, (0.5, 0.05)), (left, (0.05, 0.5)), (right, (0.95, 0.5))):
        ax.text(x, y, letter, **style)
