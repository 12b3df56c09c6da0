"""Where the time of one training step goes: ``torch.profiler`` over the trainer's own ``TrainStep``, by kernel class.

Run from the repository root::

    python benchmarks/profile_step.py                                # milestone 1, batch 2 and 8, CUDA if present
    python benchmarks/profile_step.py --device cpu --tiny --batch-sizes 2,4      # the harness in seconds
    python benchmarks/profile_step.py --override trainer.memory_format=channels_last_3d --override model.norm=...

The step is built as ``benchmarks/gpu_check.py`` builds it (``training_spec`` and ``build_training``: the engine's
builders, the recipe's precision, loss, clipping, optimizer, schedule and EMA, random views and targets on the
device). Per batch size: ``--warmup-steps`` steps, ``--timed-steps`` steps timed without the profiler (their
median is the step's unprofiled wall time), then one step under ``torch.profiler`` inside a ``x2ct.train_step``
range that ends after ``torch.cuda.synchronize``.

- Device time: on CUDA the sum of the step's kernel (and memcpy/memset) times; on the CPU the sum of the operators'
  self CPU time (user ranges such as the optimizer's ``Optimizer.step#...`` excluded: their self time is Python).
- Busy fraction: device time / the profiled step's wall time; on CUDA also over the unprofiled step's (the
  profiler slows the host, not the kernels; on the CPU it slows the operators themselves, so there is no such
  second figure). Two CUDA streams running at once would count twice; the step runs on one.
- Classes (``CLASSES``, first rule that applies): operations inside a loss term's forward (a profiler range that
  module hooks open around each term) or inside the backward node of such an operation (matched by autograd
  sequence number) are ``loss terms``, with the time of each term apart; the optimizer's ranges
  (``Optimizer.step#``, ``Optimizer.zero_grad#``) are ``optimizer``; a kernel whose name is a layout conversion
  or memory copy (cuDNN's ``nchwToNhwc``, ``Memcpy``), or an operator that only moves data (``aten::copy_``,
  ``aten::contiguous``, ...), is ``copy/layout`` wherever it runs; everything else takes the class of the
  outermost operator around it that a pattern names (a kernel launched by ``aten::cudnn_convolution`` inside
  ``aten::conv3d`` is ``convolution``; ``NativeBatchNormBackward0`` is ``norm``), or ``other``. The autograd
  engine's range around each backward node and ``CopySlices`` hold work of any class (a gradient accumulated by
  ``aten::add_``, an in-place activation's backward) and give none. Names are matched as snake_case words
  (``NativeBatchNormBackward0`` -> ``native_batch_norm_backward0``). The loss terms' ranges come from module hooks,
  which compiled code does not run: profile the uncompiled step (the default) to see them.

Writes ``profile_step_<gpu>[_tiny].{json,md}`` under ``--out`` (``<gpu>``: a slug of the GPU's name, ``cpu`` on the
CPU), with the provenance record of ``x2ct.provenance`` (commit, machine, threads, ``X2CT_SHARED_MACHINE``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO_ROOT))

from gpu_check import (  # noqa: E402  (benchmarks/gpu_check.py)
    TRAINING_PARTS,
    TrainingSetup,
    batch_list,
    build_training,
    random_micro_batches,
    slug,
    training_spec,
)

from x2ct import provenance  # noqa: E402
from x2ct.atomic_io import write_json_atomic, write_text_atomic  # noqa: E402

STEP_RANGE = "x2ct.train_step"
LOSS_RANGE = "x2ct.loss"  # the criterion's own range; a term's is "x2ct.loss/<term>"
OPTIMIZER_RANGES = ("Optimizer.step#", "Optimizer.zero_grad#")  # torch.optim's own profiler ranges
BACKWARD_NODE = "autograd::engine::evaluate_function: "
LOSS_CLASS, OPTIMIZER_CLASS, COPY_CLASS, OTHER_CLASS = "loss terms", "optimizer", "copy/layout", "other"


def _words(alternatives: str) -> re.Pattern:
    """A pattern that matches one of ``alternatives`` as whole snake_case words (``_`` and ``:`` separate)."""
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")


COPY_OPERATORS = _words(
    r"copy_?|to|_to_copy|clone|contiguous|permute|transpose|t|reshape|view|_unsafe_view|expand|expand_as|cat|stack|"
    r"\w*pad\w*|roll|index\w*|gather|scatter\w*|slice\w*|select\w*|split\w*|chunk|narrow|unfold|fill_?|zero_?|"
    r"zeros\w*|flip|repeat\w*|as_strided\w*|unbind|squeeze|unsqueeze|flatten|unflatten|movedim|detach|alias|"
    r"lift_fresh|resolve_conj|resolve_neg|pixel_shuffle|pixel_unshuffle")
# ranges that hold work of any class: the autograd engine's range around a node (gradient accumulation included)
# and CopySlices (an in-place operation on a view): what runs inside them takes its class from inside
CONTAINERS = re.compile(r"^autograd::engine::evaluate_function: |CopySlices")
LAYOUT_KERNELS = re.compile(r"n[cdhw]+_to_n[cdhw]+|memcpy|memset|direct_copy|copy_kernel|transpose")
# (class, pattern over snake_case operator names, what it holds), checked in this order on each name of the chain
# from the outermost operator inwards; loss terms, optimizer ranges and copies come first (see the docstring)
CLASSES = (
    (OPTIMIZER_CLASS, _words(r"foreach\w*|_fused_adamw?\w*|fused_adamw?\w*"),
     "the optimizer's ranges; foreach kernels (gradient clipping, EMA) and the fused AdamW kernel"),
    ("attention", _words(r"scaled_dot_product\w*|\w*attention\w*|fmha\w*|flash\w*"),
     "scaled dot-product attention, forward and backward (Swin windows, cross-view attention)"),
    ("convolution", _words(r"conv(?!ert)\w*|\w*convolution\w*|slow_conv\w*"),
     "2D/3D convolutions and transposed convolutions, forward and backward, with what runs inside them"),
    ("matmul", _words(r"mm|bmm|addmm|baddbmm|addbmm|matmul|linear|addmv|mv|dot|einsum"),
     "matrix products: linear layers, attention projections"),
    ("norm", _words(r"\w*(?:batch|instance|group|layer|rms)_norm\w*"),
     "instance, group, batch and layer norms, forward and backward"),
    ("resampling", _words(r"\w*pool\w*|upsample\w*|interpolate|grid_sampler\w*|affine_grid\w*"),
     "pooling, upsampling, grid sampling (the geometric lift)"),
    (COPY_CLASS, COPY_OPERATORS, "copies, layout conversions and views: moving data without arithmetic"),
    ("elementwise", _words(
        r"add|sub|rsub|mul|div|neg|exp\w*|log\w*|pow|sqrt|rsqrt|abs|clamp\w*|where|\w*relu\w*|gelu\w*|silu\w*|"
        r"sigmoid\w*|tanh\w*|elu\w*|threshold\w*|softplus\w*|\w*softmax\w*|lerp|addcmul|addcdiv|sum|mean|amax|amin|"
        r"max|min|maximum|minimum|norm|linalg_vector_norm|var\w*|std\w*|sign|sgn|isfinite|isnan|isinf|eq|ne|gt|lt|"
        r"ge|le|logical_\w*|bitwise_\w*|\w*dropout\w*|bernoulli\w*|round|floor|ceil|reciprocal|square|erf\w*|cos|"
        r"sin|prod|cumsum|any|all|argmax|argmin|nan_to_num|masked_fill\w*|fmod|remainder"),
     "pointwise arithmetic, activations and reductions"),
)
CLASS_NAMES = (LOSS_CLASS, *(name for name, _, _ in CLASSES), OTHER_CLASS)
TOP_NAMES = 5  # the heaviest operators (CPU) or kernels (CUDA) kept per class


def snake_case(name: str) -> str:
    """``NativeBatchNormBackward0`` -> ``native_batch_norm_backward0``; ``aten::conv3d`` unchanged."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def classify(chain: Sequence[str], kernel: str | None = None, scope: str | None = None) -> str:
    """The class of an operator's self time (CPU) or of a kernel (CUDA).

    ``chain``: the operator's name and its enclosing operators' names, innermost (the operator itself, or the one
    that launched ``kernel``) first, profiler ranges left out; ``scope``: ``loss terms`` or ``optimizer`` when the
    operator runs inside such a range (``event_scope``), which decides alone."""
    if scope is not None:
        return scope
    if kernel is not None and LAYOUT_KERNELS.search(snake_case(kernel)):
        return COPY_CLASS
    if not chain:
        return OTHER_CLASS
    if COPY_OPERATORS.search(snake_case(chain[0])):
        return COPY_CLASS
    enclosing = [chain[0], *(name for name in chain[1:] if not CONTAINERS.search(name))]
    for name in reversed(enclosing):
        words = snake_case(name)
        for class_name, pattern, _ in CLASSES:
            if pattern.search(words):
                return class_name
    return OTHER_CLASS


