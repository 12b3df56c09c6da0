"""Adversarial training (milestone 3): the two hooks, their effect on each network, and exact resume."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from tests.engine.test_train import run, tiny_cfg, train_losses
from tests.helpers import compose_config
from x2ct.data.dataset import PatientDRRDataset
from x2ct.engine.adversarial import AdversarialTraining
from x2ct.engine.build import build_adversarial
from x2ct.engine.distributed import DistInfo
from x2ct.engine.metrics_log import read_metrics
from x2ct.engine.precision import resolve_precision
from x2ct.models import BaselineUNet

TINY_D = {"base_channels": 4, "num_layers": 2}
ADV = ("adversarial=default", "adversarial.start_epoch=0", "adversarial.ramp_epochs=0", "adversarial.weight=0.1",
       *(f"adversarial.discriminators.{d}.{k}={v}" for d in ("volume", "projection")
         for k, v in (TINY_D | {"receptive_field": "null"}).items()))  # the configs' receptive_field gives way


def settings(**overrides):
    base = {"objective": "lsgan", "weight": 0.1, "start_epoch": 0, "ramp_epochs": 0, "d_steps": 1, "r1_gamma": 0.0,
            "grad_clip_norm": 1.0, "lr": 1e-3, "betas": [0.5, 0.999], "weight_decay": 0.0, "random_angles": 1,
            "discriminators": {
                "volume": {"_target_": "x2ct.adversarial.discriminators.PatchGAN3D", **TINY_D},
                "projection": {"_target_": "x2ct.adversarial.discriminators.PatchGAN2D", **TINY_D}}}
    return base | overrides


def setup(tiny_dataset, **overrides):
    import contextlib

    torch.manual_seed(0)
    data = PatientDRRDataset(tiny_dataset, "train")
    batch = [data[i] for i in range(2)]
    views, target = torch.stack([b["views"] for b in batch]), torch.stack([b["ct"] for b in batch])
    generator = BaselineUNet(view_size=32, volume_size=24, base_channels=4, depth=2, learned_prior=False)
    adversarial = AdversarialTraining(settings(**overrides), data.input_spec(), torch.device("cpu"),
                                      contextlib.nullcontext, None, 1, total_steps=100)
    return generator, adversarial, views, target


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_each_step_updates_its_own_network_only(tiny_dataset):
    generator, adversarial, views, target = setup(tiny_dataset)
    g_optimizer = torch.optim.SGD(generator.parameters(), lr=0.1)
    g0, d0 = snapshot(generator), snapshot(adversarial.nets)
    fake = generator(views).volume
    g_loss, parts = adversarial.generator_term(fake, epoch=0)
    assert {"adv_g_volume", "adv_g_projection"} <= set(parts) and g_loss.item() > 0
    g_loss.backward()
    assert all(p.grad is None for p in adversarial.nets.parameters())  # D is frozen during G's loss
    g_optimizer.step()
    assert changed(g0, generator) and not changed(d0, adversarial.nets)
    g1 = snapshot(generator)
    d_parts = adversarial.discriminator_step(fake.detach(), target, epoch=0)
    assert {"adv_d_volume", "adv_d_projection_real", "adv_d_grad_norm"} <= set(d_parts)
    assert changed(d0, adversarial.nets) and not changed(g1, generator)


def test_discriminator_loss_falls_while_the_generator_is_frozen(tiny_dataset):
    generator, adversarial, views, target = setup(tiny_dataset, random_angles=0)
    with torch.no_grad():
        fake = generator(views).volume
    losses = [adversarial.discriminator_step(fake, target, epoch=0)["adv_d_volume"] for _ in range(30)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_projection_discriminator_gradients_reach_the_generator_through_the_projector(tiny_dataset):
    generator, adversarial, views, _ = setup(tiny_dataset, discriminators={
        "projection": {"_target_": "x2ct.adversarial.discriminators.PatchGAN2D", **TINY_D}})
    assert set(adversarial.nets) == {"projection"}
    g_loss, _ = adversarial.generator_term(generator(views).volume, epoch=0)
    g_loss.backward()
    grads = [p.grad for p in generator.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_before_the_start_epoch_there_is_no_adversarial_term(tiny_dataset):
    generator, adversarial, views, target = setup(tiny_dataset, start_epoch=3)
    d0 = snapshot(adversarial.nets)
    loss, parts = adversarial.generator_term(generator(views).volume, epoch=2)
    assert loss.item() == 0 and parts == {}
    assert adversarial.discriminator_step(generator(views).volume.detach(), target, epoch=2) == {}
    assert not changed(d0, adversarial.nets)


def test_training_logs_both_networks_and_resumes_exactly(tiny_dataset, tmp_path):
    extra = (*ADV, "trainer.max_epochs=3", "trainer.checkpoint_every_epochs=1", "trainer.limit_train_batches=null")
    unbroken = tmp_path / "unbroken"
    run(tiny_cfg(tiny_dataset, tmp_path, *extra), unbroken)
    rows = [r for r in read_metrics(unbroken / "metrics.jsonl") if r["split"] == "train"]
    assert {"loss_adv_g_volume", "loss_adv_g_projection", "loss_adv_d_volume", "loss_adv_d_volume_real",
            "loss_adv_d_volume_fake", "loss_adv_d_grad_norm", "grad_norm"} <= set(rows[-1])

    stopped = tmp_path / "stopped"
    (stopped / "checkpoints").mkdir(parents=True)
    shutil.copy(unbroken / "checkpoints" / "epoch_0001.pt", stopped / "checkpoints" / "last.pt")
    shutil.copy(unbroken / "checkpoints" / "epoch_0001.pt", stopped / "checkpoints" / "best.pt")
    run(tiny_cfg(tiny_dataset, tmp_path, *extra, "resume=auto"), stopped)
    a = torch.load(unbroken / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    d_a, d_b = a["adversarial"]["nets"], b["adversarial"]["nets"]
    for key in d_a:
        torch.testing.assert_close(d_a[key], d_b[key], rtol=0, atol=0, msg=key)
    assert train_losses(unbroken, after_epoch=0) == train_losses(stopped, after_epoch=0)


def test_resuming_a_plain_run_with_adversarial_training_is_refused(tiny_dataset, tmp_path):
    from x2ct.engine.checkpoint import CheckpointError

    run_dir = tmp_path / "run"
    run(tiny_cfg(tiny_dataset, tmp_path), run_dir)
    with pytest.raises(CheckpointError, match="no adversarial state, but this run has one: resume it with adversarial"):
        run(tiny_cfg(tiny_dataset, tmp_path, *ADV, "trainer.max_epochs=3", "resume=auto"), run_dir)


def test_r1_penalty_is_applied_and_logged(tiny_dataset):
    generator, adversarial, views, target = setup(tiny_dataset, r1_gamma=10.0)
    with torch.no_grad():
        fake = generator(views).volume
    parts = adversarial.discriminator_step(fake, target, epoch=0)
    assert parts["adv_r1"] > 0


def test_conditional_volume_discriminator_sees_the_back_projected_views(tiny_dataset):
    """condition=backprojection: D judges (volume, input views back-projected onto its grid); another input for the
    same volume changes D's verdict, and both networks still train."""
    cond_d = {"_target_": "x2ct.adversarial.discriminators.PatchGAN3D", "condition_channels": 1, **TINY_D}
    generator, adversarial, views, target = setup(tiny_dataset, condition="backprojection",
                                                  discriminators={"volume": cond_d})
    data = PatientDRRDataset(tiny_dataset, "train")
    angles = torch.stack([data[i]["angles_deg"] for i in range(2)])
    condition = adversarial._condition(views, angles)
    assert condition.shape == target.shape and condition.abs().sum() > 0
    # the mean back-projection of each view: a voxel's condition is the mean of the views' pixels it projects on
    lifted, seen = adversarial.backprojection(views, angles, return_mask=True)
    torch.testing.assert_close(condition, (lifted * seen).sum(1) / seen.sum(1).clamp(min=1))
    with torch.no_grad():
        d = adversarial.nets["volume"]
        assert not torch.allclose(d(target, condition), d(target, adversarial._condition(views.flip(1), angles)))
    fake = generator(views).volume
    g_loss, _ = adversarial.generator_term(fake, 0, views, angles)
    g_loss.backward()
    d0 = snapshot(adversarial.nets)
    adversarial.discriminator_step(fake.detach(), target, 0, views, angles)
    assert changed(d0, adversarial.nets)
    with pytest.raises(ValueError, match="needs the input views"):
        adversarial.generator_term(fake, 0)
    with pytest.raises(ValueError, match="condition_channels=0"):
        setup(tiny_dataset, condition="backprojection")


