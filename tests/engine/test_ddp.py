"""DDP you can trust, on two gloo ranks on the CPU (which DDP treats like NCCL for these points):

- equivalence: 2 ranks with batch b give the same weights, EMA and validation scores after N steps as 1 process with
  batch 2b over the same samples, for the baseline, the hybrid and the cascade, with and without EMA and
  gradient accumulation (and with ``trainer.compile=true`` under DDP);
- the recipe matrix: every shipped experiment recipe, at tiny size, trains 2 steps on 2 ranks with its own loss
  and with ``loss=l1`` (unused deep-supervision heads would stop DDP on the second step);
- rank 0 preparing the data set for longer than the process group's timeout does not time the others out.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers import TINY_OVERRIDES, compose_config
from x2ct.engine.launch import register_resolvers
from x2ct.engine.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[2]
TINY_MODELS = {
    "BaselineUNet": ["model.base_channels=4", "model.depth=2"],
    "HybridViT": ["model.base_channels=4", "model.depth=3", "model.channel_multipliers=[1,2,4,8]",
                  "model.num_heads=2", "model.transformer_levels=[1]", "model.pyramid_channels=4",
                  "model.cross_view_grid=4", "model.cross_view_heads=2"],
    "MultiResCascade": ["model.stage_sizes=[12,24]", "model.refiner_channels=4", "model.coarse_kwargs.base_channels=4",
                        "model.coarse_kwargs.depth=2", "model.coarse_kwargs.channel_multipliers=[1,2,4]",
                        "model.coarse_kwargs.num_heads=2", "model.coarse_kwargs.transformer_levels=[1]",
                        "++model.coarse_kwargs.pyramid_channels=4", "++model.coarse_kwargs.cross_view_grid=4",
                        "++model.coarse_kwargs.cross_view_heads=2"],
}
TINY_PERCEPTUAL = ["loss.components.perceptual.weights=random", "loss.components.perceptual.slices_per_axis=2"]
TINY_ADVERSARIAL = ["adversarial.start_epoch=0", "adversarial.ramp_epochs=0"]
TINY_DISCRIMINATOR = {"base_channels": 4, "num_layers": 2}
RECIPES = sorted(str(p.relative_to(REPO / "conf" / "experiment").with_suffix(""))
                 for p in (REPO / "conf" / "experiment").rglob("*.yaml") if p.stem != "common")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def eight_view_dataset(tmp_path_factory) -> Path:
    """12 tiny phantoms (8 train) with 8 views at 0, 22.5, ..., 157.5 degrees: every recipe's views are there."""
    from x2ct.data.prepare import load_prepare_config, prepare_dataset

    root = tmp_path_factory.mktemp("ddp") / "phantom_even8"
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("source.num_patients")]
    cfg = compose_config("prepare", [*overrides, "source.num_patients=12", "views=even8", f"output_dir={root}"])
    assert prepare_dataset(load_prepare_config(cfg), progress=False).ok
    return root