# --- profiler ranges around the loss terms -------------------------------------------------------------------------
@contextlib.contextmanager
def loss_ranges(criterion) -> Iterator[None]:
    """Profiler ranges ``x2ct.loss`` around the criterion's forward and ``x2ct.loss/<term>`` around each term's,
    opened and closed by module hooks (the loss's code stays as it is)."""
    import torch

    opened: list = []

    def enter(label: str):
        def hook(module, args) -> None:
            opened.append(torch.autograd.profiler.record_function(label).__enter__())

        return hook

    def leave(module, args, output) -> None:
        opened.pop().__exit__(None, None, None)

    modules = [(criterion, LOSS_RANGE),
               *((term, f"{LOSS_RANGE}/{name}") for name, term in criterion.components.items())]
    hooks = [hook for module, label in modules
             for hook in (module.register_forward_pre_hook(enter(label)), module.register_forward_hook(leave))]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


# --- reading the profile -------------------------------------------------------------------------------------------
def _ancestors(event) -> Iterator:
    while event is not None:
        yield event
        event = event.cpu_parent


def _range_scope(event) -> tuple[str, str | None] | None:
    """(class, loss term) from the innermost loss or optimizer range around ``event``, else None."""
    for outer in _ancestors(event):
        if outer.name.startswith(LOSS_RANGE):
            term = outer.name.partition("/")[2]
            return LOSS_CLASS, term or "combining the terms"
        if outer.name.startswith(OPTIMIZER_RANGES):
            return OPTIMIZER_CLASS, None
    return None