def test_shipped_discriminators_take_their_layers_from_the_data_and_print_them(tiny_dataset, capsys):
    cfg = compose_config("train", ["adversarial=default"])
    spec = PatientDRRDataset(tiny_dataset, "train").input_spec()
    cpu = torch.device("cpu")

    def build(input_spec):
        return build_adversarial(cfg, input_spec, cpu, resolve_precision("fp32", cpu), DistInfo(), total_steps=10)

    # the phantom benchmark's 32^3 grid and 64^2 detector: half the side is 16 voxels / 32 pixels, so one layer
    adversarial = build(replace(spec, ct_size=(32, 32, 32), view_shape=(64, 64)))
    assert {name: net.num_layers for name, net in adversarial.nets.items()} == {"volume": 1, "projection": 1}
    assert capsys.readouterr().out.splitlines() == [
        "volume discriminator: 1 layer, receptive field 16 voxels of a 32^3 volume (14^3 logits)",
        "projection discriminator: 1 layer, receptive field 16 pixels of 64^2 views (30^2 logits)"]
    adversarial = build(replace(spec, ct_size=(128, 128, 128), view_shape=(128, 128)))
    assert {name: net.num_layers for name, net in adversarial.nets.items()} == {"volume": 2, "projection": 2}
    # the tiny 24^3 grid: half its side (12 voxels) is less than one layer's 16
    with pytest.raises(ValueError, match=r"adversarial\.discriminators\.volume\.receptive_field=0\.5 allows 12 "):
        build(spec)


