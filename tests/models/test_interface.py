"""The model contract: every model is a ReconstructionModel, returns a Reconstruction in every mode with the fields
its docstrings promise, declares the views it takes; a Reconstruction is a pytree (DDP, torch.compile)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils import _pytree

from x2ct.models import MODELS, MultiResCascade, Reconstruction, ReconstructionModel, check_model, model_from_name

ANGLES = (0.0, 45.0, 90.0, 135.0)
TINY_HYBRID = dict(base_channels=4, depth=2, channel_multipliers=(1, 2, 4), transformer_levels=(1,), num_heads=2,
                   pyramid_channels=4, cross_view_grid=4, cross_view_heads=2)
TINY_BASELINE = dict(base_channels=4, depth=2, encoder_blocks=1, bottleneck_blocks=1)
# one tiny configuration per registered name (test_every_registered_model_has_a_case keeps the list complete)
REGISTERED = {"baseline_unet": TINY_BASELINE, "hybrid_vit": TINY_HYBRID}
CASCADE = dict(stage_sizes=(8, 16), coarse_kwargs=TINY_HYBRID, refiner_channels=4)
# deep-supervision sides at a 16^3 volume: none without heads; the hybrid's head at depth 2; the cascade's coarse
# stage (8^3), then that stage's own head
DEEP_SUPERVISION_SIZES = {"baseline_unet": [], "hybrid_vit": [8], "multires": [8, 4]}


def build(name: str, num_views: int = 2, fusion: str = "concat") -> ReconstructionModel:
    """A tiny model: views (B, num_views, 1, 16, 16) -> volume (B, 1, 16, 16, 16)."""
    torch.manual_seed(0)
    common = dict(num_views=num_views, view_size=16, volume_size=16, view_angles_deg=ANGLES[:num_views])
    if name == "multires":
        return MultiResCascade(**common, **{**CASCADE, "coarse_kwargs": {**TINY_HYBRID, "fusion": fusion}})
    return model_from_name(name, **common, **REGISTERED[name], **({"fusion": fusion} if fusion != "concat" else {}))


CASES = [pytest.param(name, 2, "concat", id=name) for name in (*REGISTERED, "multires")] + [
    pytest.param("hybrid_vit", 4, "mean", id="hybrid_vit-mean-4"),
    pytest.param("multires", 4, "mean", id="multires-mean-4"),
    pytest.param("baseline_unet", 4, "concat", id="baseline_unet-4"),
    pytest.param("hybrid_vit", 4, "concat", id="hybrid_vit-concat-4"),
]


def views(batch: int, count: int) -> torch.Tensor:
    return torch.rand(batch, count, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def test_every_registered_model_has_a_case():
    assert set(REGISTERED) == set(MODELS)


@pytest.mark.parametrize(("name", "num_views", "fusion"), CASES)
def test_a_training_forward_returns_the_whole_volume_and_its_deep_supervision_finest_first(name, num_views, fusion):
    model = build(name, num_views, fusion).train()
    assert isinstance(model, ReconstructionModel) and check_model(model, "model") is model
    out = model(views(2, num_views), angles_deg=torch.tensor(ANGLES[:num_views]))
    assert isinstance(out, Reconstruction)
    assert out.volume.shape == (2, 1, 16, 16, 16)
    sizes = [a.shape[-1] for a in out.deep_supervision]
    assert all(a.shape == (2, 1, n, n, n) for a, n in zip(out.deep_supervision, sizes, strict=True))
    assert sizes == DEEP_SUPERVISION_SIZES[name]  # coarser than the volume, finest first
    assert not out.is_patch and out.patch_origins is None and out.patch_size is None
    assert out.deep_supervision_regions is None  # whole volumes


@pytest.mark.parametrize(("name", "num_views", "fusion"), CASES)
def test_an_eval_forward_returns_the_clamped_volume_alone_and_it_is_the_last_stage_output(name, num_views, fusion):
    model = build(name, num_views, fusion).eval()
    x, angles = views(2, num_views) * 5, torch.tensor(ANGLES[:num_views])
    with torch.no_grad():
        out, stages = model(x, angles_deg=angles), model.stage_outputs(x, angles_deg=angles)
    assert isinstance(out, Reconstruction) and out.deep_supervision == [] and not out.is_patch
    assert out.volume.shape == (2, 1, 16, 16, 16) and out.volume.min() >= 0 and out.volume.max() <= 1
    assert isinstance(model.stage_sizes, tuple) and model.stage_sizes[-1] == model.volume_size
    assert [s.shape[-1] for s in stages] == list(model.stage_sizes)
    torch.testing.assert_close(stages[-1], out.volume, atol=0, rtol=0)


def test_single_stage_models_declare_their_volume_size_and_the_cascade_each_stage():
    assert build("baseline_unet").stage_sizes == (16,) and build("hybrid_vit").stage_sizes == (16,)
    assert build("multires").stage_sizes == (8, 16)


@pytest.mark.parametrize(("name", "num_views", "fusion"), CASES)
def test_a_model_takes_every_view_count_it_declares_and_no_other(name, num_views, fusion):
    model = build(name, num_views, fusion).eval()
    assert model.any_view_count == (fusion != "concat")
    if model.any_view_count:
        assert model.max_views is None and 1 <= model.min_views <= num_views
    else:
        assert model.min_views == model.max_views == num_views
    with torch.no_grad():
        for count in range(1, num_views + 1):
            x, angles = views(1, count), torch.tensor(ANGLES[:count])
            if count < model.min_views or (model.max_views is not None and count > model.max_views):
                with pytest.raises(ValueError, match=r"expects views|needs at least 2 views"):
                    model(x, angles_deg=angles)
            else:
                assert model(x, angles_deg=angles).volume.shape == (1, 1, 16, 16, 16)


def test_a_concat_hybrid_declares_exactly_its_view_count():
    model = build("hybrid_vit", 4)
    assert model.min_views == model.max_views == 4


def test_a_model_without_a_template_ignores_the_mean_volume():
    model = build("hybrid_vit")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.initialise_prior(torch.rand(1, 16, 16, 16))
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_the_base_class_describes_a_single_stage_model_for_exactly_its_view_count():
    class Unfinished(ReconstructionModel):
        num_views, volume_size = 3, 8

    model = Unfinished()
    assert (model.any_view_count, model.min_views, model.max_views, model.stage_sizes) == (False, 3, 3, (8,))
    with pytest.raises(NotImplementedError, match=r"Unfinished does not implement forward\(views, angles_deg\)"):
        model(torch.rand(1, 3, 1, 8, 8))


def test_check_model_refuses_a_plain_module_naming_the_key():
    with pytest.raises(TypeError, match=r"^model\.coarse: torch\.nn\.modules\.linear\.Linear is not an "
                                        r"x2ct\.models\.ReconstructionModel"):
        check_model(nn.Linear(2, 2), "model.coarse")


def patched_reconstruction() -> Reconstruction:
    """A cascade's patch-trained output: a patch, two coarser volumes (the first a patch of the 16^3 grid)."""
    generator = torch.Generator().manual_seed(0)
    return Reconstruction(torch.rand(2, 1, 4, 4, 4, generator=generator),
                          deep_supervision=[torch.rand(2, 1, 6, 6, 6, generator=generator),
                                            torch.rand(2, 1, 4, 4, 4, generator=generator)],
                          deep_supervision_regions=[(torch.tensor([[0, 2, 4], [6, 6, 0]]), 16), None],
                          patch_origins=torch.tensor([[0, 4, 8], [12, 12, 0]]), patch_size=4)


