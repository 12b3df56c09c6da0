import re
import urllib.error
from pathlib import Path

import pytest
import torch

from x2ct.data.phantom import generate_chest_phantom
from x2ct.losses import ReconstructionLoss
from x2ct.losses.perceptual import PerceptualLoss
from x2ct.losses.registry import build_loss_component
from x2ct.losses.vgg import VGG16_URL, VGG16Features, VGGWeightsError

SIZE = 16
# torchvision's vgg16.features through relu3_3: convs at 0, 2 | pool 4 | 5, 7 | pool 9 | 10, 12, 14
TORCHVISION_KEYS = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias")]


def random_loss(**kwargs) -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss(weights="random", **{"slices_per_axis": 2, **kwargs})


def volume(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 1, SIZE, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def torchvision_style_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict laid out as torchvision's vgg16 file: our layers plus deeper features and a classifier."""
    torch.manual_seed(1)
    state = dict(VGG16Features("random").state_dict())
    state.update({"features.17.weight": torch.zeros(512, 256, 3, 3), "features.17.bias": torch.zeros(512),
                  "classifier.0.weight": torch.zeros(4, 8), "classifier.0.bias": torch.zeros(4)})
    torch.save(state, path)
    return state


def test_perceptual_is_registered_zero_for_identical_and_positive_for_different_volumes():
    torch.manual_seed(0)
    assert isinstance(build_loss_component("perceptual", weights="random", slices_per_axis=2), PerceptualLoss)
    loss, target = random_loss(), volume()
    assert loss(target.clone(), target).item() == 0.0
    assert loss(volume(1), target).item() > 0


def test_only_the_evenly_spaced_slices_are_compared():
    loss, target = random_loss(), volume()  # 2 slices of 16 per axis: indices 4 and 12
    outside = target.clone()
    outside[:, :, 0, 0, 0] += 0.5  # lies on no compared slice
    inside = target.clone()
    inside[:, :, 4, 0, 0] += 0.5  # on D slice 4
    assert loss(outside, target).item() == 0.0
    assert loss(inside, target).item() > 0


def test_slices_are_grey_repeated_to_rgb_and_imagenet_normalised():
    slices = random_loss()._slices(torch.full((1, 1, SIZE, SIZE, SIZE), 0.5), axis=3)
    assert slices.shape == (2, 3, SIZE, SIZE)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(slices[:, :, 3, 5], expected.expand(2, 3))


def test_gradients_reach_pred_but_not_the_frozen_network():
    loss, target = random_loss(), volume()
    pred = volume(1).requires_grad_()
    loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


def test_the_network_stays_frozen_and_in_eval_mode_when_the_parent_trains():
    torch.manual_seed(0)
    parent = ReconstructionLoss({"perceptual": 1.0}, {"perceptual": {"weights": "random", "slices_per_axis": 2}})
    parent.train()
    vgg = parent.components["perceptual"].vgg
    assert parent.training and not vgg.training and not any(m.training for m in vgg.modules())
    assert not any(p.requires_grad for p in parent.parameters())


def test_parameter_names_follow_torchvisions_layout():
    assert list(VGG16Features("random").state_dict()) == TORCHVISION_KEYS
    assert list(random_loss().state_dict()) == [f"vgg.{key}" for key in TORCHVISION_KEYS]  # mean/std not saved
    shapes = {key: tuple(value.shape) for key, value in VGG16Features("random").state_dict().items()}
    assert shapes["features.0.weight"] == (64, 3, 3, 3) and shapes["features.14.weight"] == (256, 256, 3, 3)


def test_a_torchvision_layout_file_loads_ignoring_deeper_layers_and_the_classifier(tmp_path):
    state = torchvision_style_file(tmp_path / "vgg16.pth")
    loaded = PerceptualLoss(weights=str(tmp_path / "vgg16.pth")).vgg.state_dict()
    for key in TORCHVISION_KEYS:
        torch.testing.assert_close(loaded[key], state[key])


def test_a_missing_or_garbage_file_names_the_file_and_the_url(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(VGGWeightsError, match=re.escape(str(missing))) as error:
        PerceptualLoss(weights=str(missing))
    assert VGG16_URL in str(error.value) and "weights: random exists for tests only" in str(error.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(VGGWeightsError, match=re.escape(f"cannot read VGG16 weights from {garbage}")) as error:
        PerceptualLoss(weights=str(garbage))
    assert VGG16_URL in str(error.value)


def test_a_file_with_the_wrong_layout_names_the_keys(tmp_path):
    state = torchvision_style_file(tmp_path / "vgg16.pth")
    state["features.2.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(state, tmp_path / "wrong_shape.pth")
    with pytest.raises(VGGWeightsError, match=r"features.2.weight \(64, 32, 3, 3\) \(expected \(64, 64, 3, 3\)\)"):
        PerceptualLoss(weights=str(tmp_path / "wrong_shape.pth"))
    del state["features.14.bias"]
    torch.save(state, tmp_path / "incomplete.pth")
    with pytest.raises(VGGWeightsError, match=r"incomplete.pth lacks VGG16 parameters \['features.14.bias'\]"):
        PerceptualLoss(weights=str(tmp_path / "incomplete.pth"))


def test_an_unknown_weights_value_is_an_error():
    with pytest.raises(VGGWeightsError, match="'vgg19' are neither 'imagenet', 'random' nor an existing file"):
        PerceptualLoss(weights="vgg19")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, no $X2CT_VGG16_WEIGHTS, and a download that records its call or fails offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("X2CT_VGG16_WEIGHTS", raising=False)
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth", calls


def test_imagenet_offline_without_a_file_says_how_to_get_it(empty_hub):
    cache, calls = empty_hub
    with pytest.raises(VGGWeightsError, match="downloading them failed") as error:
        PerceptualLoss(weights="imagenet")
    assert calls == [(VGG16_URL, str(cache), "397923af")]
    for hint in (VGG16_URL, str(cache), "$X2CT_VGG16_WEIGHTS", "weights: random exists for tests only"):
        assert hint in str(error.value)


def test_imagenet_uses_the_env_file_then_the_cache_before_downloading(empty_hub, tmp_path, monkeypatch):
    cache, calls = empty_hub
    cache.parent.mkdir(parents=True)
    state = torchvision_style_file(cache)
    torch.testing.assert_close(PerceptualLoss(weights="imagenet").vgg.state_dict()["features.0.weight"],
                               state["features.0.weight"])
    monkeypatch.setenv("X2CT_VGG16_WEIGHTS", str(tmp_path / "elsewhere.pth"))
    with pytest.raises(VGGWeightsError, match=r"\$X2CT_VGG16_WEIGHTS=.*elsewhere.pth is not a file"):
        PerceptualLoss(weights="imagenet")  # a set variable is never silently skipped
    cache.rename(tmp_path / "elsewhere.pth")
    PerceptualLoss(weights="imagenet")
    assert calls == []


def test_imagenet_downloads_into_the_cache_when_online(empty_hub, monkeypatch, tmp_path):
    cache, _ = empty_hub
    source = tmp_path / "served.pth"
    state = torchvision_style_file(source)
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, hash_prefix=None, progress=True: Path(dst).write_bytes(source.read_bytes()))
    loaded = PerceptualLoss(weights="imagenet").vgg.state_dict()
    assert cache.is_file()
    torch.testing.assert_close(loaded["features.14.weight"], state["features.14.weight"])


def test_bad_layers_shapes_and_devices_fail_clearly():
    with pytest.raises(ValueError, match=r"from \['relu1_1'.*got \('relu5_3',\)"):
        random_loss(layers=["relu5_3"])
    loss = random_loss()
    with pytest.raises(ValueError, match=r"too small for VGG16"):
        loss(torch.rand(1, 1, SIZE, SIZE, 2), torch.rand(1, 1, SIZE, SIZE, 2))
    with pytest.raises(ValueError, match=r"VGG16 network is on cpu but pred is on meta"):
        loss(torch.empty(1, 1, SIZE, SIZE, SIZE, device="meta"), torch.empty(1, 1, SIZE, SIZE, SIZE, device="meta"))


def phantom_pair(seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A 32^3 phantom chest CT in [0, 1] (1, 1, 32, 32, 32) and a prediction of it: blurred, plus Gaussian noise."""
    ct = generate_chest_phantom(seed, shape=(32, 32, 32))
    target = ((torch.as_tensor(ct.hu).float().clamp(-1000, 1000) + 1000) / 2000)[None, None]
    blurred = torch.nn.functional.avg_pool3d(target, 3, stride=1, padding=1, count_include_pad=False)
    return blurred + noise * torch.randn(target.shape, generator=torch.Generator().manual_seed(seed)), target


@pytest.mark.parametrize(("noise", "min_cosine"), [(0.03, 0.99), (0.003, 0.98)])
def test_bf16_features_keep_the_loss_and_the_gradient_direction(noise, min_cosine):
    # measured: relative loss difference 1e-3 (noise 0.03) to 5e-3 (noise 0.003), cosine 0.999 and 0.987
    pred, target = phantom_pair(0, noise)
    values, grads = [], []
    for dtype in ("float32", "bfloat16"):
        p = pred.clone().requires_grad_()
        value = random_loss(slices_per_axis=4, dtype=dtype)(p, target)
        value.backward()
        values.append(value)
        grads.append(p.grad.flatten())
    assert values[1].dtype == torch.float32
    torch.testing.assert_close(values[1], values[0], rtol=2e-2, atol=0.0)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > min_cosine


def test_float32_features_are_the_default_and_a_bad_dtype_is_named():
    pred, target = volume(1), volume(2)
    assert torch.equal(random_loss()(pred, target), random_loss(dtype="float32")(pred, target))
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'bfloat16'\], got 'float16'"):
        random_loss(dtype="float16")