def event_scopes(ops: list) -> dict[int, tuple[str, str | None]]:
    """``id(event) -> (class, loss term)`` for the operators inside a loss term's forward range, or inside the
    backward node (matched by autograd sequence number) of an operator in such a range, or inside the optimizer's
    ranges; operators in none are left out."""
    forward_terms: dict[int, str] = {}
    scopes: dict[int, tuple[str, str | None]] = {}
    for event in ops:
        scope = _range_scope(event)
        if scope is None:
            continue
        scopes[id(event)] = scope
        if scope[0] == LOSS_CLASS and event.sequence_nr >= 0:
            forward_terms[event.sequence_nr] = scope[1]
    for event in ops:
        if id(event) in scopes:
            continue
        node = next((outer for outer in _ancestors(event) if outer.name.startswith(BACKWARD_NODE)), None)
        if node is not None and node.sequence_nr in forward_terms:
            scopes[id(event)] = (LOSS_CLASS, forward_terms[node.sequence_nr])
    return scopes


def _operator_chain(event) -> list[str]:
    return [outer.name for outer in _ancestors(event) if not outer.is_user_annotation]


def step_operators(events) -> list:
    """The operators among the profile's events: CPU events that are neither ranges nor the CUDA runtime's calls
    (``cudaLaunchKernel``, ...: these carry the correlation id of the kernel they launch)."""
    from torch.autograd import DeviceType

    return [e for e in events
            if e.device_type == DeviceType.CPU and not e.is_user_annotation and e.linked_correlation_id == 0]


def classified_work(events, on_cuda: bool) -> list[tuple[str, str, str | None, float]]:
    """``(name, class, loss term or None, microseconds)`` for each piece of the step's device time: each kernel
    (CUDA: its name, the time it ran) or each operator (CPU: its name, its self time). On CUDA, device work that
    no operator launched (none is expected) is one more piece, in ``other``."""
    from torch.autograd import DeviceType

    ops = step_operators(events)
    scopes = event_scopes(ops)
    work = []
    for event in ops:
        scope_class, term = scopes.get(id(event), (None, None))
        chain = _operator_chain(event)
        if on_cuda:
            work += [(kernel.name[:120], classify(chain, kernel.name, scope_class), term, kernel.duration)
                     for kernel in event.kernels]
        else:
            work.append((event.name, classify(chain, None, scope_class), term, event.self_cpu_time_total))
    if on_cuda:
        device = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        unlinked = sum(e.time_range.elapsed_us() for e in device) - sum(us for *_, us in work)
        if unlinked > 0.5:
            work.append(("(device work not linked to an operator)", OTHER_CLASS, None, unlinked))
    return work


