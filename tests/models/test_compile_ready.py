"""GPU readiness on the CPU: graph breaks under ``torch.compile``, a bf16 training step, and inductor against eager.

Tiny models (16^3 volumes, two 32^2 views, base width 4) of every model config (conf/model: baseline_unet,
hybrid_vit, multires, multires with train_patch_size, multires with lift=geometric) trained with the medical-grade
objective (conf/loss/medical_grade.yaml with the random perceptual network and the projection term at 0.1).

Graph breaks are counted with ``torch._dynamo.explain`` and must not grow beyond ``MODEL_BREAKS`` /
``LOSS_BREAKS``; a lower count is good news: lower the number. What is left:

- reading the views' angles from a tensor into Python (``batch_angles``, once per forward): the lift's geometry is
  chosen in Python from the angles' values. A caller that passes the angles as a tuple of floats (or None for
  the constructor's) gets a forward without breaks (dynamo then guards on the values: a new set of angles
  compiles again).
- the projection term: its angles likewise, and ``render_drr`` (x2ct/physics/projector.py) splits the rays by
  their principal axis with ``torch.nonzero`` (data-dependent shapes).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch._dynamo
from omegaconf import OmegaConf

from x2ct.data.input_spec import InputSpec
from x2ct.losses import ReconstructionLoss
from x2ct.models import Reconstruction
from x2ct.models.baseline_unet import BaselineUNet
from x2ct.models.hybrid_vit import HybridViT
from x2ct.models.multires import MultiResCascade
from x2ct.physics.geometry import ProjectionGeometry

CONF = Path(__file__).resolve().parents[2] / "conf"
ANGLES = (0.0, 90.0)
GEOMETRY = ProjectionGeometry(kind="cone", angles_deg=ANGLES, detector_shape=(32, 32), pixel_spacing_mm=(16.0, 16.0),
                              source_to_isocenter_mm=1000.0, source_to_detector_mm=1500.0).to_dict()
FOV = [352.0, 352.0, 352.0]
INPUT_SPEC = InputSpec(views=("pa", "lateral"), angles_deg=ANGLES, view_shape=(32, 32), radiograph="log",
                       normalisation="fixed", scale=10.0, hu_window=(-1000.0, 1000.0), ct_size=(16, 16, 16),
                       ct_fov_mm=tuple(FOV), mu_water=0.02, geometry=ProjectionGeometry.from_dict(GEOMETRY))
COMMON = dict(num_views=2, view_size=32, volume_size=16, view_angles_deg=ANGLES)
TINY_HYBRID = dict(base_channels=4, depth=2, channel_multipliers=(1, 2, 4), transformer_levels=(1,), num_heads=2,
                   pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)
TINY_BASELINE = dict(base_channels=4, depth=2, encoder_blocks=1, bottleneck_blocks=1)
TINY_CASCADE = dict(stage_sizes=(8, 16), coarse_kwargs=TINY_HYBRID, refiner_channels=4)
GEOMETRIC = dict(lift="geometric", geometry=GEOMETRY, volume_fov_mm=FOV)

MODELS = {
    "baseline_unet": lambda: BaselineUNet(**COMMON, **TINY_BASELINE),
    "hybrid_vit": lambda: HybridViT(**COMMON, **TINY_HYBRID),
    "multires": lambda: MultiResCascade(**COMMON, **TINY_CASCADE),
    "multires_patches": lambda: MultiResCascade(**COMMON, **TINY_CASCADE, train_patch_size=12),
    "multires_geometric": lambda: MultiResCascade(**COMMON, **TINY_CASCADE, **GEOMETRIC),
}
# graph breaks of the training forward with the angles as the trainer passes them, a (B, V) tensor: the one read
MODEL_BREAKS = {name: 1 for name in MODELS}
# graph breaks of the objective (with / without the projection term, the angles as a tensor or a tuple): one to
# read a tensor's angles, the others in render_drr
LOSS_BREAKS = {(False, "tensor"): 0, (True, "tensor"): 10, (True, "tuple"): 9}


def build(name: str) -> torch.nn.Module:
    """The tiny model, with random weights in the heads that start at zero (the baseline's correction of its
    template, the refiners' residuals), so that every layer reaches the output and the comparisons mean something."""
    torch.manual_seed(0)
    model = MODELS[name]().train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d) and not module.weight.any():
                module.weight.normal_(0.0, 0.1)
    return model


def medical_grade_loss(name: str) -> ReconstructionLoss:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "loss" / "medical_grade.yaml"))
    weights = {**cfg["weights"], "projection": 0.1}
    if name == "baseline_unet":
        weights["deep_supervision"] = 0.0  # no auxiliary outputs
    if name == "multires_patches":
        weights["projection"] = 0.0  # renders whole volumes only
    components = cfg["components"]
    components["perceptual"]["weights"] = "random"
    return ReconstructionLoss(weights, components, input_spec=INPUT_SPEC)


