"""One view in, a volume out: every model family trains, validates and predicts from the PA view alone; a model
that cannot use one view (cross-view attention) is refused at start naming the keys to set, never mid-run."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.test_ddp import TINY_MODELS
from tests.engine.test_train import tiny_train_overrides
from tests.helpers import compose_config
from x2ct.config_files import register_resolvers
from x2ct.engine.distributed import DistInfo
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.trained_model import load_trained_model
from x2ct.engine.trainer import build_run, train
from x2ct.inference import input_spec, predict_volume

REPO = Path(__file__).resolve().parents[2]
NO_CROSS_VIEW = {"HybridViT": ["model.cross_view=false"], "MultiResCascade": ["++model.coarse_kwargs.cross_view=false"]}
FAMILIES = {"baseline_unet": "BaselineUNet", "hybrid_vit": "HybridViT", "multires": "MultiResCascade"}
TINY_PERCEPTUAL = ["loss.components.perceptual.weights=random", "loss.components.perceptual.slices_per_axis=2"]


def _cfg(root: Path, out: Path, *extra: str):
    register_resolvers()
    base = [o for o in tiny_train_overrides(root, out) if not o.startswith("model.")]
    return compose_config("train", [*base, "data.views=[pa]", *extra])


def _family_cfg(family: str, root: Path, out: Path, *extra: str):
    name = FAMILIES[family]
    return _cfg(root, out, f"model={family}", *TINY_MODELS[name], *NO_CROSS_VIEW.get(name, []), *extra)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_model_family_trains_and_predicts_from_the_pa_view_alone(family, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    extra = ["model.train_patch_size=null", "model.infer_patch_size=null"] if family == "multires" else []
    train(_family_cfg(family, tiny_dataset, tmp_path, *extra), run_dir=run_dir)
    val = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "val"]
    assert val and all(math.isfinite(r["psnr"]) for r in val)
    trained = load_trained_model(run_dir / "checkpoints" / "best.pt", device="cpu")
    spec = input_spec(trained)
    assert spec.views == ("pa",) and trained.config["model"]["num_views"] == 1
    view = torch.rand(1, 1, *spec.view_shape)
    volume = predict_volume(trained, view, spec)
    assert volume.hu.shape == spec.ct_size and torch.isfinite(torch.as_tensor(volume.hu)).all()


def test_milestone4_from_the_pa_view_is_milestone4_without_what_needs_a_second_view(tiny_dataset, tmp_path):
    register_resolvers()
    pa, two = (compose_config("train", [f"experiment=benchmark/{name}"]) for name in ("milestone4_pa", "milestone4"))
    assert pa.data.views == ["pa"] and pa.data.num_views is None and two.data.num_views == 2
    assert not pa.model.cross_view and not pa.model.view_angle_embedding and two.model.view_angle_embedding
    for group in ("loss", "optimizer", "scheduler", "trainer"):
        assert pa[group] == two[group], group
    differs = {k for k in two.model if pa.model.get(k) != two.model[k]}
    assert differs == {"cross_view", "view_angle_embedding"}
    # and it trains at tiny size (the geometric lift back-projects the one view)
    base = [o for o in tiny_train_overrides(tiny_dataset, tmp_path) if not o.startswith("model.")]
    cfg = compose_config("train", [*base, "experiment=benchmark/milestone4_pa", "trainer=debug", "logger=none",
                                   *TINY_MODELS["HybridViT"], *TINY_PERCEPTUAL])
    train(cfg, run_dir=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith(("cross_view.", "angle_embedding.")) for k in state["model"])


@pytest.mark.parametrize(("family", "keys"), [
    ("hybrid_vit", r"set model\.cross_view=false \(the cascade's coarse model"),
    ("multires", r"set model\.cross_view=false"),
])
def test_cross_view_attention_on_one_view_is_refused_at_start_naming_the_key(family, keys, tiny_dataset, tmp_path):
    name = FAMILIES[family]
    cfg = _cfg(tiny_dataset, tmp_path, f"model={family}", *TINY_MODELS[name])
    with pytest.raises(ValueError, match=rf"HybridViT: built for one view \(num_views=1, e\.g\. data\.views=\[pa\]\)"
                                         rf".*{keys}"):
        build_run(cfg, DistInfo(), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_milestone4_on_one_view_names_both_keys(tiny_dataset, tmp_path):
    base = [o for o in tiny_train_overrides(tiny_dataset, tmp_path) if not o.startswith("model.")]
    cfg = compose_config("train", [*base, "experiment=benchmark/milestone4", "data.views=[pa]", "data.num_views=null",
                                   *TINY_MODELS["HybridViT"], *TINY_PERCEPTUAL])
    with pytest.raises(ValueError, match=r"set model\.cross_view=false and model\.view_angle_embedding=false"):
        build_run(cfg, DistInfo(), tmp_path / "run")


@pytest.mark.slow
def test_train_py_on_one_view_with_cross_view_attention_stops_before_the_first_step(tiny_dataset, tmp_path):
    overrides = [o for o in tiny_train_overrides(tiny_dataset, tmp_path) if not o.startswith("model.")]
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *overrides, "experiment=benchmark/milestone1",
                             "data.views=[pa]", *TINY_MODELS["HybridViT"], *TINY_PERCEPTUAL, "run_name=pa"],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1
    assert "set model.cross_view=false" in result.stderr
    assert "epoch 1" not in result.stdout + result.stderr  # refused at start, not at the first step
