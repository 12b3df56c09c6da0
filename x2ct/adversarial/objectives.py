"""GAN objectives, the R1 gradient penalty and the adversarial-weight schedule.

Logits are the raw discriminator outputs (e.g. PatchGAN maps ``(B, 1, d, h, w)``). Every loss also accepts a
list of logit tensors, one per discriminator or scale, and averages the per-tensor losses, so adding a
discriminator does not change the loss's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ADVERSARIAL_OBJECTIVES = ("lsgan", "hinge", "non_saturating")

Logits = Tensor | Sequence[Tensor]

# LSGAN (Mao et al. 2017, eq. 2 with a=0, b=c=1): targets 1 for real and 0 for fake; both players' squared
# errors are halved, as in the paper, so D's optimum loss against a perfect generator is 0.25 rather than 0.5.
LSGAN_REAL_TARGET = 1.0
LSGAN_FAKE_TARGET = 0.0
LSGAN_FACTOR = 0.5
# Hinge (Lim & Ye 2017; Miyato et al. 2018): D is only pushed until real logits reach +margin and fake -margin.
HINGE_MARGIN = 1.0


def discriminator_loss(kind: str, real_logits: Logits, fake_logits: Logits) -> Tensor:
    """Scalar loss the discriminator minimises; ``fake_logits`` should come from detached generator outputs."""
    _check_kind(kind)
    reals, fakes = _as_list(real_logits, "real_logits"), _as_list(fake_logits, "fake_logits")
    if len(reals) != len(fakes):
        raise ValueError(f"discriminator_loss: {len(reals)} real logit tensors but {len(fakes)} fake ones; "
                         "give one of each per discriminator / scale")
    return torch.stack([_d_loss(kind, r, f) for r, f in zip(reals, fakes, strict=True)]).mean()


def generator_loss(kind: str, fake_logits: Logits) -> Tensor:
    """Scalar adversarial loss the generator minimises, from D's logits on generated samples."""
    _check_kind(kind)
    return torch.stack([_g_loss(kind, f) for f in _as_list(fake_logits, "fake_logits")]).mean()


def r1_penalty(real_logits: Logits, real_inputs: Tensor) -> Tensor:
    """R1 penalty (Mescheder et al. 2018): ``mean_b ||grad_x D(x_b)||^2`` on real samples, without gamma / 2.

    ``real_inputs`` ``(B, ...)`` must have ``requires_grad=True`` before D is applied; the gradient is built with
    ``create_graph=True`` so the penalty can be back-propagated into D's parameters. For several logit tensors
    (one per scale) their sums are added: the gradient of the total real score.
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty: real_inputs does not require grad; call real_inputs.requires_grad_() "
                         "before the discriminator's forward pass")
    score = torch.stack([r.sum() for r in _as_list(real_logits, "real_logits")]).sum()
    (grad,) = torch.autograd.grad(score, real_inputs, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()


def adversarial_weight(epoch: int, start_epoch: int, ramp_epochs: int, weight: float) -> float:
    """Weight of the generator's adversarial term at (0-based) ``epoch``.

    0 before ``start_epoch`` (let the reconstruction losses shape the volume first); from ``start_epoch`` it
    rises linearly, reaching ``weight`` at ``start_epoch + ramp_epochs - 1``, i.e. ``weight * (epoch - start + 1)
    / ramp_epochs``; ``ramp_epochs = 0`` switches it on at full weight.
    """
    if start_epoch < 0 or ramp_epochs < 0:
        raise ValueError(f"adversarial_weight: start_epoch and ramp_epochs must be >= 0, got {start_epoch}, "
                         f"{ramp_epochs}")
    if weight < 0:
        raise ValueError(f"adversarial_weight: weight must be >= 0, got {weight}")
    if epoch < start_epoch:
        return 0.0
    if ramp_epochs == 0:
        return float(weight)
    return float(weight) * min(1.0, (epoch - start_epoch + 1) / ramp_epochs)


def _d_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    if kind == "lsgan":
        return LSGAN_FACTOR * ((real - LSGAN_REAL_TARGET).pow(2).mean() + (fake - LSGAN_FAKE_TARGET).pow(2).mean())
    if kind == "hinge":
        return F.relu(HINGE_MARGIN - real).mean() + F.relu(HINGE_MARGIN + fake).mean()
    # non-saturating: binary cross-entropy with logits, -log sigmoid(real) - log(1 - sigmoid(fake))
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _g_loss(kind: str, fake: Tensor) -> Tensor:
    if kind == "lsgan":
        return LSGAN_FACTOR * (fake - LSGAN_REAL_TARGET).pow(2).mean()
    if kind == "hinge":
        return -fake.mean()
    # -log sigmoid(fake): strong gradients early, when D confidently rejects fakes (Goodfellow et al. 2014)
    return F.softplus(-fake).mean()


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_OBJECTIVES:
        raise ValueError(f"unknown adversarial objective {kind!r}; expected one of {ADVERSARIAL_OBJECTIVES}")


def _as_list(logits: Logits, name: str) -> list[Tensor]:
    items = [logits] if isinstance(logits, Tensor) else list(logits)
    if not items:
        raise ValueError(f"{name} is empty: give a tensor or a non-empty list of tensors")
    return items
