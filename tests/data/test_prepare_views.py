"""The `view_set` config group of prepare.py (conf/view_set): view sets that replace the protocol's own
views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import compose_config
from x2ct.data.layout import DatasetLayout
from x2ct.data.prepare import load_prepare_config, protocol_geometry

REPO = Path(__file__).resolve().parents[2]

VIEW_SETS = {
    "pa_lateral": ([0, 90], ["pa", "lateral"]),
    "even4": ([0, 45, 90, 135], ["pa", "angle_45", "lateral", "angle_135"]),
    "even6": ([0, 30, 60, 90, 120, 150], ["pa", "angle_30", "angle_60", "lateral", "angle_120", "angle_150"]),
    "even8": ([0, 22.5, 45, 67.5, 90, 112.5, 135, 157.5],
              ["pa", "angle_22.5", "angle_45", "angle_67.5", "lateral", "angle_112.5", "angle_135", "angle_157.5"]),
    "clinical": ([0, 90, 45, 315], ["pa", "lateral", "angle_45", "angle_315"]),
}
# prepare.py at a tiny size: 2 phantoms on a 16^3 grid, a 16^2 detector
TINY = ["source.num_patients=2", "source.shape=[32,32,32]", "source.spacing_mm=[11,11,11]",
        "protocol.preprocess.spacing_mm=22", "protocol.preprocess.size=[16,16,16]",
        "protocol.geometry.detector_shape=[16,16]", "protocol.geometry.pixel_spacing_mm=[32,32]", "workers=1"]


def geometry_of(overrides: list[str]):
    cfg = load_prepare_config(compose_config("prepare", overrides))
    return cfg.protocol.geometry, *protocol_geometry(cfg.protocol)


@pytest.mark.parametrize("protocol", ["default", "c2rv", "x2ct_gan"])
@pytest.mark.parametrize("view_set", sorted(VIEW_SETS))
def test_a_view_set_replaces_the_protocols_views(protocol, view_set):
    angles, names = VIEW_SETS[view_set]
    config, geometry, view_names = geometry_of([f"protocol={protocol}", f"view_set={view_set}"])
    assert config.num_views is None and len(config.views) == len(angles)
    assert geometry.angles_deg == tuple(float(a) for a in angles)
    assert view_names == names
    # everything else is still the protocol's
    _, own, _ = geometry_of([f"protocol={protocol}"])
    assert (geometry.detector_shape, geometry.source_to_isocenter_mm) == (own.detector_shape,
                                                                          own.source_to_isocenter_mm)


def test_without_a_view_set_the_protocols_views_stand():
    assert geometry_of([])[1].angles_deg == (0.0, 90.0)
    c2rv, geometry, _ = geometry_of(["protocol=c2rv"])
    assert c2rv.views is None and c2rv.num_views == 8 and len(geometry.angles_deg) == 8
    # a command-line key still wins over the view set
    assert geometry_of(["view_set=even8", "protocol.geometry.views=[pa]"])[1].angles_deg == (0.0,)


def test_evenN_sets_equal_the_protocols_num_views_angles():
    for n in (4, 6, 8):
        _, by_count, _ = geometry_of(["protocol=c2rv", f"protocol.geometry.num_views={n}"])
        _, by_set, _ = geometry_of(["protocol=c2rv", f"view_set=even{n}"])
        assert by_set.angles_deg == by_count.angles_deg


def test_an_unknown_view_set_is_refused_with_the_choices():
    with pytest.raises(Exception, match=r"even5[\s\S]*even4"):
        compose_config("prepare", ["view_set=even5"])


def test_prepare_entrypoint_writes_the_four_even_views(tmp_path):
    root = tmp_path / "ds"
    args = [sys.executable, str(REPO / "prepare.py"), "view_set=even4", *TINY, f"output_dir={root}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    layout = DatasetLayout(root)
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["views"]["angles_deg"] == [0.0, 45.0, 90.0, 135.0]
    assert manifest["views"]["names"] == ["pa", "angle_45", "lateral", "angle_135"]
    assert manifest["geometry"]["angles_deg"] == [0.0, 45.0, 90.0, 135.0]
    for pid in manifest["patients"]:
        drr = np.load(layout.drr(pid))
        assert drr.shape == (4, 16, 16)
        # four different projections of the same chest, each with real attenuation in it
        assert drr.reshape(4, -1).max(axis=1).min() > 0.5
        assert min(np.abs(drr[i] - drr[j]).max() for i in range(4) for j in range(i + 1, 4)) > 0.1
    assert len(manifest["patients"]) == 2


def test_views_typed_for_the_view_set_is_refused_naming_view_set(tmp_path):
    args = [sys.executable, str(REPO / "prepare.py"), "views=even4", f"output_dir={tmp_path / 'ds'}"]
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "views=even4: the view set a data set stores is the group view_set" in result.stderr
    assert "write view_set=even4" in result.stderr and not (tmp_path / "ds").exists()
