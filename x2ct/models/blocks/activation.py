"""Activation layers by name."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),  # slope 0.2 as in pix2pix / X2CT-GAN
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation layer: ``"relu"``, ``"leaky_relu"`` (slope 0.2), ``"gelu"`` or ``"silu"``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