@pytest.fixture
def one_thread():
    """The single-process runs compute with one thread, as each rank does: in a deep model with L1 terms the float
    noise of another thread count alone moves the first gradient by 5e-4 (relative)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _base(root: Path, out: Path, *extra: str) -> list[str]:
    return ["trainer=debug", "logger=none", f"data.root={root}", "data.prepare=null", "data.num_workers=0",
            "scheduler.warmup_steps=1", f"paths.output_dir={out}", "test_after_training=false", *extra]


def _train_cases(rank: int, world_size: int, ports: list[int], cases: list[tuple], log_dir: str) -> None:
    """Run ``train(cfg, run_dir)`` for each case as one rank of ``world_size`` (a fresh process group per case)."""
    from x2ct.engine.trainer import train

    register_resolvers()
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "WANDB_MODE": "disabled"})
    for port, (name, cfg, run_dir) in zip(ports, cases, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        try:
            train(cfg, run_dir=run_dir)
        except Exception as err:
            Path(log_dir, f"{name}.rank{rank}.error").write_text(f"{type(err).__name__}: {err}")
            raise


def _spawn(cases: list[tuple], tmp_path: Path) -> None:
    ports = [_free_port() for _ in cases]
    try:
        mp.spawn(_train_cases, args=(2, ports, cases, str(tmp_path)), nprocs=2, join=True)
    except Exception:
        errors = {p.name: p.read_text() for p in tmp_path.glob("*.error")}
        raise AssertionError(f"2-rank training failed: {errors}") from None


# ---------------------------------------------------------------------------------------------------- equivalence

EQUIVALENCE = {  # name: (model group, per-rank batch b, extra overrides)
    "baseline": ("baseline_unet", 1, ["loss=medical_grade", "loss.weights.deep_supervision=0", *TINY_PERCEPTUAL]),
    "baseline_ema_accumulate": ("baseline_unet", 1, ["trainer.ema_decay=0.5", "trainer.accumulate_grad_batches=2"]),
    "hybrid": ("hybrid_vit", 1, ["loss=medical_grade", *TINY_PERCEPTUAL]),  # its deep-supervision heads in use
    "hybrid_ema_accumulate": ("hybrid_vit", 1, ["trainer.ema_decay=0.5", "trainer.accumulate_grad_batches=2",
                                                "loss=medical_grade", *TINY_PERCEPTUAL]),
    "cascade": ("multires", 1, []),
    "cascade_ema_accumulate": ("multires", 1, ["trainer.ema_decay=0.5", "trainer.accumulate_grad_batches=2"]),
}


def _equivalence_cfg(root, out, model, batch, extra):
    register_resolvers()
    name = {"baseline_unet": "BaselineUNet", "hybrid_vit": "HybridViT", "multires": "MultiResCascade"}[model]
    return compose_config("train", _base(root, out, f"model={model}", *TINY_MODELS[name], f"data.batch_size={batch}",
                                         "trainer.limit_train_batches=4", "trainer.limit_val_batches=null",
                                         "optimizer.lr=1e-3", "run_name=eq", *extra))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EQUIVALENCE))
def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b(eight_view_dataset, tmp_path, name, one_thread):
    """Weights, EMA, optimiser step count and validation scores after 2 epochs (4 micro-batches of b per rank and
    epoch): 2 gloo ranks x b against 1 process x 2b over the same samples (DistributedSampler deals the same
    permutation to both). EMA copies taken before DDP's broadcast, or a short accumulation group divided by the
    full count, would show here."""
    from x2ct.engine.trainer import train

    model, batch, extra = EQUIVALENCE[name]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(_equivalence_cfg(eight_view_dataset, tmp_path, model, 2 * batch, extra), run_dir=single)
    _spawn([(name, _equivalence_cfg(eight_view_dataset, tmp_path, model, batch, extra), ddp)], tmp_path)
    one = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
    two = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)
    assert one["step"] == two["step"] > 0
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=2e-5, msg=key)
    if one["ema"] is not None:
        for key, value in one["ema"]["module"].items():
            torch.testing.assert_close(two["ema"]["module"][key], value, rtol=1e-4, atol=2e-5, msg=f"EMA {key}")
    val_one = [r for r in read_metrics(single / "metrics.jsonl") if r["split"] == "val"]
    val_two = [r for r in read_metrics(ddp / "metrics.jsonl") if r["split"] == "val"]
    assert [r["psnr"] for r in val_two] == pytest.approx([r["psnr"] for r in val_one], abs=1e-3)
    assert [r["loss"] for r in val_two] == pytest.approx([r["loss"] for r in val_one], rel=1e-4)


@pytest.mark.slow
def test_compiled_model_under_ddp_trains_like_the_eager_one(eight_view_dataset, tmp_path, one_thread):
    """trainer.compile=true under 2 ranks: DDP wraps the model, then torch.compile wraps DDP (the other order made
    ``forward_views`` call ``bool()`` on the compiled module); the weights follow the eager 1-process run. The
    aot_eager backend traces forward and backward through DDP's graph splitting like inductor, without its code
    generation (minutes on a cold cache on 2 cores); inductor itself: tests/models/test_compile_ready.py."""
    from x2ct.engine.trainer import train

    extra = ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    eager = _equivalence_cfg(eight_view_dataset, tmp_path, "baseline_unet", 2, extra)
    train(eager, run_dir=tmp_path / "eager")
    compiled = _equivalence_cfg(eight_view_dataset, tmp_path, "baseline_unet", 1, [*extra, "trainer.compile=true",
                                                                                    "trainer.compile_backend=aot_eager"])
    _spawn([("compiled", compiled, tmp_path / "compiled")], tmp_path)
    one = torch.load(tmp_path / "eager" / "checkpoints" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "compiled" / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in two["model"])
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-4, msg=key)


# ------------------------------------------------------------------------------------------------- recipe matrix


def _recipe_cfg(recipe: str, root: Path, out: Path, loss: str | None):
    register_resolvers()
    plain = compose_config("train", [f"experiment={recipe}"])
    model = plain.model._target_.rsplit(".", 1)[-1]
    extra = list(TINY_MODELS[model])
    if model == "MultiResCascade":
        if plain.model.train_patch_size is not None:
            extra.append("model.train_patch_size=12")
        if plain.model.infer_patch_size is not None:
            extra.append("model.infer_patch_size=12")
    if loss is not None:
        extra.append(f"loss={loss}")
    elif "perceptual" in plain.loss.weights:
        extra += TINY_PERCEPTUAL
    if plain.adversarial.get("enabled"):
        extra += TINY_ADVERSARIAL
        extra += [f"adversarial.discriminators.{d}.{k}={v}" for d, spec in plain.adversarial.discriminators.items()
                  if spec is not None for k, v in TINY_DISCRIMINATOR.items()]
    extra += ["data.batch_size=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", f"run_name={recipe.replace('/', '_')}_{loss or 'own'}"]
    return compose_config("train", [f"experiment={recipe}", *_base(root, out, *extra)])


def test_the_recipe_matrix_covers_every_shipped_recipe():
    assert {"baseline", "c2rv", "demo", "milestone1", "milestone2", "milestone3", "milestone4",
            "benchmark/milestone1", "benchmark/milestone4"} <= set(RECIPES)


@pytest.mark.slow
def test_every_recipe_trains_two_steps_on_two_ranks_with_its_own_loss_and_with_l1(eight_view_dataset, tmp_path):
    cases = [(f"{recipe}_{loss}".replace("/", "_"), _recipe_cfg(recipe, eight_view_dataset, tmp_path, loss),
              tmp_path / recipe.replace("/", "_") / str(loss))
             for recipe in RECIPES for loss in (None, "l1")]
    _spawn(cases, tmp_path)
    for name, _, run_dir in cases:
        state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
        assert state["step"] == 2, name
        train_rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
        assert train_rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in train_rows), name


def test_deep_supervision_heads_follow_the_loss_weight():
    """loss=l1 (no deep-supervision term) builds no auxiliary heads; a positive weight with the heads switched off
    by hand is refused at start, naming both keys."""
    from omegaconf import OmegaConf

    from x2ct.engine.build import match_deep_supervision

    hybrid = OmegaConf.create({"deep_supervision": True})
    match_deep_supervision(hybrid, 0.0)
    assert hybrid.deep_supervision is False
    cascade = OmegaConf.create({"coarse_kwargs": {"deep_supervision": True}})
    match_deep_supervision(cascade, 0.0)
    assert cascade.coarse_kwargs.deep_supervision is False
    match_deep_supervision(cascade, 0.2)  # the cascade's own stage outputs feed the term: allowed
    with pytest.raises(ValueError, match=r"loss.weights.deep_supervision=0.2 but model.deep_supervision=false"):
        match_deep_supervision(OmegaConf.create({"deep_supervision": False}), 0.2)


# ------------------------------------------------------------------------------------------- waiting for rank 0


def _wait_worker(rank: int, port: int, mode: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    from x2ct.engine.distributed import barrier, run_on_main_then_wait

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=2))

    def slow_preparation() -> None:
        time.sleep(5)  # longer than the group's 2 s timeout
        if mode == "fail":
            raise OSError("disk full")

    try:
        if mode == "plain barrier":
            if rank == 0:
                slow_preparation()
            barrier()
        else:
            run_on_main_then_wait(slow_preparation, timeout_s=60, what="preparing the data set /x")
        outcome = "ok"
    except Exception as err:
        outcome = f"{type(err).__name__}: {err}"
    Path(out_dir, f"rank{rank}.txt").write_text(outcome)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain barrier", "wait", "fail"])
def test_ranks_wait_for_rank0_longer_than_the_group_timeout(tmp_path, mode):
    mp.spawn(_wait_worker, args=(_free_port(), mode, str(tmp_path)), nprocs=2, join=True)
    outcomes = [Path(tmp_path, f"rank{r}.txt").read_text() for r in range(2)]
    if mode == "plain barrier":  # what the trainer did before: the waiting rank times out
        assert outcomes[1] != "ok"
    elif mode == "wait":
        assert outcomes == ["ok", "ok"]
    else:
        assert outcomes[0] == "OSError: disk full"
        assert outcomes[1] == "RuntimeError: rank 0 failed while preparing the data set /x: OSError: disk full"
