"""Milestone 4 end to end: N views chosen by count, view dropout, the geometric lift filled from the data set, the
projection-consistency loss, evaluation of the trained N-view model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.engine.test_train import tiny_train_overrides
from tests.helpers import TINY_OVERRIDES, compose_config
from x2ct.config_files import register_resolvers
from x2ct.engine.data import make_loaders
from x2ct.engine.distributed import DistInfo
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.trainer import build_run, train
from x2ct.evaluation.evaluator import EvaluationSettings, evaluate

TINY_HYBRID = ["model.base_channels=4", "model.depth=3", "model.channel_multipliers=[1,2,4,8]", "model.num_heads=2",
               "model.transformer_levels=[1]", "model.pyramid_channels=4", "model.cross_view_grid=4",
               "model.cross_view_heads=2", "loss.components.perceptual.weights=random",
               "loss.components.perceptual.slices_per_axis=2"]


@pytest.fixture(scope="module")
def four_view_dataset(tmp_path_factory) -> Path:
    """The tiny phantoms with 4 views at 0, 45, 90, 135 degrees (prepare.py view_set=even4)."""
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    root = tmp_path_factory.mktemp("four_views") / "phantom_even4"
    cfg = compose_config("prepare", [*TINY_OVERRIDES, "view_set=even4", f"output_dir={root}"])
    assert prepare_dataset(load_prepare_config(cfg), progress=False).ok
    return root


def m4_cfg(root, out, *extra):
    register_resolvers()
    base = [o for o in tiny_train_overrides(root, out) if not o.startswith("model.")]  # baseline-only keys
    return compose_config("train", [*base, "experiment=milestone4", "trainer=debug", "logger=none", *TINY_HYBRID,
                                    *extra])


def test_the_recipe_and_the_lift_group_compose(tmp_path):
    register_resolvers()
    cfg = compose_config("train", ["experiment=milestone4"])
    assert cfg.model.lift == "geometric" and cfg.model.fusion == "attention" and cfg.model.view_angle_embedding
    assert cfg.data.num_views == 8 and cfg.data.views is None and cfg.loss.weights.projection == 0.1
    assert compose_config("train", ["experiment=milestone4", "lift=learned"]).model.lift == "learned"
    assert compose_config("train", ["lift=geometric"]).model.lift == "geometric"  # any model: the baseline too
    assert compose_config("train", []).model.lift == "learned"


def test_view_dropout_draws_a_subset_per_batch_and_keeps_the_pa_view(four_view_dataset, tmp_path):
    cfg = m4_cfg(four_view_dataset, tmp_path, "data.num_views=4", "data.batch_size=1",
                 "data.view_dropout={min_views:2,always:[0]}")
    train_set, train_loader, _, val_loader, _ = make_loaders(cfg.data, four_view_dataset, DistInfo(), 0)
    assert train_set.view_names == ["pa", "angle_45", "lateral", "angle_135"]
    torch.manual_seed(0)
    counts = set()
    for _ in range(6):
        for batch in train_loader:
            v = batch["views"].shape[1]
            counts.add(v)
            assert batch["angles_deg"].shape == (1, v) and batch["angles_deg"][0, 0] == 0.0 and 2 <= v <= 4
    assert counts == {2, 3, 4}
    assert all(batch["views"].shape[1] == 4 for batch in val_loader)  # validation sees every view


def test_milestone4_trains_with_dropout_and_projection_loss_and_evaluates(four_view_dataset, tmp_path):
    cfg = m4_cfg(four_view_dataset, tmp_path, "data.num_views=4", "data.view_dropout={min_views:2,always:[0]}")
    run_dir = tmp_path / "run"
    train(cfg, run_dir=run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert all(math.isfinite(r["loss_projection"]) and r["loss_projection"] > 0 for r in train_rows)
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    model_cfg = state["config"]["model"]
    assert model_cfg["geometry"]["angles_deg"] == [0.0, 45.0, 90.0, 135.0] and model_cfg["lift"] == "geometric"
    assert model_cfg["volume_fov_mm"] == [352.0, 352.0, 352.0] and model_cfg["num_views"] == 4
    result = evaluate(EvaluationSettings(checkpoint=run_dir / "checkpoints" / "best.pt", out_dir=tmp_path / "e",
                                         save_volumes=False, save_figures=False))
    trainer = json.loads((run_dir / "test_metrics.json").read_text())
    assert result.summary["psnr"]["mean"] == pytest.approx(trainer["psnr"], abs=1e-4)

    # the same model on fewer views: rows equal the model run on those views with their angles
    from evaluate import main as evaluate_main
    from x2ct.data.dataset import PatientDRRDataset
    from x2ct.engine.trained_model import load_trained_model
    from x2ct.ops.metrics import psnr

    checkpoint = run_dir / "checkpoints" / "best.pt"
    assert evaluate_main([str(checkpoint), "--num-views", "2", "--no-volumes", "--no-figures"]) == 0
    two = json.loads((run_dir / "evaluation" / "best_test_2views_pa-lateral" / "per_patient.json").read_text())
    named = evaluate(EvaluationSettings(checkpoint=checkpoint, out_dir=tmp_path / "e3", views=["lateral", "angle_135",
                                        "pa"], save_volumes=False, save_figures=False))
    trained = load_trained_model(checkpoint)
    for views, rows in ((["pa", "lateral"], two), (["lateral", "angle_135", "pa"], named.rows)):
        dataset = PatientDRRDataset(four_view_dataset, "test", views=views)
        assert [r["patient_id"] for r in rows] == dataset.patient_ids
        for i, row in enumerate(rows):
            item = dataset[i]
            with torch.no_grad():
                pred = trained.model(item["views"][None], angles_deg=item["angles_deg"][None]).volume.clamp(0, 1)
            assert row["psnr"] == pytest.approx(psnr(pred[0, 0].double(), item["ct"][0].double()).item(), abs=1e-4)
    assert json.loads((tmp_path / "e3" / "summary.json").read_text())["context"]["views"] == ["lateral", "angle_135",
                                                                                              "pa"]
    assert [r["psnr"] for r in two] != [r["psnr"] for r in result.rows]  # fewer views: another prediction


def test_asking_for_views_the_data_set_lacks_names_them(four_view_dataset, tmp_path):
    cfg = m4_cfg(four_view_dataset, tmp_path, "data.num_views=6")
    with pytest.raises(ValueError, match=r"missing \[30"):
        train(cfg, run_dir=tmp_path / "run")


def test_c2rv_recipe_composes_and_trains_its_cascade_at_tiny_size(four_view_dataset, tmp_path):
    """experiment=c2rv: the cascade with the geometric lift in every stage and angle embedding in the coarse model;
    at tiny size (12^3 -> 24^3, 4 views) it trains, validates tile by tile and tests."""
    register_resolvers()
    cfg = compose_config("train", ["experiment=c2rv"])
    assert cfg.model.stage_sizes == [64, 128, 256] and cfg.model.lift == "geometric" and cfg.data.num_views == 8
    assert cfg.model.coarse_kwargs.view_angle_embedding and cfg.model.coarse_kwargs.fusion == "attention"
    base = [o for o in tiny_train_overrides(four_view_dataset, tmp_path) if not o.startswith("model.")]
    cfg = compose_config("train", [
        *base, "experiment=c2rv", "trainer=debug", "logger=none", "data.num_views=4",
        "loss.components.perceptual.weights=random", "loss.components.perceptual.slices_per_axis=2",
        "model.stage_sizes=[12,24]", "model.train_patch_size=12", "model.infer_patch_size=12",
        "model.refiner_channels=4", "model.coarse_kwargs.base_channels=4", "model.coarse_kwargs.depth=2",
        "model.coarse_kwargs.channel_multipliers=[1,2,4]", "model.coarse_kwargs.num_heads=2",
        "model.coarse_kwargs.transformer_levels=[1]", "+model.coarse_kwargs.pyramid_channels=4",
        "+model.coarse_kwargs.cross_view_grid=4", "+model.coarse_kwargs.cross_view_heads=2"])
    run_dir = tmp_path / "run"
    train(cfg, run_dir=run_dir)
    val = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "val"]
    assert val and all(math.isfinite(r["psnr"]) and math.isfinite(r["psnr_stage1"]) for r in val)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("coarse.angle_embedding.") for k in state["model"])


def test_view_dropout_below_the_models_minimum_view_count_is_refused_at_start(four_view_dataset, tmp_path):
    # cross-view attention needs 2 views: min_views=1 would stop the run at the first batch that draws one view
    cfg = m4_cfg(four_view_dataset, tmp_path, "data.num_views=4", "data.view_dropout={min_views:1}")
    with pytest.raises(ValueError, match=r"data\.view_dropout\.min_views=1 .*HybridViT.* at least 2 views"):
        build_run(cfg, DistInfo(), tmp_path / "run")
    cfg = m4_cfg(four_view_dataset, tmp_path, "data.num_views=4", "data.view_dropout={min_views:2}")
    assert build_run(cfg, DistInfo(), tmp_path / "run").model.min_views == 2


def test_view_dropout_with_a_model_built_for_a_fixed_view_count_is_refused(four_view_dataset, tmp_path):
    cfg = m4_cfg(four_view_dataset, tmp_path, "data.num_views=4", "data.view_dropout={min_views:2}",
                 "model.fusion=concat")
    with pytest.raises(ValueError, match=r"data\.view_dropout draws a different number of views"):
        train(cfg, run_dir=tmp_path / "run")
