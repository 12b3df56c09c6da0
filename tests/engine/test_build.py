"""Tests for x2ct/engine/build.py's throughput switches: the memory format (``trainer.memory_format``) with the
``instance_group`` norm it pairs with, and the model compiled with its loss (``trainer.compile_loss``,
``trainer.compile_mode``): the same values and gradients as the contiguous, InstanceNorm, eager model, to float32
tolerance.

Tiny models (16^3 volumes, two 32^2 views, base width 4) of every model family, in training mode (deep
supervision on), with the heads that start at zero given random weights so every layer reaches the output."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import compose_config
from x2ct.engine.build import build_model, compile_forward_and_loss, to_memory_format
from x2ct.engine.config_schema import validate_train_config
from x2ct.engine.precision import resolve_precision
from x2ct.engine.step import ForwardAndLoss, TrainStep
from x2ct.losses import ReconstructionLoss
from x2ct.models.baseline_unet import BaselineUNet
from x2ct.models.blocks.layout import as_layout_of, cat_like
from x2ct.models.hybrid_vit import HybridViT
from x2ct.models.multires import MultiResCascade

ANGLES = (0.0, 90.0)
COMMON = dict(num_views=2, view_size=32, volume_size=16, view_angles_deg=ANGLES)
TINY_HYBRID = dict(base_channels=4, depth=2, channel_multipliers=(1, 2, 4), transformer_levels=(1,), num_heads=2,
                   pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)
TINY_BASELINE = dict(base_channels=4, depth=2, encoder_blocks=1, bottleneck_blocks=1)
MODELS = {
    "baseline_unet": lambda norm: BaselineUNet(**COMMON, **TINY_BASELINE, norm=norm),
    "hybrid_vit": lambda norm: HybridViT(**COMMON, **TINY_HYBRID, norm=norm),
    # the refiners' 3D norm stays "layer" (patch-safe); the coarse hybrid and the view branches take the switch
    "multires": lambda norm: MultiResCascade(**COMMON, stage_sizes=(8, 16), coarse_kwargs={**TINY_HYBRID, "norm": norm},
                                             refiner_channels=4, norm=norm),
}


def build(name: str, norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS[name](norm).train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d) and not module.weight.any():
                module.weight.normal_(0.0, 0.1)
    return model


def outputs_and_grads(model: torch.nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The volume and deep-supervision outputs of one batch, and the parameters' gradients of a weighted sum."""
    generator = torch.Generator().manual_seed(1)
    views = torch.rand(2, 2, 1, 32, 32, generator=generator)
    out = model(views, torch.tensor([ANGLES] * 2))
    volumes = [out.volume, *out.deep_supervision]
    total = sum((v * torch.randn(v.shape, generator=generator)).sum() for v in volumes)
    total.backward()
    return [v.detach() for v in volumes], {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, grad_scale: float = 1e-5) -> None:
    """Outputs and gradients equal up to float32 rounding: outputs within 1e-5 of the largest output, gradients
    within ``grad_scale`` of the largest gradient (gradients that are zero in exact arithmetic, e.g. a key
    projection's bias under softmax, are rounding noise of order 1e-6 in both runs, so a per-tensor relative
    tolerance would not fit them)."""
    (volumes_a, grads_a), (volumes_b, grads_b) = a, b
    assert len(volumes_a) == len(volumes_b) and grads_a.keys() == grads_b.keys()
    for group_a, group_b, scale in ((volumes_a, volumes_b, 1e-5),
                                    (list(grads_a.values()), list(grads_b.values()), grad_scale)):
        largest = max((t.abs().max().item() for t in group_a), default=0.0)
        for x, y in zip(group_a, group_b, strict=True):
            torch.testing.assert_close(y, x, rtol=0.0, atol=scale * largest)


@pytest.mark.parametrize("name", ["baseline_unet", "hybrid_vit"])
def test_instance_group_models_load_instance_weights_and_compute_the_same(name):
    instance, grouped = build(name, "instance"), build(name, "instance_group")
    grouped.load_state_dict(instance.state_dict())  # strict: the same parameter names and shapes
    assert_same(outputs_and_grads(instance), outputs_and_grads(grouped))


