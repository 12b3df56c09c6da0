"""The milestone-2 cascade: outputs per mode, residual start, deep supervision per stage, patches, freezing, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from x2ct.losses.deep_supervision import DeepSupervisionLoss
from x2ct.models import BaselineUNet, HybridViT, Reconstruction
from x2ct.models.multires import MultiResCascade, Refiner
from x2ct.models.registry import MODELS, model_from_name
from x2ct.ops.patches import crop_patches

TINY_HYBRID = dict(base_channels=4, depth=2, channel_multipliers=(1, 2, 4), transformer_levels=(1,), num_heads=2,
                   pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)
TINY_BASELINE = dict(base_channels=4, depth=2, encoder_blocks=1, bottleneck_blocks=1)
TINY = dict(view_size=16, volume_size=16, stage_sizes=(8, 16), coarse_kwargs=TINY_HYBRID, refiner_channels=4)


def tiny(**overrides) -> MultiResCascade:
    torch.manual_seed(0)
    return MultiResCascade(**{**TINY, **overrides})


def views(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 2, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def perturb_heads(model: MultiResCascade) -> None:
    """Non-zero residual heads, so the refiners' bodies change the output (they start at zero)."""
    with torch.no_grad():
        for refiner in model.refiners:
            refiner.head.weight.normal_(0.0, 0.5)
            refiner.head.bias.normal_(0.0, 0.1)


