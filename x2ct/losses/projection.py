"""Projection consistency: the predicted volume must explain the X-rays it was reconstructed from.

The views a model sees are DRRs of the true CT, so a correct prediction rendered at the same angles reproduces them
exactly. This term renders DRRs of the prediction (differentiably, with the data set's own geometry, HU window,
attenuation and normalisation) and compares them with the input views: the data-consistency term of sparse-view CT
reconstruction, which needs no ground truth at the input angles. Optionally it also compares DRRs of prediction and
target at random novel angles, which constrains the volume along directions the inputs never saw.

Cost: that of ``render_drr`` forward and backward, once per distinct row of input angles (one per batch as a
rule); novel views add one rendering of the prediction and one of the target (no graph) at the novel angles. CPU,
one thread, B=2, forward + backward: 32^3 volume, 64^2 views: 7 ms for 2 views, 21 ms for 8; 64^3 volume,
128^2 views: 45 ms for 2 views, 175 ms for 8 (2 novel views add about 80 ms at 64^3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from x2ct.data.input_spec import InputSpec
from x2ct.losses.registry import LossComponent, register_loss_component
from x2ct.physics.geometry import ProjectionGeometry
from x2ct.physics.projector import BACKENDS, Backend
from x2ct.physics.radiograph import to_intensity
from x2ct.physics.view_angles import angle_rows, random_angles
from x2ct.physics.volume_projections import render_projections

METRICS = ("l1", "ncc")

# An image is flat for NCC when the RMS of its centred pixels is at most this many machine epsilons of its largest
# |pixel|: variation the dtype cannot resolve at that brightness (centring a constant image leaves rounding noise
# of a few ulps, not exact zeros). float32: 7.6e-6 of the brightness; float64: 1.4e-14.
NCC_FLAT_ULPS = 64.0

def l1_distance(rendered: Tensor, views: Tensor) -> Tensor:
    """Mean absolute difference of two image stacks ``(B, V, rows, cols)``."""
    return (rendered - views).abs().mean()


def ncc_distance(rendered: Tensor, views: Tensor) -> Tensor:
    """``1 - mean`` over (sample, view) of the normalised cross-correlation of ``(B, V, rows, cols)`` images.

    Each image is centred and scaled to unit norm, so the distance ignores a view's brightness and contrast. Per
    pair it is ``||u - v||^2 / 2`` (= ``1 - <u, v>`` for unit u, v), which is exactly 0 for identical images
    whatever their variance, and clamped to [0, 2]. Flat images (``NCC_FLAT_ULPS``) have no correlation: two flat
    images are at distance 0 (equal up to brightness), a flat and a non-flat one at 1, with zero gradient
    (finite, not 0/0).
    """
    rendered_unit, rendered_flat = _unit_centred(rendered)
    views_unit, views_flat = _unit_centred(views)
    distance = (0.5 * (rendered_unit - views_unit).square().sum(dim=(-2, -1))).clamp(max=2.0)  # (B, V)
    one_flat = (rendered_flat != views_flat).to(distance.dtype)
    distance = torch.where(rendered_flat | views_flat, one_flat, distance)
    return distance.mean()


def _unit_centred(images: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-mean, unit-norm images ``(B, V, rows, cols)`` (flat ones only centred) and the flat mask ``(B, V)``.

    Half-precision images are measured in float32: a bf16 epsilon would call every image flat."""
    images = images.to(torch.promote_types(images.dtype, torch.float32))
    centred = images - images.mean(dim=(-2, -1), keepdim=True)
    sum_sq = centred.square().sum(dim=(-2, -1))                                          # (B, V)
    pixels = images.shape[-2] * images.shape[-1]
    scale = images.detach().abs().amax(dim=(-2, -1))
    flat = sum_sq.detach() <= pixels * (NCC_FLAT_ULPS * torch.finfo(images.dtype).eps * scale) ** 2
    # flat images divide by 1, not by a norm near 0: every branch of the caller's torch.where stays finite
    norm = torch.where(flat, torch.ones_like(sum_sq), sum_sq).sqrt()
    return centred / norm[..., None, None], flat


DISTANCES = {"l1": l1_distance, "ncc": ncc_distance}