def time_by_class(events, on_cuda: bool) -> dict:
    """The profiled step's device time (ms) by class, with the loss terms apart and the heaviest names per class;
    the step's wall time from its ``x2ct.train_step`` range; the operator and kernel counts."""
    from torch.autograd import DeviceType

    step = next(e for e in events if e.device_type == DeviceType.CPU and e.name == STEP_RANGE)
    classes = {name: 0.0 for name in CLASS_NAMES}
    terms: dict[str, float] = {}
    names: dict[str, dict[str, float]] = {name: {} for name in CLASS_NAMES}
    work = classified_work(events, on_cuda)
    for name, class_name, term, us in work:
        classes[class_name] += us
        names[class_name][name] = names[class_name].get(name, 0.0) + us
        if term is not None:
            terms[term] = terms.get(term, 0.0) + us
    total, wall = sum(classes.values()), step.time_range.elapsed_us()
    ops = step_operators(events)
    top_level = [e for e in ops if not any(not outer.is_user_annotation for outer in _ancestors(e.cpu_parent))]
    kernels = sum(1 for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation)
    return {
        "step_wall_ms": wall / 1e3, "device_time_ms": total / 1e3, "busy_fraction": total / wall,
        "operator_calls_top_level": len(top_level), "operator_calls": len(ops),
        **({"kernels": kernels} if on_cuda else {}),
        "classes_ms": {name: us / 1e3 for name, us in classes.items() if us > 0},
        "loss_terms_ms": {term: us / 1e3 for term, us in sorted(terms.items(), key=lambda kv: -kv[1])},
        "top": {name: [[n, us / 1e3] for n, us in sorted(found.items(), key=lambda kv: -kv[1])[:TOP_NAMES]]
                for name, found in names.items() if found},
    }


