"""Additive attention gate (Oktay et al. 2018, Attention U-Net): a coarse gating signal re-weights a skip connection.

A decoder's coarse features know *what* is being reconstructed; the encoder's skip features know *where*. The gate
lets the former suppress skip voxels that are irrelevant before they are concatenated into the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from x2ct.models.blocks.activation import make_activation
from x2ct.models.blocks.conv import ConvNormAct


class AttentionGate3D(nn.Module):
    """``skip (B, Cs, D, H, W), gate (B, Cg, d, h, w) -> skip * psi (B, Cs, D, H, W)``.

    ``psi = sigmoid(conv_psi(relu(theta(skip) + phi(resize(gate)))))`` is one ``(B, 1, D, H, W)`` map in (0, 1),
    shared by all skip channels. ``theta`` and ``phi`` are 1x1x1 ConvNormActs to ``inter_channels`` without an
    activation; the gate is resized trilinearly (``align_corners=False``) to the skip's size, so any coarser (or
    equal) gate size works. ``conv_psi`` is a plain 1x1x1 convolution with a bias and no norm: the map is then exactly
    ``sigmoid(bias)`` when its weights are zero, and a norm over one channel would wash out its spatial contrast.

    The last map is kept, detached, in ``last_attention`` for figures and logging; ``forward(...,
    return_attention=True)`` returns it with its graph instead.

    Args:
        skip_channels: ``Cs``, channels of the skip features (encoder side, finer).
        gate_channels: ``Cg``, channels of the gating signal (decoder side, usually coarser).
        inter_channels: width of the joint space; default ``skip_channels // 2`` (at least 1), as in the paper.
        norm: norm after ``theta`` and ``phi`` (see ``make_norm``).
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int | None = None,
                 norm: str = "instance") -> None:
        super().__init__()
        inter_channels = inter_channels if inter_channels is not None else max(skip_channels // 2, 1)
        if inter_channels < 1:
            raise ValueError(f"AttentionGate3D: inter_channels must be >= 1, got {inter_channels}")
        self.skip_channels, self.gate_channels = skip_channels, gate_channels
        self.theta = ConvNormAct(3, skip_channels, inter_channels, kernel_size=1, norm=norm, act=None)
        self.phi = ConvNormAct(3, gate_channels, inter_channels, kernel_size=1, norm=norm, act=None)
        self.act = make_activation("relu")
        self.psi = nn.Conv3d(inter_channels, 1, kernel_size=1)
        self.last_attention: Tensor | None = None

    def forward(self, skip: Tensor, gate: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``skip * psi``, or ``(skip * psi, psi)`` with ``return_attention``; ``psi`` is ``(B, 1, D, H, W)``."""
        if skip.ndim != 5 or skip.shape[1] != self.skip_channels:
            raise ValueError(f"AttentionGate3D: skip must be (B, {self.skip_channels}, D, H, W), "
                             f"got {tuple(skip.shape)}")
        if gate.ndim != 5 or gate.shape[1] != self.gate_channels or gate.shape[0] != skip.shape[0]:
            raise ValueError(f"AttentionGate3D: gate must be (B={skip.shape[0]}, {self.gate_channels}, d, h, w), "
                             f"got {tuple(gate.shape)}")
        if gate.shape[2:] != skip.shape[2:]:
            gate = F.interpolate(gate, size=skip.shape[2:], mode="trilinear", align_corners=False)
        psi = torch.sigmoid(self.psi(self.act(self.theta(skip) + self.phi(gate))))
        self.last_attention = psi.detach()
        out = skip * psi
        return (out, psi) if return_attention else out
