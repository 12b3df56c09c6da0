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
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers import TINY_OVERRIDES, compose_config
from x2ct.config_files import register_resolvers
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
TINY_DISCRIMINATOR = {"base_channels": 4, "num_layers": 2, "receptive_field": "null"}
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
    cfg = compose_config("prepare", [*overrides, "source.num_patients=12", "view_set=even8", f"output_dir={root}"])
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

# name: (model group, per-rank batch b, optimizer steps, extra overrides). The hybrid (and the cascade's coarse
# hybrid) at this tiny size is numerically chaotic: instance norms over a few nearly flat pixels of 32^2 views blow
# rounding up by orders of magnitude per step (two runs 1e-7 apart after one step are 1e-4 apart after the next, in
# one process as in two), so they are compared after one optimizer step; the baseline after two.
EQUIVALENCE = {
    "baseline": ("baseline_unet", 1, 2, ["loss=medical_grade", "loss.weights.deep_supervision=0", *TINY_PERCEPTUAL]),
    "baseline_ema_accumulate": ("baseline_unet", 1, 2, ["trainer.ema_decay=0.5", "trainer.accumulate_grad_batches=2"]),
    "hybrid": ("hybrid_vit", 1, 1, ["loss=medical_grade", *TINY_PERCEPTUAL]),  # its deep-supervision heads in use
    "hybrid_ema_accumulate": ("hybrid_vit", 1, 1, ["trainer.ema_decay=0.5", "trainer.accumulate_grad_batches=2",
                                                   "loss=medical_grade", *TINY_PERCEPTUAL]),
    "cascade": ("multires", 1, 1, []),
    "cascade_ema_accumulate": ("multires", 1, 1, ["trainer.ema_decay=0.5", "trainer.accumulate_grad_batches=2"]),
}


# SGD with momentum: its step is proportional to the gradient, so a gradient averaged or scaled wrongly shows in the
# weights (Adam divides such a factor out), and float-order noise is not blown up where gradients are near zero
SGD = ["optimizer._target_=torch.optim.SGD", "~optimizer.betas", "optimizer.lr=0.05", "+optimizer.momentum=0.9"]


def _equivalence_cfg(root, out, model, batch, extra, steps=2):
    register_resolvers()
    name = {"baseline_unet": "BaselineUNet", "hybrid_vit": "HybridViT", "multires": "MultiResCascade"}[model]
    cfg = compose_config("train", _base(root, out, f"model={model}", *TINY_MODELS[name], f"data.batch_size={batch}",
                                        "trainer.max_epochs=1", "trainer.limit_val_batches=null", *SGD,
                                        "run_name=eq", *extra))
    cfg.trainer.limit_train_batches = steps * cfg.trainer.accumulate_grad_batches
    return cfg


def _max_diffs(a: dict, b: dict) -> dict[str, float]:
    return {key: (a[key] - b[key]).abs().max().item() for key in a}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EQUIVALENCE))
def test_two_ranks_with_batch_b_equal_one_process_with_batch_2b(eight_view_dataset, tmp_path, name, one_thread):
    """2 gloo ranks x batch b against 1 process over the same samples (DistributedSampler deals both the same
    permutation), after 1-2 optimizer steps: weights, EMA weights, step count and validation scores.

    Two single-process references: batch 2b (the standard), and batch b with twice the accumulation, whose
    micro-batches are computed exactly as each rank's. DDP must equal the second to float tolerance (only the
    order of a sum differs), and the first within their own distance: on the CPU a convolution over 2 samples
    rounds differently from two over 1, and at this tiny size instance norms over a few nearly flat pixels blow
    that up to about 1% of some gradients (seen in one process alone, without DDP). EMA copies taken before DDP's
    broadcast, a gradient averaged wrongly or a short accumulation group divided by the full count would differ
    by whole steps (SGD's step is proportional to the gradient)."""
    from x2ct.engine.trainer import train

    model, batch, steps, extra = EQUIVALENCE[name]
    cfg = _equivalence_cfg(eight_view_dataset, tmp_path, model, batch, extra, steps)
    runs = {"2b": tmp_path / "single_2b", "b_accumulated": tmp_path / "single_b", "ddp": tmp_path / "ddp"}
    train(_equivalence_cfg(eight_view_dataset, tmp_path, model, 2 * batch, extra, steps), run_dir=runs["2b"])
    twice = f"trainer.accumulate_grad_batches={2 * cfg.trainer.accumulate_grad_batches}"
    train(_equivalence_cfg(eight_view_dataset, tmp_path, model, batch, [*extra, twice], steps),
          run_dir=runs["b_accumulated"])
    _spawn([(name, cfg, runs["ddp"])], tmp_path)
    states = {k: torch.load(d / "checkpoints" / "last.pt", weights_only=True) for k, d in runs.items()}
    assert states["2b"]["step"] == states["b_accumulated"]["step"] == states["ddp"]["step"] == steps
    parts = ["model"] + (["ema"] if states["2b"]["ema"] is not None else [])
    for part in parts:
        weights = {k: s[part]["module"] if part == "ema" else s[part] for k, s in states.items()}
        for key, value in weights["b_accumulated"].items():
            torch.testing.assert_close(weights["ddp"][key], value, rtol=1e-5, atol=1e-6, msg=f"{part} {key}")
        floor = _max_diffs(weights["b_accumulated"], weights["2b"])
        for key, diff in _max_diffs(weights["ddp"], weights["2b"]).items():
            assert diff <= 2 * floor[key] + 1e-5, f"{part} {key}: {diff} from batch 2b (batch-size noise {floor[key]})"
    val = {k: [r for r in read_metrics(d / "metrics.jsonl") if r["split"] == "val"] for k, d in runs.items()}
    for metric, tight, loose in (("psnr", {"abs": 1e-3}, {"abs": 1e-2}), ("ssim", {"abs": 1e-5}, {"abs": 1e-4}),
                                 ("loss", {"rel": 1e-4}, {"rel": 1e-3})):
        assert val["ddp"][-1][metric] == pytest.approx(val["b_accumulated"][-1][metric], **tight), metric
        assert val["ddp"][-1][metric] == pytest.approx(val["2b"][-1][metric], **loose), metric