def upsample(volume: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(volume, size=(size,) * 3, mode="trilinear", align_corners=False)


def test_registry_builds_by_name_and_names_the_known_models():
    assert isinstance(model_from_name("baseline_unet", volume_size=8, **TINY_BASELINE), BaselineUNet)
    assert MODELS == {"baseline_unet": BaselineUNet, "hybrid_vit": HybridViT}
    with pytest.raises(ValueError, match=r"unknown model 'unet3000'; known models: \['baseline_unet', 'hybrid_vit'\]"):
        model_from_name("unet3000")


def test_training_output_holds_every_stage_at_its_size_finest_first():
    out = tiny()(views())
    assert out.volume.shape == (2, 1, 16, 16, 16)
    # the coarse volume (8^3), then the hybrid's own auxiliary output (4^3)
    assert [tuple(a.shape) for a in out.deep_supervision] == [(2, 1, 8, 8, 8), (2, 1, 4, 4, 4)]
    three = tiny(stage_sizes=(4, 8, 16), coarse_model="baseline_unet", coarse_kwargs=TINY_BASELINE)(views())
    assert [tuple(a.shape) for a in three.deep_supervision] == [(2, 1, 8, 8, 8), (2, 1, 4, 4, 4)]
    # the existing loss term takes the list as it is, against the whole target
    assert torch.isfinite(DeepSupervisionLoss()(three.deep_supervision, torch.rand(2, 1, 16, 16, 16)))


def test_an_untrained_cascade_is_its_coarse_stage_upsampled():
    model, x = tiny(stage_sizes=(4, 8, 16), coarse_model="baseline_unet", coarse_kwargs=TINY_BASELINE), views()
    with torch.no_grad():
        model.coarse.head.weight.normal_()  # the baseline starts at its template: make the coarse volume non-trivial
        out = model(x)
        torch.testing.assert_close(out.deep_supervision[0], upsample(out.deep_supervision[1], 8))
        torch.testing.assert_close(out.volume, upsample(out.deep_supervision[0], 16))
        stages = model.eval().stage_outputs(x)
        assert stages[0].min() < 0.2 and stages[0].max() > 0.8  # not clamped flat: the comparison can fail
        torch.testing.assert_close(stages[1], upsample(stages[0], 8))  # the eval volumes: clamped, each upsampled
        torch.testing.assert_close(model(x).volume, upsample(stages[1], 16))
        perturb_heads(model)
        assert (model(x).volume - upsample(stages[1], 16)).abs().max() > 1e-3  # the heads are what made them equal


def test_eval_returns_the_final_volume_clipped_and_stage_outputs_every_stage():
    model = tiny(stage_sizes=(4, 8, 16), coarse_model="baseline_unet", coarse_kwargs=TINY_BASELINE)
    perturb_heads(model)
    model.eval()
    with torch.no_grad():
        out, stages = model(views() * 5), model.stage_outputs(views() * 5)
    assert isinstance(out, Reconstruction) and out.deep_supervision == [] and not out.is_patch
    out = out.volume
    assert out.shape == (2, 1, 16, 16, 16)
    assert [tuple(s.shape) for s in stages] == [(2, 1, 4, 4, 4), (2, 1, 8, 8, 8), (2, 1, 16, 16, 16)]
    assert all(s.min() >= 0 and s.max() <= 1 for s in stages)
    torch.testing.assert_close(out, stages[-1])
    with pytest.raises(RuntimeError, match=r"call model\.eval"):
        model.train().stage_outputs(views())


@pytest.mark.parametrize("stage_sizes", [(8, 16), (4, 8, 16)])
def test_patch_inference_with_one_tile_the_size_of_the_volume_equals_the_whole_volume_forward(stage_sizes):
    model = tiny(stage_sizes=stage_sizes, coarse_model="baseline_unet", coarse_kwargs=TINY_BASELINE)
    perturb_heads(model)
    model.eval()
    with torch.no_grad():
        whole = model.stage_outputs(views())
        model.infer_patch_size = 16  # every fine stage: one tile covering its whole grid (capped at 8 for 8^3)
        tiled = model.stage_outputs(views())
        model.infer_patch_size = 8  # smaller tiles: overlapping, blended
        blended = model(views()).volume
    for w, t in zip(whole, tiled, strict=True):
        torch.testing.assert_close(t, w, atol=1e-5, rtol=0)
    assert blended.shape == (2, 1, 16, 16, 16) and blended.min() >= 0 and blended.max() <= 1


def test_patch_training_returns_a_patch_inside_the_volume_with_its_origin():
    model = tiny(train_patch_size=8)
    torch.manual_seed(3)
    out = model(views(3))
    assert out.is_patch and out.volume.shape == (3, 1, 8, 8, 8) and out.patch_size == 8
    assert out.patch_origins.shape == (3, 3) and out.patch_origins.dtype == torch.long
    assert out.patch_origins.min() >= 0 and out.patch_origins.max() <= 16 - 8
    assert [tuple(a.shape) for a in out.deep_supervision] == [(3, 1, 8, 8, 8), (3, 1, 4, 4, 4)]  # whole volumes


def test_a_training_patch_equals_the_crop_of_the_whole_volume_forward_away_from_patch_borders():
    """Exact where it can be: with no normalisation (no patch statistics) and one refiner level (no strided grid to
    align), a voxel whose receptive field (inlet conv radius 1 + dense block radius 4) stays inside the patch, or
    meets only the volume's own border, sees the same inputs: the lifted features are cropped and the coarse
    context read at the patch's voxels (crop_context), both aligned with the whole-volume forward."""
    radius, p, n = 5, 12, 16
    model = tiny(train_patch_size=p, refiner_levels=1, norm="none")
    perturb_heads(model)
    x = views()
    with torch.no_grad():
        torch.manual_seed(5)
        patched = model(x)
        model.train_patch_size = None
        whole = model(x)
    origins = patched.patch_origins
    expected = crop_patches(whole.volume, origins, (p,) * 3)
    context = crop_patches(upsample(whole.deep_supervision[0], n), origins, (p,) * 3)
    assert (patched.volume - context).abs().max() > 1e-3  # the refiner does change the patch
    compared = 0
    for b, origin in enumerate(origins.tolist()):
        index = torch.arange(p)
        keep = [((index >= radius) | (o == 0)) & ((index < p - radius) | (o + p == n)) for o in origin]
        mask = keep[0][:, None, None] & keep[1][None, :, None] & keep[2][None, None, :]
        torch.testing.assert_close(patched.volume[b, 0][mask], expected[b, 0][mask], atol=1e-5, rtol=0)
        compared += int(mask.sum())
    assert compared > 0


def test_a_frozen_coarse_stage_gets_no_gradients_and_stays_in_eval_mode():
    model = tiny(freeze_coarse=True)
    perturb_heads(model)
    model.train()
    assert not model.coarse.training and model.refiners[0].training
    out = model(views())
    assert len(out.deep_supervision) == 1  # the coarse volume; a model in eval mode returns no auxiliary outputs
    (out.volume.square().mean() + out.deep_supervision[0].mean()).backward()
    assert all(not p.requires_grad and p.grad is None for p in model.coarse.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.refiners.parameters())


def test_gradients_reach_every_trainable_parameter():
    model = tiny(stage_sizes=(4, 8, 16), coarse_kwargs={**TINY_HYBRID, "depth": 1, "channel_multipliers": (1, 2),
                                                       "transformer_levels": (0,)})
    out = model(views())
    (out.volume.mean() + sum(a.mean() for a in out.deep_supervision)).backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no find_unused_parameters, even at start
    model.zero_grad(set_to_none=True)
    perturb_heads(model)
    out = model(views())
    (out.volume.square().mean() + sum(a.square().mean() for a in out.deep_supervision)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_the_mean_ct_reaches_a_coarse_template_at_the_coarse_size():
    model = tiny(coarse_model="baseline_unet", coarse_kwargs=TINY_BASELINE)
    mean = torch.rand(1, 16, 16, 16)
    model.initialise_prior(mean)
    torch.testing.assert_close(model.coarse.prior, F.avg_pool3d(mean[None], 2))


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(stage_sizes=(8, 32)), r"last of stage_sizes \[8, 32\] must equal volume_size=16"),
    (dict(stage_sizes=(6, 16)), r"each dividing the next \(6 -> 16\)"),
    (dict(stage_sizes=(16, 16)), "must increase"),
    (dict(stage_sizes=(16,)), "at least one fine stage"),
    (dict(stage_sizes=(4, 8, 16), refiner_levels=5), r"fine stage size 8 must be a positive multiple of .* = 16"),
    (dict(train_patch_size=6, refiner_levels=3), "train_patch_size 6 must be a positive multiple"),
    (dict(train_patch_size=32), r"train_patch_size 32 is larger than its stage's size 16"),
    (dict(stage_sizes=(4, 8, 16), train_patch_size=[8, None]), "patches a stage but not the one after it"),
    (dict(stage_sizes=(4, 8, 16), train_patch_size=[4, 8]), r"reads a 6\^3 context .* patch \(4\) must hold it"),
    (dict(stage_sizes=(4, 8, 16), train_patch_size=[8]), "one entry .* per fine stage, 2"),
    (dict(checkpointing=[True, False]), r"checkpointing \[True, False\] needs one entry per fine stage \(1\)"),
    (dict(infer_overlap=1.0), r"infer_overlap must be in \[0, 1\)"),
    (dict(coarse_model="unet3000"), r"unknown model 'unet3000'; known models: \['baseline_unet', 'hybrid_vit'\]"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_bad_views_are_named():
    with pytest.raises(ValueError, match=r"MultiResCascade expects views \(B, 2, 1, 16, 16\)"):
        tiny()(torch.rand(1, 2, 1, 8, 8))



def test_stage_one_starts_from_a_trained_checkpoint(tmp_path):
    coarse = model_from_name("hybrid_vit", num_views=2, view_size=16, volume_size=8, view_angles_deg=(0.0, 90.0),
                             **TINY_HYBRID)
    with torch.no_grad():
        for p in coarse.parameters():
            p.add_(0.5)
    path = tmp_path / "best.pt"
    torch.save({"model": coarse.state_dict(), "ema": None}, path)
    model = tiny(coarse_checkpoint=str(path))
    for key, value in coarse.state_dict().items():
        torch.testing.assert_close(model.coarse.state_dict()[key], value, msg=key)
    with pytest.raises(ValueError, match="do not fit the coarse model"):
        tiny(coarse_checkpoint=str(path), coarse_kwargs={**TINY_HYBRID, "base_channels": 8})
    (tmp_path / "garbage.pt").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"garbage\.pt: cannot read it"):
        tiny(coarse_checkpoint=str(tmp_path / "garbage.pt"))


@pytest.mark.parametrize("train_patch_size", [None, 8])
def test_with_a_coarse_model_without_deep_supervision_the_final_volume_alone_reaches_every_parameter(
        train_patch_size):
    # DDP needs a gradient for every parameter each step: with the deep-supervision loss off (weight 0) the trainer
    # builds the coarse model without its heads, and the cascade's own per-stage outputs add no parameters
    model = tiny(coarse_kwargs={**TINY_HYBRID, "deep_supervision": False}, train_patch_size=train_patch_size)
    perturb_heads(model)
    out = model(views())
    assert [tuple(a.shape) for a in out.deep_supervision] == [(2, 1, 8, 8, 8)]  # the coarse volume only
    out.volume.square().mean().backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


@pytest.mark.parametrize("levels, n, p, origin", [(1, 24, 16, (3, 5, 8)), (2, 52, 48, (2, 4, 4))])
def test_a_refiner_on_a_patch_equals_the_whole_volume_refiner_cropped_to_the_patch_interior(levels, n, p, origin):
    """The default refiner normalises nothing over space, so a training patch (or inference tile) computes what the
    whole volume does wherever the receptive field stays inside the patch. Measured by gradient: the receptive
    field's radius (5 voxels at 1 level, 21 at 2), then compared on the interior. With instance norm
    (`refine_norm="instance"`) the same comparison is off by far more than the tolerance."""
    def refiner(norm: str | None) -> Refiner:
        torch.manual_seed(0)
        kwargs = {} if norm is None else {"refine_norm": norm}
        module = Refiner(2, (0.0, 90.0), n, channels=4, levels=levels, **kwargs)
        with torch.no_grad():
            module.head.weight.normal_(0.0, 0.5)
        return module

    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 4, n, n, n, generator=generator)
    context = torch.rand(1, 1, n, n, n, generator=generator)
    origins = torch.tensor(origin)
    radius = receptive_radius(refiner("none"), n)
    assert radius == {1: 5, 2: 21}[levels]
    interior = (slice(radius, p - radius),) * 3
    for norm, close in ((None, True), ("instance", False)):
        module = refiner(norm)
        with torch.no_grad():
            whole = crop_patches(module.refine(features, context), origins, (p,) * 3)
            patch = module.refine(crop_patches(features, origins, (p,) * 3), crop_patches(context, origins, (p,) * 3))
        error = (patch - whole)[(..., *interior)].abs().max().item()
        assert (error < 1e-5) == close, (norm, error)


