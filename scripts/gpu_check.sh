#!/usr/bin/env bash
# The first run on a GPU machine: the gpu tests, milestone 1 at its real size (samples/s, peak memory, MFU; eager
# and compiled), the cascade at 128^3 and the c2rv recipe at 256^3, the DRR benchmark against DiffDRR and nanodrr,
# and with 2+ GPUs a 2-rank NCCL run; at most 8 minutes. Writes benchmarks/results/gpu_check_<gpu>.{json,md}.
#   bash scripts/gpu_check.sh                         # on the GPU machine
#   bash scripts/gpu_check.sh --device cpu --tiny     # the CPU rehearsal (tests/test_gpu_check.py)
# Arguments go to benchmarks/gpu_check.py (--help lists them). Exit status 1 if a part failed or timed out.
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true PYTHONUNBUFFERED=1
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