@pytest.mark.slow
def test_compiled_model_under_ddp_trains_like_the_eager_one(eight_view_dataset, tmp_path, one_thread):
    """trainer.compile=true under 2 ranks: DDP wraps the model, then torch.compile wraps DDP (the other order made
    ``forward_views`` call ``bool()`` on the compiled module); the weights follow the eager 1-process run. The
    aot_eager backend traces forward and backward through DDP's graph splitting like inductor, without its code
    generation (minutes on a cold cache on 2 cores); inductor itself: tests/models/test_compile_ready.py."""
    from x2ct.engine.trainer import train

    eager = _equivalence_cfg(eight_view_dataset, tmp_path, "baseline_unet", 2, [])
    train(eager, run_dir=tmp_path / "eager")
    compiled = _equivalence_cfg(eight_view_dataset, tmp_path, "baseline_unet", 1,
                                ["trainer.compile=true", "trainer.compile_backend=aot_eager"])
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
    if plain.adversarial is not None:
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
    """loss=l1 (no deep-supervision term) builds no auxiliary heads, a positive weight builds them: the loss weight
    is the one switch, and a model key set by hand is refused at start, naming the weight."""
    from omegaconf import OmegaConf

    from x2ct.engine.build import match_deep_supervision

    for weight, heads in ((0.0, False), (0.2, True)):
        hybrid = OmegaConf.create({"deep_supervision": None})
        cascade = OmegaConf.create({"coarse_kwargs": {"deep_supervision": None}})
        match_deep_supervision(hybrid, weight)
        match_deep_supervision(cascade, weight)
        assert hybrid.deep_supervision is heads and cascade.coarse_kwargs.deep_supervision is heads
    with pytest.raises(ValueError, match=r"model.deep_supervision=False is not a setting: .*loss.weights.deep_supervi"):
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


@pytest.mark.slow
def test_a_two_rank_run_with_ema_resumed_after_its_first_epoch_equals_the_unbroken_one(eight_view_dataset, tmp_path):
    """2 ranks, EMA and accumulation: a run stopped after epoch 1 and resumed (resume=auto) ends with the unbroken
    run's weights, EMA weights and validation scores, bit for bit (every rank's RNG restored, EMA after DDP)."""
    extra = [*EQUIVALENCE["baseline_ema_accumulate"][3], "trainer.checkpoint_every_epochs=1"]

    def cfg(epochs: int, *more: str):
        c = _equivalence_cfg(eight_view_dataset, tmp_path, "baseline_unet", 1, [*extra, *more], steps=2)
        c.trainer.max_epochs = epochs
        return c

    unbroken, stopped = tmp_path / "unbroken", tmp_path / "stopped"
    _spawn([("unbroken", cfg(2), unbroken)], tmp_path)
    (stopped / "checkpoints").mkdir(parents=True)  # what a run killed during its second epoch leaves
    for name in ("last.pt", "best.pt"):
        shutil.copy(unbroken / "checkpoints" / "epoch_0001.pt", stopped / "checkpoints" / name)
    _spawn([("resumed", cfg(2, "resume=auto"), stopped)], tmp_path)
    a = torch.load(unbroken / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for part in ("model", "ema"):
        left, right = (a[part], b[part]) if part == "model" else (a[part]["module"], b[part]["module"])
        for key in left:
            torch.testing.assert_close(right[key], left[key], rtol=0, atol=0, msg=f"{part} {key}")
    val = [[r["psnr"] for r in read_metrics(d / "metrics.jsonl") if r["split"] == "val"] for d in (unbroken, stopped)]
    assert val[0][-1] == val[1][-1]
