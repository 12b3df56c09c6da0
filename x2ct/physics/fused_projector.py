"""Joseph's method as one Triton kernel compiled twice (forward and backward): the DRR projector's rays marched
through the volume, one launch per ray group.

``render_drr(..., backend="triton")`` hands each ``RayGroup`` of its ``RayPlan`` to ``line_integrals``; the maths
is the ``grid_sample`` path's (x2ct/physics/projector.py), the memory traffic is not:

- forward: one program per block of ``RAYS_PER_PROGRAM`` rays and one batch item. Each ray walks the ``P`` planes
  of its group, reads the four voxels around its crossing (``align_corners=False``, zeros outside the volume),
  adds the bilinear sample to a register accumulator and writes ``sum * length_per_plane`` once. The grid_sample
  path instead materialises a ``(P, R, 2)`` grid and ``(P, B, R)`` samples per chunk and copies the volume into
  plane order for every group; here nothing but the ``(B, R)`` result is written, and the volume is read in place
  through its strides.
- backward (gradient with respect to the volume only): the same walk (the same kernel, ``BACKWARD=True``), scattering
  ``upstream * length_per_plane * weight`` into the four voxels with atomic adds. Atomics make the order of the
  additions, and so the last bits of the gradient, vary from run to run, and the backward honours
  ``torch.use_deterministic_algorithms`` as PyTorch's atomic backwards do. The deterministic fallback is the
  ``grid_sample`` path on the CPU (CUDA's grid_sample backward adds with atomics too). Memory: the backward
  allocates one ``(P, B, rows, cols)`` gradient per group, as the grid_sample path's does; nothing per ray.
- the geometry (``base``, ``slope``, ``length_per_plane``, ``plane_mm``) gets no gradient here: ``line_integrals``
  refuses geometry tensors that require grad, and ``render_drr(backend="auto")`` then takes the ``grid_sample``
  path, which differentiates with respect to both.

Accumulation is in the planes' dtype: float32 (``render_drr`` renders half-precision volumes in float32) or
float64. The forward and the backward are one ``torch.library`` custom op each (``x2ct::joseph_line_integrals``
and its backward), so ``torch.compile`` sees one node per ray group; neither synchronises with the host, so a CUDA
graph can capture them. ``TRITON_INTERPRET=1``, set before this module is first imported, runs the kernel on CPU
tensors through Triton's interpreter (how the tests check it without a GPU); otherwise it needs CUDA tensors.

``triton`` is an optional dependency: importing this module without it raises an ``ImportError`` that says how
to install it.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
except ImportError as error:  # pragma: no cover - exercised only where triton is missing
    raise ImportError("render_drr(backend='triton') needs Triton: pip install triton (or the x2ct extra: "
                      "pip install 'x2ct[fused]')") from error

# Rays per program: four 32-lane warps' worth; a starting point, not tuned on a GPU.
RAYS_PER_PROGRAM = 128
# The kernel indexes within one batch item with 32-bit offsets (the batch offset is 64-bit).
_MAX_OFFSET = 2**31 - 1


@triton.jit
def _plane_taps(plane, plane_mm, base_col, base_row, slope_col, slope_row, live, n_rows, n_cols, stride_row,
                stride_col):
    """The four voxels around the rays' crossings of one plane, as ``grid_sample`` with ``align_corners=False``
    finds them: their addresses below ``plane`` (the plane's first element, of the volume or of its gradient) and
    whether each lies inside the plane, top-left, top-right, bottom-left, bottom-right, then the bilinear weights
    (w_row0, w_row1, w_col0, w_col1). The forward reads the four voxels, the backward adds to them."""
    col = ((base_col + plane_mm * slope_col + 1) * n_cols - 1) * 0.5
    row = ((base_row + plane_mm * slope_row + 1) * n_rows - 1) * 0.5
    # outside by more than a voxel every corner is zero anyway; the clamp keeps the int cast in range
    col = tl.minimum(tl.maximum(col, -2.0), n_cols + 1.0)
    row = tl.minimum(tl.maximum(row, -2.0), n_rows + 1.0)
    col0f = tl.floor(col)
    row0f = tl.floor(row)
    w_col1 = col - col0f
    w_row1 = row - row0f
    row0 = row0f.to(tl.int32)
    col0 = col0f.to(tl.int32)
    row1 = row0 + 1
    col1 = col0 + 1
    in_row0 = live & (row0 >= 0) & (row0 < n_rows)
    in_row1 = live & (row1 >= 0) & (row1 < n_rows)
    in_col0 = (col0 >= 0) & (col0 < n_cols)
    in_col1 = (col1 >= 0) & (col1 < n_cols)
    top = plane + row0 * stride_row
    bottom = plane + row1 * stride_row
    return (top + col0 * stride_col, top + col1 * stride_col, bottom + col0 * stride_col, bottom + col1 * stride_col,
            in_row0 & in_col0, in_row0 & in_col1, in_row1 & in_col0, in_row1 & in_col1,
            1 - w_row1, w_row1, 1 - w_col1, w_col1)


@triton.jit
def _joseph_kernel(planes_ptr, rays_ptr, base_ptr, slope_ptr, length_ptr, plane_mm_ptr,
                   n_rays, n_planes, n_rows, n_cols,
                   stride_plane, stride_batch, stride_row, stride_col,
                   BLOCK: tl.constexpr, BACKWARD: tl.constexpr):
    """One program's block of rays of one batch item, walked plane by plane. ``BACKWARD`` (fixed when the kernel is
    compiled) picks what the walk does: the forward reads ``(P, B, rows, cols)`` planes and writes each ray's sum
    times its ``length_per_plane`` to the ``(B, R)`` ``rays_ptr``; the backward reads the upstream gradient from
    ``rays_ptr`` and adds it, times the length and the bilinear weights, to the four voxels of every crossing
    in ``planes_ptr`` (the gradient). One walk for both keeps the backward the exact adjoint of the forward."""
    batch = tl.program_id(1).to(tl.int64)
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = rays < n_rays
    base_col = tl.load(base_ptr + 2 * rays, mask=live, other=0.0)
    base_row = tl.load(base_ptr + 2 * rays + 1, mask=live, other=0.0)
    slope_col = tl.load(slope_ptr + 2 * rays, mask=live, other=0.0)
    slope_row = tl.load(slope_ptr + 2 * rays + 1, mask=live, other=0.0)
    length = tl.load(length_ptr + rays, mask=live, other=0.0)
    per_ray = rays_ptr + batch * n_rays + rays
    volume = planes_ptr + batch * stride_batch
    if BACKWARD:
        upstream = tl.load(per_ray, mask=live, other=0.0) * length
    else:
        acc = tl.zeros([BLOCK], dtype=rays_ptr.dtype.element_ty)
    for p in range(n_planes):
        at00, at01, at10, at11, in00, in01, in10, in11, w_row0, w_row1, w_col0, w_col1 = _plane_taps(
            volume + p * stride_plane, tl.load(plane_mm_ptr + p), base_col, base_row, slope_col, slope_row, live,
            n_rows, n_cols, stride_row, stride_col)
        if BACKWARD:
            g_row0 = upstream * w_row0
            g_row1 = upstream * w_row1
            tl.atomic_add(at00, g_row0 * w_col0, mask=in00, sem="relaxed")
            tl.atomic_add(at01, g_row0 * w_col1, mask=in01, sem="relaxed")
            tl.atomic_add(at10, g_row1 * w_col0, mask=in10, sem="relaxed")
            tl.atomic_add(at11, g_row1 * w_col1, mask=in11, sem="relaxed")
        else:
            v00 = tl.load(at00, mask=in00, other=0.0)
            v01 = tl.load(at01, mask=in01, other=0.0)
            v10 = tl.load(at10, mask=in10, other=0.0)
            v11 = tl.load(at11, mask=in11, other=0.0)
            acc += w_row0 * (w_col0 * v00 + w_col1 * v01) + w_row1 * (w_col0 * v10 + w_col1 * v11)
    if not BACKWARD:
        tl.store(per_ray, acc * length, mask=live)


# whether the kernel was defined under TRITON_INTERPRET=1, and so run on CPU tensors
INTERPRETED = isinstance(_joseph_kernel, InterpretedFunction)


def _alert_not_deterministic() -> None:
    """Honour ``torch.use_deterministic_algorithms`` as PyTorch's own atomic-add backwards do."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = ("x2ct::joseph_line_integrals_backward adds with atomics and is not deterministic, but "
               "torch.use_deterministic_algorithms(True) is set; render with backend='grid_sample' on the CPU")
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, stacklevel=2)
    else:
        raise RuntimeError(message)