def test_a_reconstruction_flattens_to_its_tensors_and_back():
    pred = patched_reconstruction()
    leaves, spec = _pytree.tree_flatten(pred)
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    expected = [pred.volume, *pred.deep_supervision, pred.deep_supervision_regions[0][0], pred.patch_origins]
    assert len(tensors) == len(expected) and all(t is e for t, e in zip(tensors, expected, strict=True))
    rebuilt = _pytree.tree_unflatten(leaves, spec)
    assert isinstance(rebuilt, Reconstruction) and rebuilt.is_patch and rebuilt.patch_size == 4
    assert rebuilt.volume is pred.volume and rebuilt.patch_origins is pred.patch_origins
    assert all(a is b for a, b in zip(rebuilt.deep_supervision, pred.deep_supervision, strict=True))
    assert rebuilt.deep_supervision_regions[0][1] == 16 and rebuilt.deep_supervision_regions[1] is None
    # an eval output: the volume is its only leaf
    volume = torch.rand(1, 1, 4, 4, 4)
    leaves, spec = _pytree.tree_flatten(Reconstruction(volume))
    assert len(leaves) == 1 and leaves[0] is volume
    rebuilt = _pytree.tree_unflatten([volume * 2], spec)
    assert isinstance(rebuilt, Reconstruction) and torch.equal(rebuilt.volume, volume * 2) and not rebuilt.is_patch


def test_float_casts_the_volumes_and_keeps_the_patch_origins():
    pred = patched_reconstruction()
    half = Reconstruction(pred.volume.bfloat16(), [v.bfloat16() for v in pred.deep_supervision],
                          pred.deep_supervision_regions, pred.patch_origins, pred.patch_size)
    full = half.float()
    assert full.volume.dtype == torch.float32 and all(v.dtype == torch.float32 for v in full.deep_supervision)
    torch.testing.assert_close(full.volume, half.volume.float(), atol=0, rtol=0)
    assert full.patch_origins is pred.patch_origins and full.patch_size == 4
    assert full.deep_supervision_regions is pred.deep_supervision_regions


def test_patch_origins_and_patch_size_come_together():
    with pytest.raises(ValueError, match="patch_origins and patch_size are given together or not at all"):
        Reconstruction(torch.rand(1, 1, 4, 4, 4), patch_size=4)