def receptive_radius(module: Refiner, n: int) -> int:
    """Voxels from an output voxel to the farthest input whose gradient reaches it (norm-free refiner), the larger
    over an even and an odd position (strided levels reach further on one side)."""
    radius = 0
    for centre in (n // 2, n // 2 + 1):
        features = torch.randn(1, module.inlet.conv.in_channels - 1, n, n, n, requires_grad=True)
        module.refine(features, torch.zeros(1, 1, n, n, n))[0, 0, centre, centre, centre].backward()
        reached = features.grad[0].abs().sum(0).nonzero()
        radius = max(radius, int((reached - centre).abs().max()))
    return radius


THREE_STAGES = dict(view_size=16, volume_size=32, stage_sizes=(8, 16, 32), coarse_kwargs=TINY_HYBRID,
                    refiner_channels=4)


def test_every_fine_stage_can_train_on_patches_each_holding_the_next_ones_context():
    """``train_patch_size: [p_2, p_3]`` patches both fine stages. With zero residual heads (the cascade's
    start) each stage is its context, so the final patch must equal the coarse volume upsampled twice and cropped:
    the nested origins and contexts line up exactly. The intermediate patch reaches the deep supervision with its
    region, and the loss crops the area-averaged target there."""
    torch.manual_seed(0)
    model = MultiResCascade(**THREE_STAGES, train_patch_size=[12, 8])
    x = torch.rand(3, 2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for seed in range(4):
        torch.manual_seed(seed)
        out = model(x)
        coarse = out.deep_supervision[1]                                    # (B, 1, 8, 8, 8), whole
        middle, (middle_origins, middle_size) = out.deep_supervision[0], out.deep_supervision_regions[0]
        assert out.volume.shape == (3, 1, 8, 8, 8) and middle.shape == (3, 1, 12, 12, 12) and middle_size == 16
        assert out.deep_supervision_regions[1:] == [None] * (len(out.deep_supervision) - 1)
        assert (out.patch_origins % 2 == 0).all() and (middle_origins % 2 == 0).all()  # on the strided grid
        expected = crop_patches(upsample(upsample(coarse, 16), 32), out.patch_origins, (8, 8, 8))
        torch.testing.assert_close(out.volume, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(middle, crop_patches(upsample(coarse, 16), middle_origins, (12, 12, 12)),
                                   atol=1e-6, rtol=0)
    target = torch.rand(3, 1, 32, 32, 32)
    loss = DeepSupervisionLoss()(out.deep_supervision, target, regions=out.deep_supervision_regions)
    reference = (middle - crop_patches(F.avg_pool3d(target, 2), middle_origins, (12, 12, 12))).abs().mean()
    reference = (reference + sum((aux - F.interpolate(target, size=aux.shape[2:], mode="area")).abs().mean()
                                 for aux in out.deep_supervision[1:])) / len(out.deep_supervision)
    torch.testing.assert_close(loss, reference)


def test_activation_checkpointing_gives_the_same_gradients():
    x = torch.rand(2, 2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    grads = []
    for checkpointing in (False, True, [False, True]):
        torch.manual_seed(0)
        model = MultiResCascade(**THREE_STAGES, train_patch_size=[12, 8], checkpointing=checkpointing)
        perturb_heads(model)
        torch.manual_seed(7)
        model(x).volume.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.refiners.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[2], grads[0], atol=1e-6, rtol=1e-5)
    assert grads[0].abs().sum() > 0


def test_tiled_inference_lifts_per_tile_and_matches_the_whole_volume_with_one_tile():
    # float64: in float32 the two paths' convolutions sum in another order with the thread count (1e-5 apart)
    model = tiny(infer_patch_size=16).eval().double()
    perturb_heads(model)
    with torch.no_grad():
        tiled = model(views().double()).volume
        model.infer_patch_size = None
        whole = model(views().double()).volume
    torch.testing.assert_close(tiled, whole, atol=1e-10, rtol=0)


def test_the_geometric_lift_mask_reaches_the_refiners_fusion():
    """At a geometry whose detector misses some voxels, a voxel seen by one view only gets that view's
    feature, not half of it (the mean over the views that see it)."""
    from x2ct.physics.geometry import ProjectionGeometry

    geometry = ProjectionGeometry(kind="cone", angles_deg=(0.0, 90.0), detector_shape=(12, 12),
                                  pixel_spacing_mm=(8.0, 8.0), source_to_isocenter_mm=300.0,
                                  source_to_detector_mm=450.0).to_dict()
    torch.manual_seed(0)
    refiner = Refiner(2, (0.0, 90.0), 16, channels=4, lift="geometric", geometry=geometry,
                      volume_fov_mm=(128.0, 128.0, 128.0))
    x = torch.rand(1, 2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = refiner.view_block(F.interpolate(refiner.stem(x.flatten(0, 1)), size=(16, 16), mode="area"))
    lifted, seen = refiner.lift(maps.unflatten(0, (1, 2)), return_mask=True)
    one_view = (seen.sum(dim=1) == 1).expand(-1, 4, -1, -1, -1)            # (B, c, n, n, n)
    assert 0 < one_view.float().mean() < 1
    expected = (lifted * seen).sum(dim=1)[one_view]                         # the one view's feature there
    with torch.no_grad():
        torch.testing.assert_close(refiner.view_features(x)[one_view], expected.detach())


def test_patch_training_and_tiled_inference_never_lift_the_whole_grid():
    """The memory of a patch-trained fine stage follows the patch. Every lift call in training returns patch-sized
    features, and every call in tiled inference tile-sized ones, never the whole n^3 grid per view."""
    model = MultiResCascade(**THREE_STAGES, train_patch_size=[12, 8], infer_patch_size=8)
    shapes: list[tuple[int, ...]] = []
    for refiner in model.refiners:
        refiner.lift.register_forward_hook(lambda _m, _args, out: shapes.append(tuple(out[0].shape[-3:])))
    x = torch.rand(2, 2, 1, 16, 16)
    model(x)
    assert shapes == [(12, 12, 12), (8, 8, 8)]
    shapes.clear()
    with torch.no_grad():
        model.eval()(x)
    assert shapes and set(shapes) == {(8, 8, 8)}