def _launch_grid(n_rays: int, batch: int) -> tuple[int, int]:
    return triton.cdiv(n_rays, RAYS_PER_PROGRAM), batch


@torch.library.custom_op("x2ct::joseph_line_integrals", mutates_args=())
def _joseph_line_integrals(planes: Tensor, base: Tensor, slope: Tensor, length_per_plane: Tensor,
                           plane_mm: Tensor) -> Tensor:
    """``(P, B, rows, cols)`` planes (any strides) -> ``(B, R)`` line integrals of the group's rays."""
    n_planes, batch, n_rows, n_cols = planes.shape
    n_rays = base.shape[0]
    out = planes.new_empty(batch, n_rays)
    if n_rays == 0 or batch == 0:
        return out
    _joseph_kernel[_launch_grid(n_rays, batch)](
        planes, out, base.contiguous(), slope.contiguous(), length_per_plane.contiguous(), plane_mm.contiguous(),
        n_rays, n_planes, n_rows, n_cols, *planes.stride(), BLOCK=RAYS_PER_PROGRAM, BACKWARD=False)
    return out


@_joseph_line_integrals.register_fake
def _(planes: Tensor, base: Tensor, slope: Tensor, length_per_plane: Tensor, plane_mm: Tensor) -> Tensor:
    return planes.new_empty(planes.shape[1], base.shape[0])