@pytest.mark.parametrize("name", list(MODELS))
def test_channels_last_3d_trains_like_contiguous(name):
    contiguous = build(name, "instance_group")
    channels_last = to_memory_format(copy.deepcopy(contiguous), "channels_last_3d")
    convs = [m for m in channels_last.modules() if isinstance(m, torch.nn.Conv3d) and min(m.kernel_size) > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    assert all(torch.equal(a, b) for a, b in zip(channels_last.state_dict().values(),
                                                  contiguous.state_dict().values(), strict=True))
    # gradients: 1e-3 of the largest; measured against a float64 run, the cascade's view-branch stem gradient is
    # 3e-4 off in the contiguous float32 run and 1.3e-5 in the channels-last one (hybrid_vit: 4e-6 and 4e-6)
    assert_same(outputs_and_grads(contiguous), outputs_and_grads(channels_last), grad_scale=1e-3)


def conv_inputs_off_layout(model: torch.nn.Module, layout: torch.memory_format) -> tuple[list[str], int]:
    """The names of the 3D convolutions with a kernel above 1 whose input in one training forward is not laid out as
    ``layout`` (an input where both layouts coincide, one channel or a 1^3 grid, counts as laid out), and how many
    such convolutions ran."""
    off, seen = [], []

    def check(name: str, inputs: tuple[torch.Tensor, ...]) -> None:
        seen.append(name)
        if not inputs[0].is_contiguous(memory_format=layout):
            off.append(name)

    hooks = [m.register_forward_pre_hook(lambda _, inputs, name=name: check(name, inputs))
             for name, m in model.named_modules() if isinstance(m, torch.nn.Conv3d) and min(m.kernel_size) > 1]
    try:
        model(torch.rand(2, 2, 1, 32, 32), torch.tensor([ANGLES] * 2))
    finally:
        for hook in hooks:
            hook.remove()
    return off, len(seen)


@pytest.mark.parametrize("name", list(MODELS))
def test_channels_last_3d_reaches_every_3d_convolution(name):
    # the fused view volume, the lifted features and the 1x1x1 convolutions' outputs (contiguous on the CPU's
    # single-threaded path) are put in the convolutions' layout where they join channels-last activations
    channels_last = to_memory_format(build(name, "instance_group"), "channels_last_3d")
    off, ran = conv_inputs_off_layout(channels_last, torch.channels_last_3d)
    assert ran > 0 and off == []


def test_as_layout_of_copies_only_into_a_channels_last_reference():
    x = torch.rand(2, 3, 4, 5, 6)
    weight = torch.rand(8, 3, 3, 3, 3)
    assert as_layout_of(x, weight) is x and cat_like([x, x], 1, like=weight).is_contiguous()
    assert as_layout_of(x, weight).data_ptr() == x.data_ptr()
    # a 1x1x1 weight or a one-channel volume is both layouts at once: it names none, and x stays as it is
    pointwise = torch.rand(8, 3, 1, 1, 1).contiguous(memory_format=torch.channels_last_3d)
    assert as_layout_of(x, pointwise) is x and as_layout_of(x, torch.rand(2, 1, 4, 5, 6)) is x
    reference = weight.contiguous(memory_format=torch.channels_last_3d)
    laid_out = as_layout_of(x, reference)
    assert laid_out.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(laid_out, x)
    assert as_layout_of(laid_out, reference) is laid_out                  # already channels-last: no copy
    assert as_layout_of(torch.rand(2, 3, 4, 5), reference).is_contiguous()  # not a volume: left alone
    joined = cat_like([x, laid_out, torch.rand(2, 1, 4, 5, 6)], 1, like=laid_out)
    assert joined.is_contiguous(memory_format=torch.channels_last_3d) and not joined.is_contiguous()
    torch.testing.assert_close(joined[:, :3], x, rtol=0.0, atol=0.0)


def test_contiguous_leaves_the_model_as_it_is_and_a_bad_format_is_named():
    model = build("baseline_unet", "instance")
    before = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    assert to_memory_format(model, "contiguous") is model
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == before
    with pytest.raises(ValueError, match=r"trainer.memory_format='nhwc'; expected one of \['contiguous', "
                                         r"'channels_last_3d'\]"):
        to_memory_format(model, "nhwc")


def test_the_memory_format_defaults_to_contiguous_and_the_schema_checks_the_choice():
    cfg = compose_config("train", [])
    assert cfg.trainer.memory_format == "contiguous" and cfg.model.norm == "instance"
    validate_train_config(compose_config("train", ["trainer.memory_format=channels_last_3d",
                                                   "model.norm=instance_group"]))
    bad = OmegaConf.merge(cfg, {"trainer": {"memory_format": "channels_last"}})
    with pytest.raises(ValueError, match=r"trainer.memory_format='channels_last' is not one of"):
        validate_train_config(bad)


def test_compile_keys_default_to_todays_compile_and_refuse_what_is_not_built():
    cfg = compose_config("train", [])
    assert cfg.trainer.compile_mode is None and cfg.trainer.compile_loss is False
    validate_train_config(compose_config("train", ["trainer.compile=true", "trainer.compile_loss=true",
                                                   "trainer.compile_mode=max-autotune-no-cudagraphs"]))
    with pytest.raises(ValueError, match=r"trainer.compile_loss=true compiles the objective with the model: it "
                                         r"needs trainer.compile=true"):
        validate_train_config(compose_config("train", ["trainer.compile_loss=true"]))
    with pytest.raises(ValueError, match=r"trainer.compile_mode='reduce-overhead' is not one of"):
        validate_train_config(compose_config("train", ["trainer.compile_mode=reduce-overhead"]))


def test_build_model_lays_out_the_weights_as_the_trainer_key_says():
    overrides = ["model=baseline_unet", "model.base_channels=4", "model.depth=2", "model.norm=instance_group",
                 "+model.num_views=2", "+model.view_size=32", "+model.volume_size=16", "+model.view_angles_deg=[0,90]"]
    reference = torch.rand(1, 1, 16, 16, 16)
    layouts = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
    for memory_format, expected in layouts.items():
        cfg = compose_config("train", [*overrides, f"trainer.memory_format={memory_format}"])
        model = build_model(cfg, torch.device("cpu"), reference)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d) and min(m.kernel_size) > 1]
        assert convs and all(m.weight.is_contiguous(memory_format=expected) for m in convs)