@register_loss_component("projection")
class ProjectionConsistencyLoss(LossComponent):
    """``metric(DRRs of pred at the input angles, input views)`` [+ ``novel_weight * metric`` at novel angles].

    Args:
        input_spec: the data set's ``PatientDRRDataset.input_spec()`` (geometry, HU window, mu_water, CT grid,
            radiograph kind, view normalisation). May be set later (``loss.input_spec = spec``), before the
            first forward.
        metric: ``"l1"`` (mean absolute difference of the views) or ``"ncc"`` (1 - normalised cross-correlation,
            insensitive to brightness and contrast).
        novel_views: if > 0, also render prediction and target at this many gantry angles drawn uniformly from
            [0, ``novel_arc_deg``) per call (torch's global RNG, so seeded runs repeat and resume), shared by
            the batch. Needs ``target`` in ``forward``.
        novel_weight: weight of the novel-view term relative to the input-view term.
        novel_arc_deg: upper end of the novel angles' range in degrees.
        backend: the projector's ray summation (``render_drr``): ``"grid_sample"`` (the default; any device,
            deterministic on the CPU), ``"triton"`` (the fused kernels, CUDA) or ``"auto"`` (Triton on CUDA where
            installed). The loss's value is the same to float32 rounding either way.

    ``ReconstructionLoss`` passes ``views``, ``angles_deg`` and ``input_spec`` to components whose class sets
    ``uses_views = True``.
    """

    uses_views = True

    def __init__(self, input_spec: InputSpec | None = None, metric: str = "l1", novel_views: int = 0,
                 novel_weight: float = 1.0, novel_arc_deg: float = 180.0, backend: Backend = "grid_sample") -> None:
        super().__init__()
        if metric not in DISTANCES:
            raise ValueError(f"projection loss: unknown metric {metric!r}; allowed metrics: {list(METRICS)}")
        if int(novel_views) != novel_views or novel_views < 0:
            raise ValueError(f"projection loss: novel_views must be an integer >= 0, got {novel_views}")
        if not float(novel_weight) >= 0:
            raise ValueError(f"projection loss: novel_weight must be >= 0, got {novel_weight}")
        if novel_views and not float(novel_arc_deg) > 0:
            raise ValueError(f"projection loss: novel_arc_deg must be > 0, got {novel_arc_deg}")
        if backend not in BACKENDS:
            raise ValueError(f"projection loss: backend must be one of {BACKENDS} (loss.components.projection."
                             f"backend), got {backend!r}")
        self.metric = metric
        self.backend = backend
        self.novel_views = int(novel_views)
        self.novel_weight = float(novel_weight)
        self.novel_arc_deg = float(novel_arc_deg)
        if input_spec is not None and not isinstance(input_spec, InputSpec):
            raise TypeError(f"projection loss: input_spec is a {type(input_spec).__name__}; expected an "
                            "x2ct.data.input_spec.InputSpec (PatientDRRDataset.input_spec(), or InputSpec.from_dict)")
        self.input_spec = input_spec

    def forward(self, pred: Tensor, views: Tensor, angles_deg: Tensor, target: Tensor | None = None) -> Tensor:
        """Scalar loss.

        Args:
            pred: ``(B, 1, D, H, W)`` in [0, 1] (the HU window mapped linearly; not clamped here).
            views: ``(B, V, 1, rows, cols)`` the model's input views.
            angles_deg: ``(B, V)`` or ``(V,)`` gantry angles of ``views``; rows that differ are rendered apart.
            target: ``(B, 1, D, H, W)`` the true volume; needed only for novel views.
        """
        spec = self.input_spec
        if spec is None:
            raise ValueError("projection loss: input_spec is None; pass the data set's input_spec() (the trainer "
                             "fills it in for components with uses_views)")
        size = spec.ct_size
        if pred.ndim != 5 or pred.shape[1] != 1 or tuple(pred.shape[2:]) != size:
            raise ValueError(f"projection loss: pred must be (B, 1, *input_spec.ct_size) = (B, 1, {size}), got "
                             f"{tuple(pred.shape)}; DRRs need the whole volume on the data set's grid")
        if views.ndim != 5 or views.shape[0] != pred.shape[0] or views.shape[2] != 1:
            raise ValueError(f"projection loss: views must be (B, V, 1, rows, cols) with B = {pred.shape[0]}, got "
                             f"{tuple(views.shape)}")
        geometry = spec.geometry
        if tuple(views.shape[-2:]) != tuple(geometry.detector_shape):
            raise ValueError(f"projection loss: rendered DRRs are {tuple(geometry.detector_shape)} (input_spec "
                             f"geometry.detector_shape) but the views are {tuple(views.shape[-2:])}; views "
                             "resampled to another size (protocol.view_size) are not supported")
        angles = angle_rows(angles_deg, batch=pred.shape[0])
        if len(angles) != pred.shape[0] or any(len(row) != views.shape[1] for row in angles):
            raise ValueError(f"projection loss: angles_deg must be (B, V) = ({pred.shape[0]}, {views.shape[1]}) or "
                             f"(V,), got {(len(angles), len(angles[0]) if angles else 0)}")
        if self.novel_views and target is None:
            raise ValueError(f"projection loss: novel_views={self.novel_views} needs the target volume; pass "
                             "target= (or set novel_views=0)")
        if self.novel_views and target.shape != pred.shape:
            raise ValueError(f"projection loss: target must have pred's shape {tuple(pred.shape)}, got "
                             f"{tuple(target.shape)}")

        distance = DISTANCES[self.metric]
        groups: dict[tuple[float, ...], list[int]] = {}  # angles -> the samples seen at them
        for sample, row in enumerate(angles):
            groups.setdefault(row, []).append(sample)
        if len(groups) == 1:  # the usual batch: every sample seen at the same angles
            rendered = self._render(pred, list(angles[0]), geometry)
        else:  # one rendering per group of samples that share angles, then back into batch order
            pieces = [self._render(pred[samples], list(row), geometry) for row, samples in groups.items()]
            order = [sample for samples in groups.values() for sample in samples]
            rendered = torch.cat(pieces)[sorted(range(len(order)), key=order.__getitem__)]
        loss = distance(rendered, views[:, :, 0].to(rendered.dtype))

        if self.novel_views:
            novel = random_angles(None, self.novel_views, 0.0, self.novel_arc_deg)
            with torch.no_grad():  # the target's DRRs are data: no graph, no backward through them
                target_novel = self._render(target, novel, geometry)
            loss = loss + self.novel_weight * distance(self._render(pred, novel, geometry), target_novel)
        return loss

    def _render(self, volume01: Tensor, angles: Sequence[float], geometry: ProjectionGeometry) -> Tensor:
        """``(B, 1, D, H, W)`` in [0, 1] -> ``(B, V, rows, cols)`` views as the data set makes them, float32+."""
        spec = self.input_spec
        intensity = spec.radiograph == "intensity"
        # intensity views are exp(-p) of the raw line integrals (PatientDRRDataset): no normalisation first
        images = render_projections(volume01, spec.hu_window, spec.mu_water, spec.voxel_spacing_mm,
                                    geometry.with_angles(angles), "none" if intensity else spec.normalisation,
                                    None if intensity else spec.scale, backend=self.backend)
        return to_intensity(images) if intensity else images