def batch(size: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(views (B, 2, 1, 32, 32), angles (B, 2) as the collate makes them, target (B, 1, 16, 16, 16))."""
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(size, 2, 1, 32, 32, generator=generator), torch.tensor([ANGLES] * size),
            torch.rand(size, 1, 16, 16, 16, generator=generator))


def graph_breaks(fn, *args) -> int:
    torch._dynamo.reset()
    try:
        return torch._dynamo.explain(fn)(*args).graph_break_count
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("name", list(MODELS))
def test_the_training_forward_has_no_more_graph_breaks_than_recorded(name):
    model = build(name)
    views, angles, _ = batch()
    assert graph_breaks(model, views, angles) <= MODEL_BREAKS[name]


@pytest.mark.parametrize(("projection", "angles"), [(False, "tensor"), (True, "tensor"), (True, "tuple")])
def test_the_objective_has_no_more_graph_breaks_than_recorded(projection, angles):
    loss = medical_grade_loss("hybrid_vit" if projection else "multires_patches")
    views, angles_tensor, target = batch()
    generator = torch.Generator().manual_seed(3)
    pred = Reconstruction(torch.rand(2, 1, 16, 16, 16, generator=generator).requires_grad_(),
                          deep_supervision=[torch.rand(2, 1, n, n, n, generator=generator) for n in (8, 4)])

    def objective(pred, target, views, angles):
        return loss(pred, target, views=views, angles_deg=angles)[0]

    breaks = graph_breaks(objective, pred, target, views, angles_tensor if angles == "tensor" else ANGLES)
    assert breaks <= LOSS_BREAKS[(projection, angles)]


def test_the_training_forward_has_no_graph_break_with_python_angles():
    model = build("hybrid_vit")
    views, _, _ = batch()
    assert graph_breaks(model, views, ANGLES) == 0


def training_step(model: torch.nn.Module, loss: ReconstructionLoss, bf16: bool) -> tuple[torch.Tensor, dict]:
    """Forward (under bf16 autocast if asked), loss in float32 as the trainer computes it, backward."""
    views, angles, target = batch()
    torch.manual_seed(2)  # the same random patch in every run
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pred = model(views, angles)
    total, _ = loss(pred.float(), target, views=views, angles_deg=angles)
    total.backward()
    return total.detach(), {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def one_thread():
    """On two CPU threads the cascade's bf16 step gives non-finite gradients in some runs and not others (seen at
    this test's parameters, multires and multires_patches, 1 to 2 runs in 4): pinned to one thread the check is
    deterministic. The multi-thread cause is not found yet."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_bf16_training_step_is_finite_reaches_every_parameter_and_matches_float32(name, one_thread):
    model = build(name)
    loss = medical_grade_loss(name)
    reference, _ = training_step(copy.deepcopy(model), loss, bf16=False)
    value, grads = training_step(model, loss, bf16=True)
    assert torch.isfinite(value)
    missing = [key for key, grad in grads.items() if grad is None]
    assert not missing, f"parameters without a gradient under bf16: {missing}"
    assert all(torch.isfinite(grad).all() for grad in grads.values())
    assert value.item() == pytest.approx(reference.item(), rel=0.02)  # measured: within 0.2%


@pytest.mark.slow
@pytest.mark.parametrize("name", ["baseline_unet", "hybrid_vit"])
def test_an_inductor_compiled_training_step_matches_eager(name):
    # the model compiled as the trainer does (trainer.compile=true), the loss in eager mode. Inductor builds C++
    # kernels with gcc: about 70 s (baseline) and 220 s (hybrid) on 2 cores with a cold cache, seconds with a warm one
    eager = build(name)
    compiled = copy.deepcopy(eager)
    views, angles, target = batch()

    def step(forward, model: torch.nn.Module) -> tuple[torch.Tensor, dict]:
        # every output in the loss: compiled, parameters outside it get zero gradients where eager leaves None
        pred = forward(views, angles).float()
        volume, auxiliary = pred.volume, pred.deep_supervision
        loss = (volume - target).abs().mean() + sum(aux.abs().mean() for aux in auxiliary)
        loss.backward()
        return loss.detach(), {key: p.grad for key, p in model.named_parameters()}

    torch._dynamo.reset()
    try:
        loss, grads = step(torch.compile(compiled, backend="inductor"), compiled)
    finally:
        torch._dynamo.reset()
    reference, reference_grads = step(eager, eager)
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-6)
    # to 1e-4 of each gradient's scale, and 1e-6 of the largest (kernels sum in other orders; gradients that are zero
    # in exact arithmetic, such as attention key biases and some MLP biases, come out as rounding noise)
    largest = max(g.abs().max().item() for g in reference_grads.values())
    for key, grad in reference_grads.items():
        torch.testing.assert_close(grads[key], grad, rtol=1e-4, atol=1e-4 * grad.abs().max().item() + 1e-6 * largest,
                                   msg=lambda m, key=key: f"{key}: {m}")
