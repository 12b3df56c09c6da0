"""Comparison figures: panel layout, radiological orientation, windowing, error map, and the written PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from x2ct.evaluation.figures import (
    ERROR_COLORBAR_LABEL,
    HU_COLORBAR_LABEL,
    build_comparison_figure,
    figure_layout,
    save_figure,
)

SHAPE = (12, 14, 16)  # (D, H, W): all different, so a transposed slice cannot pass
HU_WINDOW = (-500.0, 700.0)
VIEW_NAMES = ["PA", "lateral"]
# A bright block near the patient's right, anterior and superior corner, and slices cut through it.
BLOCK = (slice(8, 11), slice(10, 13), slice(12, 15))
THROUGH_BLOCK = (9, 11, 13)


@pytest.fixture
def volumes():
    rng = np.random.default_rng(0)
    pred = np.full(SHAPE, -1000.0, dtype=np.float32)
    pred[BLOCK] = 1000.0
    target = pred + rng.normal(0.0, 40.0, SHAPE).astype(np.float32)
    views = rng.random((2, 20, 24)).astype(np.float32)
    return views, pred, target


def _axes_by_label(fig) -> dict:
    return {ax.get_label(): ax for ax in fig.axes}


def _image(fig, label) -> np.ndarray:
    (image,) = _axes_by_label(fig)[label].get_images()
    return np.asarray(image.get_array())


def test_layout_four_rows_with_target_two_without(volumes):
    views, pred, target = volumes
    assert figure_layout(VIEW_NAMES, with_target=True) == [
        VIEW_NAMES,
        ["prediction axial", "prediction coronal", "prediction sagittal"],
        ["target axial", "target coronal", "target sagittal"],
        ["error axial", "error coronal", "error sagittal"],
    ]
    fig = build_comparison_figure(views, VIEW_NAMES, pred, target, hu_window=HU_WINDOW)
    axes = _axes_by_label(fig)
    panels = [name for row in figure_layout(VIEW_NAMES, True) for name in row]
    assert sorted(axes) == sorted([*panels, "colorbar HU", "colorbar error"])
    assert len(fig.axes) == 2 + 3 + 3 + 3 + 2
    for name in panels:
        assert axes[name].get_title() == name and len(axes[name].get_images()) == 1
    assert axes["colorbar HU"].get_ylabel() == HU_COLORBAR_LABEL
    assert axes["colorbar error"].get_ylabel() == ERROR_COLORBAR_LABEL
    assert [axes[n].get_ylabel() for n in ("PA", "prediction axial", "target axial", "error axial")] == [
        "input X-rays", "prediction", "target", "absolute error"]
    # rows are stacked top to bottom
    tops = [axes[n].get_subplotspec().rowspan.start for n in ("PA", "prediction axial", "target axial", "error axial")]
    assert tops == [0, 1, 2, 3]

    inference = build_comparison_figure(views[:1], ["PA"], pred)
    assert sorted(_axes_by_label(inference)) == sorted(
        ["PA", "prediction axial", "prediction coronal", "prediction sagittal", "colorbar HU"])


def test_slices_are_radiological_and_land_where_the_block_is(volumes):
    views, pred, target = volumes
    fig = build_comparison_figure(views, VIEW_NAMES, pred, target, slice_index=THROUGH_BLOCK)
    d, h, w = THROUGH_BLOCK
    np.testing.assert_array_equal(_image(fig, "prediction axial"), np.flip(pred[d], (0, 1)))
    np.testing.assert_array_equal(_image(fig, "prediction coronal"), np.flip(pred[:, h], (0, 1)))
    np.testing.assert_array_equal(_image(fig, "prediction sagittal"), np.flip(pred[:, :, w], (0, 1)))
    np.testing.assert_array_equal(_image(fig, "target axial"), np.flip(target[d], (0, 1)))

    def bright_centre(label):
        rows, cols = np.nonzero(_image(fig, label) > 0)
        return rows.mean() / _image(fig, label).shape[0], cols.mean() / _image(fig, label).shape[1]

    # axial: anterior up, patient right on the image left
    row, col = bright_centre("prediction axial")
    assert row < 0.3 and col < 0.3
    # coronal: head up, patient right on the left
    row, col = bright_centre("prediction coronal")
    assert row < 0.3 and col < 0.3
    # sagittal: head up, anterior on the left
    row, col = bright_centre("prediction sagittal")
    assert row < 0.3 and col < 0.3


def test_default_slices_are_the_middle_ones(volumes):
    views, pred, target = volumes
    fig = build_comparison_figure(views, VIEW_NAMES, pred + np.arange(SHAPE[0])[:, None, None], target)
    expected = np.flip(pred[SHAPE[0] // 2] + SHAPE[0] // 2, (0, 1))
    np.testing.assert_array_equal(_image(fig, "prediction axial"), expected)


def test_windows_aspect_and_error_map(volumes):
    views, pred, target = volumes
    spacing = (2.5, 1.0, 0.8)
    fig = build_comparison_figure(views, VIEW_NAMES, pred, target, spacing_mm=spacing, hu_window=HU_WINDOW)
    axes = _axes_by_label(fig)
    d, h, w = (n // 2 for n in SHAPE)
    for name in ("prediction", "target"):
        for plane in ("axial", "coronal", "sagittal"):
            (image,) = axes[f"{name} {plane}"].get_images()
            assert image.get_clim() == HU_WINDOW
            assert image.get_cmap().name == "gray"
    assert axes["prediction axial"].get_aspect() == pytest.approx(1.0 / 0.8)
    assert axes["prediction coronal"].get_aspect() == pytest.approx(2.5 / 0.8)
    assert axes["prediction sagittal"].get_aspect() == pytest.approx(2.5 / 1.0)

    errors = {
        "axial": np.flip(np.abs(pred[d] - target[d]), (0, 1)),
        "coronal": np.flip(np.abs(pred[:, h] - target[:, h]), (0, 1)),
        "sagittal": np.flip(np.abs(pred[:, :, w] - target[:, :, w]), (0, 1)),
    }
    scale = np.percentile(np.concatenate([e.ravel() for e in errors.values()]), 99.5)
    for plane, error in errors.items():
        (image,) = axes[f"error {plane}"].get_images()
        np.testing.assert_allclose(np.asarray(image.get_array()), error, atol=1e-4)
        assert image.get_cmap().name == "magma"
        assert image.get_clim() == pytest.approx((0.0, scale))

    fixed = build_comparison_figure(views, VIEW_NAMES, pred, target, error_max_hu=250.0)
    (image,) = _axes_by_label(fixed)["error sagittal"].get_images()
    assert image.get_clim() == (0.0, 250.0)


def test_views_use_their_own_percentile_window(volumes):
    views, pred, target = volumes
    views = views * np.array([1.0, 300.0], dtype=np.float32)[:, None, None]  # very different ranges
    fig = build_comparison_figure(views, VIEW_NAMES, pred, target)
    for name, view in zip(VIEW_NAMES, views, strict=True):
        (image,) = _axes_by_label(fig)[name].get_images()
        np.testing.assert_array_equal(np.asarray(image.get_array()), view)
        assert image.get_clim() == pytest.approx(tuple(np.percentile(view, (1, 99))))


def test_save_figure_writes_png_atomically(tmp_path, volumes):
    views, pred, target = volumes
    dpi = 40
    figure = build_comparison_figure(views, VIEW_NAMES, pred, target, title="patient 0")
    path = save_figure(tmp_path / "figs" / "patient.png", figure, dpi=dpi)
    assert path == tmp_path / "figs" / "patient.png"
    width_in, height_in = figure.get_size_inches()
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (round(width_in * dpi), round(height_in * dpi))
        png.load()
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["patient.png"]

    inference = save_figure(tmp_path / "infer.png", build_comparison_figure(views, VIEW_NAMES, pred), dpi=dpi)
    with Image.open(inference) as png:
        assert png.size[1] < round(height_in * dpi)  # two rows, not four


def test_bad_inputs_are_named(volumes):
    views, pred, target = volumes
    with pytest.raises(ValueError, match="view names"):
        build_comparison_figure(views, ["PA"], pred, target)
    with pytest.raises(ValueError, match="target shape"):
        build_comparison_figure(views, VIEW_NAMES, pred, target[:-1])
    with pytest.raises(ValueError, match="slice_index"):
        build_comparison_figure(views, VIEW_NAMES, pred, target, slice_index=(0, 0, SHAPE[2]))
    bad = pred.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="pred holds NaN"):
        build_comparison_figure(views, VIEW_NAMES, bad, target)


def test_unscanned_voxels_are_left_out_of_the_error_maps_and_their_scale(volumes):
    views, pred, target = volumes
    pred = pred.copy()
    scanned = np.ones(pred.shape, dtype=bool)
    scanned[:2] = False  # two axial slices nobody scanned, where the prediction is far off
    pred[:2] += 3000.0
    fig = build_comparison_figure(views, VIEW_NAMES, pred, target, hu_window=HU_WINDOW, scanned=scanned)
    coronal = _image(fig, "error coronal")
    # radiological display puts superior at the top: the two unscanned slices are the bottom rows, masked
    assert np.isnan(coronal[-2:]).all() and not np.isnan(coronal[:-2]).any()
    plain = build_comparison_figure(views, VIEW_NAMES, pred, target, hu_window=HU_WINDOW)
    scale = _axes_by_label(fig)["error coronal"].get_images()[0].get_clim()[1]
    assert scale < _axes_by_label(plain)["error coronal"].get_images()[0].get_clim()[1]
    with pytest.raises(ValueError, match="scanned mask"):
        build_comparison_figure(views, VIEW_NAMES, pred, target, hu_window=HU_WINDOW, scanned=scanned[1:])