def test_discriminator_too_deep_for_its_input_is_refused(tiny_dataset):
    deep = {"_target_": "x2ct.adversarial.discriminators.PatchGAN3D", "base_channels": 1, "num_layers": 4}
    with pytest.raises(ValueError, match=r"adversarial\.discriminators\.volume: 4 layers leave no logit"):
        setup(tiny_dataset, discriminators={"volume": deep})


def test_the_projector_backend_reaches_the_projection_discriminator_and_a_bad_one_is_named(tiny_dataset):
    with pytest.raises(ValueError, match=r"adversarial.projector_backend must be one of .*got 'cuda'"):
        setup(tiny_dataset, projector_backend="cuda")
    _, adversarial, _, target = setup(tiny_dataset, projector_backend="triton")
    # CPU tensors reach the fused kernels only under the Triton interpreter: refused, so the key got there
    with pytest.raises((ValueError, ImportError), match=r"TRITON_INTERPRET=1|pip install triton"):
        adversarial._logits(adversarial.nets, target, [0.0, 90.0])
    assert setup(tiny_dataset)[1].projector_backend == "grid_sample"
    assert compose_config("train", ["adversarial=default"]).adversarial.projector_backend == "grid_sample"


@pytest.mark.parametrize("patch", ["16", "[16]", "[null,16]"])
def test_a_patch_trained_cascade_with_discriminators_is_refused_naming_the_keys(patch, tiny_dataset):
    """The discriminators judge whole volumes and their DRRs; a cascade trained on patches returns a patch, which
    would fail mid-step (or, projected as if it were the grid, be judged as the wrong body)."""
    cfg = compose_config("train", ["experiment=benchmark/milestone2", "adversarial=default",
                                   f"model.train_patch_size={patch}"])
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"model\.train_patch_size=.*16.* set model\.train_patch_size=null or "
                                         r"adversarial=none"):
        build_adversarial(cfg, {}, cpu, resolve_precision("fp32", cpu), DistInfo(), total_steps=10)
    whole = compose_config("train", ["experiment=benchmark/milestone2", "adversarial=default",
                                     "model.train_patch_size=[null,null]"])
    spec = replace(PatientDRRDataset(tiny_dataset, "train").input_spec(), ct_size=(32, 32, 32), view_shape=(64, 64))
    adversarial = build_adversarial(whole, spec, cpu, resolve_precision("fp32", cpu), DistInfo(), total_steps=10)
    assert set(adversarial.nets) == {"volume", "projection"}
