#!/usr/bin/env bash
# The demo (README Quickstart): installs x2ct, builds a small phantom data set, trains the baseline U-Net on the
# CPU for a few minutes, evaluates the best checkpoint on the test split, and prints where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
export WANDB_MODE="${WANDB_MODE:-offline}"
python train.py experiment=demo "$@"
