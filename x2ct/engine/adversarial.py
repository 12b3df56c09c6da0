"""Adversarial training (milestone 3) as an extension of the supervised step: the trainer stays one loop.

The trainer calls three hooks when ``adversarial=default`` is chosen; with ``adversarial=none`` (a null
``cfg.adversarial``) none of this is built or run:

- ``generator_term(volume, epoch)``: the generator's adversarial loss, added to the reconstruction loss before
  the generator's backward (the discriminators are used frozen, unwrapped, so no DDP hook fires for them);
- ``discriminator_step(volume.detach(), target, epoch)``: after the generator's optimizer step, ``d_steps``
  updates of the discriminators with their own optimiser, schedule, gradient clipping, AMP scaler and DDP wrapper;
- ``state_dict`` / ``load_state_dict``: saved as the checkpoint's ``adversarial`` part, so resume is exact.

Discriminators (``conf/discriminator/``): a 3D PatchGAN on volumes, and a 2D PatchGAN on projections, i.e. DRRs
of the predicted and the real volume rendered by the project's differentiable projector at the input angles and
at ``random_angles`` new ones per step, normalised as the input views (``x2ct.physics.volume_projections``).
Objectives, R1 and the weight ramp: ``x2ct.adversarial.objectives``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from x2ct.adversarial.discriminators import PatchDiscriminator, patch_summary, resolve_patch_layers
from x2ct.adversarial.objectives import adversarial_weight, discriminator_loss, generator_loss, r1_penalty
from x2ct.data.input_spec import InputSpec
from x2ct.engine.schedule import cosine_with_warmup
from x2ct.models.view_blocks.cone_lift import ConeBeamLift
from x2ct.physics.projector import BACKENDS
from x2ct.physics.view_angles import random_angles
from x2ct.physics.volume_projections import render_projections

CONDITIONS = ("none", "backprojection")


class AdversarialTraining:
    """Discriminators, their optimiser / schedule / scaler, and the two hooks the trainer calls.

    Args:
        cfg: the ``adversarial`` config (plain dict): objective, weight, start_epoch, ramp_epochs, d_steps,
            r1_gamma, grad_clip_norm, lr, betas, weight_decay, random_angles, projector_backend,
            discriminators {volume, projection}
            (each a ``_target_`` config or None).
        input_spec: the data set's ``input_spec()`` (geometry, HU window, normalisation, CT grid) for projections.
        device, autocast: where and in which precision the discriminators run (``autocast`` a context factory).
        scaler: a GradScaler for fp16, else None. world_size: wrap the discriminators in DDP when > 1.
        total_steps: optimizer steps of the run, for the discriminators' cosine schedule.
    """

    def __init__(self, cfg: dict[str, Any], input_spec: InputSpec, device: torch.device, autocast,
                 scaler: torch.amp.GradScaler | None, world_size: int, total_steps: int) -> None:
        self.cfg = cfg
        self.autocast = autocast
        self.scaler = scaler
        self.spec = input_spec
        # spatial shape each discriminator judges: the CT grid, the detector
        self.input_shapes = {"volume": input_spec.ct_size, "projection": input_spec.view_shape}
        specs = {name: spec for name, spec in (cfg.get("discriminators") or {}).items() if spec}
        self.nets = nn.ModuleDict({name: self._build(name, spec).to(device) for name, spec in specs.items()})
        if not len(self.nets):
            raise ValueError("adversarial training is on (adversarial=default) but adversarial.discriminators names "
                             "none (volume, projection)")
        self.trained = {name: (DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                       else None) if world_size > 1 else net)
                        for name, net in self.nets.items()}
        self.optimizer = torch.optim.AdamW(self.nets.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]),
                                           weight_decay=cfg["weight_decay"])
        self.scheduler = cosine_with_warmup(self.optimizer, warmup_steps=0, total_steps=max(1, total_steps),
                                            min_lr_ratio=cfg.get("min_lr_ratio", 0.01))
        geometry = self.geometry = input_spec.geometry
        self.spacing_mm = input_spec.voxel_spacing_mm
        # a conditional volume discriminator judges (volume, the input views back-projected onto its grid)
        self.condition = cfg.get("condition") or "none"
        if self.condition not in CONDITIONS:
            raise ValueError(f"adversarial.condition must be one of {CONDITIONS}, got {self.condition!r}")
        wanted = 1 if self.condition == "backprojection" else 0
        if "volume" in self.nets and self.nets["volume"].condition_channels != wanted:
            raise ValueError(f"adversarial.condition={self.condition} gives {wanted} condition channel(s), but the "
                             f"volume discriminator has condition_channels={self.nets['volume'].condition_channels}")
        self.projector_backend = cfg.get("projector_backend") or "grid_sample"
        if self.projector_backend not in BACKENDS:
            raise ValueError(f"adversarial.projector_backend must be one of {BACKENDS}, got "
                             f"{self.projector_backend!r}")
        self.backprojection = (ConeBeamLift(geometry, list(input_spec.ct_size), list(input_spec.ct_fov_mm)).to(device)
                               if wanted else None)

    def _build(self, name: str, spec: dict[str, Any]) -> nn.Module:
        """Discriminator ``name`` from its config, its layers set from ``receptive_field`` and the input's side;
        refused when its input is too small for one logit."""
        key = f"adversarial.discriminators.{name}"
        if name not in self.input_shapes:
            raise ValueError(f"{key}: unknown discriminator; expected {sorted(self.input_shapes)}")
        shape = self.input_shapes[name]
        unit = "voxels" if name == "volume" else "pixels"
        net = instantiate(resolve_patch_layers(spec, min(shape), key, unit))
        if isinstance(net, PatchDiscriminator) and min(net.logit_shape(shape)) < 1:
            raise ValueError(f"{key}: {net.num_layers} layers leave no logit for inputs of shape {list(shape)}; "
                             f"lower {key}.num_layers or use {key}.receptive_field")
        return net

    def summary(self) -> list[str]:
        """One start-up line per discriminator: layers, receptive field and logit grid for this data."""
        return [f"{name} discriminator: " + (patch_summary(net, self.input_shapes[name])
                                             if isinstance(net, PatchDiscriminator) else type(net).__name__)
                for name, net in self.nets.items()]

    # ------------------------------------------------------------------------------------------------ hooks

    def weight(self, epoch: int) -> float:
        c = self.cfg
        return adversarial_weight(epoch, c["start_epoch"], c["ramp_epochs"], c["weight"])

    def generator_term(self, volume: Tensor, epoch: int, views: Tensor | None = None,
                       views_angles: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """``weight * generator_loss(D(fake))`` summed over discriminators; zero (no D forward) before start.
        ``views`` (B, V, 1, h, w) and their angles: the input, for a conditional volume discriminator."""
        w = self.weight(epoch)
        if w == 0.0:
            return volume.new_zeros(()), {}
        angles = self._angles()
        condition = self._condition(views, views_angles)
        with _frozen(self.nets), self.autocast():
            logits = self._logits(self.nets, volume, angles, condition)  # unwrapped: no DDP reduction for D here
        losses = {name: generator_loss(self.cfg["objective"], value.float()) for name, value in logits.items()}
        total = w * torch.stack(list(losses.values())).sum()
        return total, {f"adv_g_{name}": value.item() for name, value in losses.items()} | {"adv_weight": w}

    def discriminator_step(self, fake: Tensor, real: Tensor, epoch: int, views: Tensor | None = None,
                           views_angles: Tensor | None = None) -> dict[str, float]:
        """``d_steps`` updates of the discriminators on real targets against the detached prediction."""
        if self.weight(epoch) == 0.0:
            return {}
        out: dict[str, float] = {}
        condition = self._condition(views, views_angles)
        pair_condition = None if condition is None else torch.cat([condition, condition])
        for _ in range(self.cfg["d_steps"]):
            self.optimizer.zero_grad(set_to_none=True)
            angles = self._angles()
            real_input = real.detach().requires_grad_(self.cfg["r1_gamma"] > 0)
            with self.autocast():
                # real and fake in ONE forward per discriminator: DDP allows one forward per backward (and
                # instance norm keeps samples apart)
                both = self._logits(self.trained, torch.cat([real_input, fake.detach()]), angles, pair_condition)
            real_logits = {name: value[: value.shape[0] // 2] for name, value in both.items()}
            fake_logits = {name: value[value.shape[0] // 2:] for name, value in both.items()}
            loss = real.new_zeros(())
            for name in real_logits:
                d_loss = discriminator_loss(self.cfg["objective"], real_logits[name].float(),
                                            fake_logits[name].float())
                out[f"adv_d_{name}"] = d_loss.item()
                out[f"adv_d_{name}_real"] = real_logits[name].detach().float().mean().item()
                out[f"adv_d_{name}_fake"] = fake_logits[name].detach().float().mean().item()
                loss = loss + d_loss
            if self.cfg["r1_gamma"] > 0:
                penalty = r1_penalty([v.float() for v in real_logits.values()], real_input)
                out["adv_r1"] = penalty.item()
                loss = loss + 0.5 * self.cfg["r1_gamma"] * penalty
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.nets.parameters(), self.cfg["grad_clip_norm"] or math.inf)
            out["adv_d_grad_norm"] = float(norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            elif torch.isfinite(norm):
                self.optimizer.step()
        self.scheduler.step()
        return out

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    # -------------------------------------------------------------------------------------- internals

    def _angles(self) -> list[float]:
        """The input views' angles plus ``random_angles`` new ones (torch's global RNG: seeded, resumed)."""
        extra = random_angles(None, int(self.cfg.get("random_angles", 0))) if self.cfg.get("random_angles") else []
        return [*self.spec.angles_deg, *extra]

    @torch.no_grad()
    def _condition(self, views: Tensor | None, angles: Tensor | None) -> Tensor | None:
        """The input views back-projected onto the volume grid and averaged over the views that see each voxel,
        ``(B, 1, D, H, W)`` (``condition: backprojection``); None for an unconditional discriminator."""
        if self.backprojection is None:
            return None
        if views is None or angles is None:
            raise ValueError("adversarial.condition=backprojection needs the input views and their angles")
        lifted, seen = self.backprojection(views.float(), angles, return_mask=True)   # (B, V, 1, D, H, W)
        return (lifted * seen).sum(dim=1) / seen.sum(dim=1).clamp(min=1.0)

    def _logits(self, nets, volume: Tensor, angles: list[float], condition: Tensor | None = None
                ) -> dict[str, Tensor]:
        out = {}
        if "volume" in nets:
            out["volume"] = nets["volume"](volume, condition) if condition is not None else nets["volume"](volume)
        if "projection" in nets:
            projections = render_projections(volume.float(), self.spec.hu_window, self.spec.mu_water,
                                             self.spacing_mm, self.geometry.with_angles(angles),
                                             self.spec.normalisation, self.spec.scale,
                                             backend=self.projector_backend)
            out["projection"] = nets["projection"](projections.flatten(0, 1)[:, None])  # (B*V', 1, r, c)
        return out


@contextlib.contextmanager
def _frozen(nets: nn.Module):
    """Discriminator parameters without gradients while the generator's loss goes through them."""
    flags = [p.requires_grad for p in nets.parameters()]
    for p in nets.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(nets.parameters(), flags, strict=True):
            p.requires_grad_(flag)
