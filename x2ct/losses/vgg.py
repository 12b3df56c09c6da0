"""The first three blocks of VGG16 (Simonyan & Zisserman 2015), frozen, for perceptual losses; no torchvision needed.

The layers carry torchvision's parameter names (``features.0.weight`` ... ``features.14.bias``), so the standard
ImageNet file ``vgg16-397923af.pth`` loads as it is; its deeper ``features`` layers and ``classifier`` are ignored.

Where the weights come from (``weights``):

- a path to a local ``.pth`` file holding torchvision's VGG16 state dict;
- ``"imagenet"``: the file named by ``$X2CT_VGG16_WEIGHTS`` if set, else ``<torch hub dir>/checkpoints/
  vgg16-397923af.pth`` (``~/.cache/torch/hub/checkpoints`` unless ``$TORCH_HOME`` says otherwise; the place
  torchvision caches it too), else downloaded from ``VGG16_URL`` into that cache;
- ``"random"``: PyTorch's default initialisation, for tests only (the features of an untrained network carry no
  perceptual meaning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"
VGG16_SHA256_PREFIX = "397923af"  # torchvision names its files by the SHA-256 prefix of their contents
VGG16_WEIGHTS_ENV = "X2CT_VGG16_WEIGHTS"

# torchvision's vgg16 "features" through relu3_3: conv output channels, "M" = 2x2 max pool
_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256)
# position in ``features`` of each ReLU (after conv i of block b: relu<b>_<i>)
RELU_INDEX = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(RuntimeError):
    """VGG16 weights that cannot be found, fetched or loaded; the message says how to get them."""


class VGG16Features(nn.Module):
    """VGG16 ``features`` through relu3_3, frozen and always in eval mode.

    ``forward(x)`` takes ImageNet-normalised RGB images ``(N, 3, H, W)`` and returns the activations at ``layers``
    (names from ``RELU_INDEX``), in that order: relu1_2 is ``(N, 64, H, W)``, relu2_2 ``(N, 128, H/2, W/2)``,
    relu3_3 ``(N, 256, H/4, W/4)``. Layers after the deepest requested one are kept (so every file has the same
    keys) but not run.
    """

    def __init__(self, weights: str, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3")) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in RELU_INDEX]
        if unknown or not layers:
            raise ValueError(f"VGG16 feature layers must be a non-empty list from {list(RELU_INDEX)}, got {layers}")
        self.layers = tuple(layers)
        modules: list[nn.Module] = []
        channels = 3
        for item in _LAYOUT:
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*modules)
        path = resolve_vgg16_weights(weights)
        if path is not None:
            load_vgg16_weights(self, path)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> VGG16Features:
        """Stay in eval mode whatever a parent asks: the network is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        wanted = {RELU_INDEX[name]: name for name in self.layers}
        found: dict[str, Tensor] = {}
        for index, module in enumerate(self.features[: max(wanted) + 1]):
            x = module(x)
            if index in wanted:
                found[wanted[index]] = x
        return [found[name] for name in self.layers]


def resolve_vgg16_weights(weights: str) -> Path | None:
    """The local file that ``weights`` names (fetching the ImageNet file if needed), or None for ``"random"``."""
    if weights == "random":
        return None
    if weights == "imagenet":
        return _imagenet_weights_file()
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise VGGWeightsError(f"VGG16 weights {weights!r} are neither 'imagenet', 'random' nor an existing file. "
                              + _how_to_get_weights())
    return path


def load_vgg16_weights(module: VGG16Features, path: Path) -> None:
    """Copy the ``features.*`` tensors of the torchvision VGG16 state dict in ``path`` into ``module``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types; all mean "not a state dict file"
        raise VGGWeightsError(f"cannot read VGG16 weights from {path}: {error}. " + _how_to_get_weights()) from error
    if not isinstance(state, dict):
        raise VGGWeightsError(f"{path} holds a {type(state).__name__}, not a VGG16 state dict. "
                              + _how_to_get_weights())
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise VGGWeightsError(f"{path} lacks VGG16 parameters {missing}; expected torchvision's vgg16 layout. "
                              + _how_to_get_weights())
    wrong = [f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})" for key, value in expected.items()
             if tuple(state[key].shape) != tuple(value.shape)]
    if wrong:
        raise VGGWeightsError(f"{path} has VGG16 parameters of the wrong shape: {wrong}. " + _how_to_get_weights())
    module.load_state_dict({key: state[key] for key in expected}, strict=True)


def vgg16_cache_path() -> Path:
    """Where the ImageNet file is looked for and downloaded to: torch hub's checkpoint cache, as torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def _imagenet_weights_file() -> Path:
    from_env = os.environ.get(VGG16_WEIGHTS_ENV)
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise VGGWeightsError(f"${VGG16_WEIGHTS_ENV}={from_env} is not a file. " + _how_to_get_weights())
        return path
    cached = vgg16_cache_path()
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # writes a uniquely named partial file, then moves it into place: concurrent ranks do not clash
        torch.hub.download_url_to_file(VGG16_URL, str(cached), hash_prefix=VGG16_SHA256_PREFIX)
    except Exception as error:  # offline (URLError), a read-only cache (OSError), a corrupt download ...
        raise VGGWeightsError(f"VGG16 ImageNet weights are not in {cached} and downloading them failed: {error}. "
                              + _how_to_get_weights()) from error
    return cached


def _how_to_get_weights() -> str:
    return (f"Download {VGG16_URL} and either put it at {vgg16_cache_path()}, point ${VGG16_WEIGHTS_ENV} at it "
            f"(with weights: imagenet), or give its path as the perceptual loss's weights. weights: random exists "
            f"for tests only (an untrained network is no perceptual measure).")


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RELU_INDEX", "VGG16_URL", "VGG16_WEIGHTS_ENV", "VGG16Features",
           "VGGWeightsError", "load_vgg16_weights", "resolve_vgg16_weights", "vgg16_cache_path"]