@torch.library.custom_op("x2ct::joseph_line_integrals_backward", mutates_args=())
def _joseph_line_integrals_backward(grad_out: Tensor, base: Tensor, slope: Tensor, length_per_plane: Tensor,
                                    plane_mm: Tensor, rows: int, cols: int) -> Tensor:
    """``(B, R)`` upstream gradient -> ``(P, B, rows, cols)`` gradient of the planes (contiguous)."""
    _alert_not_deterministic()
    batch, n_rays = grad_out.shape
    n_planes = plane_mm.shape[0]
    grad_planes = grad_out.new_zeros(n_planes, batch, rows, cols)
    if n_rays == 0 or batch == 0:
        return grad_planes
    _joseph_kernel[_launch_grid(n_rays, batch)](
        grad_planes, grad_out.contiguous(), base.contiguous(), slope.contiguous(), length_per_plane.contiguous(),
        plane_mm.contiguous(), n_rays, n_planes, rows, cols, *grad_planes.stride(), BLOCK=RAYS_PER_PROGRAM,
        BACKWARD=True)
    return grad_planes


@_joseph_line_integrals_backward.register_fake
def _(grad_out: Tensor, base: Tensor, slope: Tensor, length_per_plane: Tensor, plane_mm: Tensor, rows: int,
      cols: int) -> Tensor:
    return grad_out.new_empty(plane_mm.shape[0], grad_out.shape[0], rows, cols)


def _setup_context(ctx, inputs, output) -> None:
    planes, base, slope, length_per_plane, plane_mm = inputs
    ctx.save_for_backward(base, slope, length_per_plane, plane_mm)
    ctx.plane_shape = (planes.shape[2], planes.shape[3])


def _backward(ctx, grad_out: Tensor):
    if any(ctx.needs_input_grad[1:]):
        raise RuntimeError("x2ct::joseph_line_integrals has no gradient with respect to the ray geometry; "
                           "render with backend='grid_sample' to differentiate with respect to the rays")
    base, slope, length_per_plane, plane_mm = ctx.saved_tensors
    grad_planes = _joseph_line_integrals_backward(grad_out, base, slope, length_per_plane, plane_mm,
                                                  *ctx.plane_shape)
    return grad_planes, None, None, None, None


_joseph_line_integrals.register_autograd(_backward, setup_context=_setup_context)


def line_integrals(planes: Tensor, base: Tensor, slope: Tensor, length_per_plane: Tensor,
                   plane_mm: Tensor) -> Tensor:
    """Joseph sums of one ray group through ``planes``, differentiable with respect to ``planes`` only.

    Args:
        planes: ``(P, B, rows, cols)`` the volume seen plane by plane along the group's axis (a permuted view of
            the ``(B, 1, D, H, W)`` volume is fine: the kernels read it through its strides), float32 or float64.
        base, slope: ``(R, 2)`` normalised (col, row) crossing of the plane at 0 mm and its change per mm
            (``RayGroup.base`` / ``RayGroup.slope``).
        length_per_plane: ``(R,)`` mm of ray between neighbouring planes.
        plane_mm: ``(P,)`` position of every plane along the group's axis, mm.

    Returns:
        ``(B, R)`` line integrals, in the planes' dtype.
    """
    geometry = {"base": base, "slope": slope, "length_per_plane": length_per_plane, "plane_mm": plane_mm}
    if planes.ndim != 4:
        raise ValueError(f"line_integrals: planes must be (P, B, rows, cols), got {tuple(planes.shape)}")
    n_planes, _, n_rows, n_cols = planes.shape
    n_rays = base.shape[0]
    expected = {"base": (n_rays, 2), "slope": (n_rays, 2), "length_per_plane": (n_rays,), "plane_mm": (n_planes,)}
    for name, tensor in geometry.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"line_integrals: {name} must have shape {expected[name]} for {n_rays} rays and "
                             f"{n_planes} planes, got {tuple(tensor.shape)}")
        if tensor.dtype != planes.dtype or tensor.device != planes.device:
            raise ValueError(f"line_integrals: {name} is {tensor.dtype} on {tensor.device}, the planes are "
                             f"{planes.dtype} on {planes.device}")
        if tensor.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"line_integrals: {name} requires grad, but the fused projector differentiates with "
                             "respect to the volume only; use render_drr(backend='grid_sample') (or 'auto', which "
                             "falls back to it) for gradients with respect to the geometry")
    if planes.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"line_integrals: planes must be float32 or float64, got {planes.dtype}")
    reach = sum((n - 1) * planes.stride(dim) for dim, n in ((0, n_planes), (2, n_rows), (3, n_cols)))
    if reach > _MAX_OFFSET:
        raise ValueError(f"line_integrals: a volume of {n_planes} x {n_rows} x {n_cols} voxels (strides "
                         f"{planes.stride()}) exceeds the kernels' 32-bit indexing within one batch item")
    if planes.device.type != "cuda" and not INTERPRETED:
        raise ValueError(f"line_integrals: the Triton kernels run on CUDA tensors, got {planes.device} (set "
                         "TRITON_INTERPRET=1 before importing x2ct.physics.fused_projector to run them on the CPU "
                         "through Triton's interpreter, e.g. in tests; render_drr's CPU path is backend='grid_sample')")
    return _joseph_line_integrals(planes, base, slope, length_per_plane, plane_mm)