# --- one batch size ------------------------------------------------------------------------------------------------
def profiled_step(setup: TrainingSetup):
    """The events of one step under ``torch.profiler``, inside a ``x2ct.train_step`` range that ends after the
    device has finished, with the loss terms' ranges open (``loss_ranges``)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])]
    with loss_ranges(setup.criterion), profile(activities=activities) as prof:
        with record_function(STEP_RANGE):
            setup.run_step()
            setup.sync()
    return prof.events()


def profile_batch(setup: TrainingSetup, warmup_steps: int, timed_steps: int) -> dict:
    """Warm up, time ``timed_steps`` steps without the profiler, then profile one step."""
    on_cuda = setup.device.type == "cuda"
    for _ in range(warmup_steps):
        setup.run_step()
    setup.sync()
    times = []
    for _ in range(timed_steps):
        start = time.perf_counter()
        setup.run_step()
        setup.sync()
        times.append(time.perf_counter() - start)
    result = time_by_class(profiled_step(setup), on_cuda)
    result.update(status="ok", unprofiled_step_ms=1e3 * statistics.median(times))
    if on_cuda:  # kernel times do not grow under the profiler (the host's operators do)
        result["busy_fraction_unprofiled"] = result["device_time_ms"] / result["unprofiled_step_ms"]
    return result


def report_stem(device_name: str, tiny: bool) -> str:
    """``profile_step_<gpu>`` (``cpu`` on the CPU), ``_tiny`` appended for tiny sizes."""
    return f"profile_step_{slug(device_name)}" + ("_tiny" if tiny else "")


def markdown(report: dict) -> str:
    runs = [run for run in report["runs"] if run["status"] == "ok"]
    lines = [f"# Training-step profile: {report['device_name']} ({report['created']})", "",
             f"- command: `{report['command']}`",
             f"- {provenance.describe(report)}",
             f"- `{report['experiment']}` ({'tiny sizes' if report['tiny'] else 'real sizes'}): "
             f"{report['volume_size']}^3, {report['views']} x {report['view_size']}^2 views, {report['precision']}; "
             f"the trainer's `TrainStep` on random data; one step profiled after {report['warmup_steps']} warm-up "
             f"and {report['timed_steps']} unprofiled timed steps",
             "- device time: " + ("CUDA kernel time" if report["device"] == "cuda" else "CPU operators' self time")
             + "; busy = device time / the profiled step's wall time"
             + (" (in brackets: over the unprofiled step's)" if report["device"] == "cuda" else ""), ""]
    for run in report["runs"]:
        if run["status"] != "ok":
            lines.append(f"- batch {run['batch']}: {run['status']}: {run.get('note', '')}")
    if runs:
        lines += ["| class | " + " | ".join(f"batch {run['batch']} ms (share)" for run in runs) + " |",
                  "|---|" + "---:|" * len(runs)]
        for name in CLASS_NAMES:
            if not any(name in run["classes_ms"] for run in runs):
                continue
            cells = [(run["classes_ms"].get(name, 0.0), run["device_time_ms"]) for run in runs]
            lines.append(f"| {name} | " + " | ".join(f"{ms:.2f} ({100 * ms / total:.1f}%)" for ms, total in cells)
                         + " |")
        rows = [("device time ms", lambda r: f"{r['device_time_ms']:.2f}"),
                ("step wall ms, profiled (unprofiled)",
                 lambda r: f"{r['step_wall_ms']:.2f} ({r['unprofiled_step_ms']:.2f})"),
                ("busy fraction" + (" (over the unprofiled step)" if report["device"] == "cuda" else ""),
                 lambda r: f"{100 * r['busy_fraction']:.1f}%" + (
                     f" ({100 * r['busy_fraction_unprofiled']:.1f}%)" if "busy_fraction_unprofiled" in r else "")),
                ("top-level operator calls", lambda r: str(r["operator_calls_top_level"]))]
        if any("kernels" in run for run in runs):
            rows.append(("kernels", lambda r: str(r.get("kernels", "-"))))
        lines += [f"| {label} | " + " | ".join(cell(run) for run in runs) + " |" for label, cell in rows]
        lines += ["", "Loss terms, ms: " + "; ".join(
            f"batch {run['batch']}: " + ", ".join(f"{term} {ms:.2f}" for term, ms in run["loss_terms_ms"].items())
            for run in runs)]
        first = runs[0]
        lines += ["", f"Heaviest {'kernels' if report['device'] == 'cuda' else 'operators'} per class at batch "
                      f"{first['batch']}, ms:", ""]
        lines += [f"- {name}: " + "; ".join(f"`{n}` {ms:.2f}" for n, ms in found)
                  for name, found in first["top"].items()]
    lines += ["", "Classes (first rule that applies; see the module docstring of benchmarks/profile_step.py):", "",
              "| class | holds |", "|---|---|",
              f"| {LOSS_CLASS} | the loss terms' forward and their backward nodes |"]
    lines += [f"| {name} | {what} |" for name, _, what in CLASSES]
    lines.append(f"| {OTHER_CLASS} | what no pattern names (allocation, random numbers, FFTs outside the loss) |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when available, else CPU")
    parser.add_argument("--experiment", choices=[p for p, r in TRAINING_PARTS.items() if not r["compile"]],
                        default="milestone1", help="the recipe, as gpu_check names its training parts")
    parser.add_argument("--batch-sizes", type=batch_list, default=(2, 8))
    parser.add_argument("--tiny", action="store_true", help="gpu_check's tiny sizes (16^3, 32^2 views, width 4)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default 3; tiny 1")
    parser.add_argument("--timed-steps", type=int, default=None, help="unprofiled steps timed (default 3; tiny 1)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a train.py override (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("profile_step: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    warmup = args.warmup_steps if args.warmup_steps is not None else (1 if args.tiny else 3)
    timed = args.timed_steps if args.timed_steps is not None else (1 if args.tiny else 3)
    spec = training_spec(args.experiment, device, args.tiny, overrides=args.override)
    setup = build_training(spec)
    runs = []
    for batch in args.batch_sizes:
        print(f"[profile_step] batch {batch} ...", flush=True)
        setup.micro_batches = random_micro_batches(spec, batch, setup.device)
        try:
            run = {"batch": batch, **profile_batch(setup, warmup, timed)}
        except torch.OutOfMemoryError as err:  # a result: the next batch size still runs
            run = {"batch": batch, "status": "oom", "note": str(err).strip().splitlines()[0][:200]}
        setup.micro_batches = []
        if device == "cuda":
            torch.cuda.empty_cache()
        runs.append(run)
    report = {"created": dt.datetime.now().isoformat(timespec="seconds"),
              "command": shlex.join(["benchmarks/profile_step.py", *(argv if argv is not None else sys.argv[1:])]),
              **provenance.record(), "device": device, "device_name": device_name,
              "experiment": args.experiment, "tiny": args.tiny, "overrides": list(args.override),
              "volume_size": spec["volume_size"], "views": spec["views"], "view_size": spec["view_size"],
              "precision": setup.precision.name, "warmup_steps": warmup, "timed_steps": timed, "runs": runs,
              "classes": [{"class": LOSS_CLASS, "holds": "the loss terms' forward and their backward nodes"},
                          *({"class": name, "holds": what, "pattern": pattern.pattern}
                            for name, pattern, what in CLASSES),
                          {"class": OTHER_CLASS, "holds": "what no pattern names"}]}
    stem = args.out / report_stem(device_name, args.tiny)
    text = markdown(report)
    write_json_atomic(stem.with_suffix(".json"), report)
    write_text_atomic(stem.with_suffix(".md"), text)
    print(text)
    print(f"wrote {stem}.json and .md")
    return 0 if all(run["status"] in ("ok", "oom") for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