def one_step_gradients(model: torch.nn.Module, compiled: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """One TrainStep of ``model`` (SGD, lr 1, no clipping: the update is minus the gradient) with the l1, SSIM,
    edge and frequency terms; returns the logged loss and each parameter's gradient."""
    device, precision = torch.device("cpu"), resolve_precision("fp32", torch.device("cpu"))
    criterion = ReconstructionLoss({"l1": 1.0, "ssim": 0.3, "edge": 0.2, "frequency": 0.3})
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    forward_and_loss = (compile_forward_and_loss(model, criterion, device, precision, compile_backend="aot_eager")
                        if compiled else None)
    step = TrainStep(model, model, criterion, optimizer, scheduler, None, None, device, precision, None,
                     world_size=1, forward_and_loss=forward_and_loss)
    generator = torch.Generator().manual_seed(1)
    batch = {"views": torch.rand(2, 2, 1, 32, 32, generator=generator), "angles_deg": torch.tensor([ANGLES] * 2),
             "ct": torch.rand(2, 1, 16, 16, 16, generator=generator)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step([batch])
    return step.read_window()["loss"], {n: before[n] - p.detach() for n, p in model.named_parameters()}


@pytest.mark.slow
def test_model_and_loss_compiled_together_train_like_eager():
    # aot_eager traces the forward, the objective and their backward into graphs without generating kernels; the
    # baseline's one graph break (the views' angles read on the host) splits the trace
    torch._dynamo.reset()
    eager_loss, eager_grads = one_step_gradients(build("baseline_unet", "instance"), compiled=False)
    compiled_loss, compiled_grads = one_step_gradients(build("baseline_unet", "instance"), compiled=True)
    torch._dynamo.reset()
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-6)
    assert_same(([], eager_grads), ([], compiled_grads))


@pytest.mark.slow
def test_model_and_loss_trace_as_one_graph_with_python_angles():
    # the views' angles as Python floats (a tensor is read on the host: one break, as the model alone)
    device, precision = torch.device("cpu"), resolve_precision("fp32", torch.device("cpu"))
    criterion = ReconstructionLoss({"l1": 1.0, "ssim": 0.3, "edge": 0.2, "frequency": 0.3})
    forward_and_loss = ForwardAndLoss(build("baseline_unet", "instance"), criterion, device, precision)
    views, target = torch.rand(2, 2, 1, 32, 32), torch.rand(2, 1, 16, 16, 16)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(forward_and_loss)(views, ANGLES, target, None)
    torch._dynamo.reset()
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
