#!/usr/bin/env bash
# Milestone 4's study on the phantom benchmark (README "Phantom benchmark"): the N-view model with 2, 4 and 8
# views; learned against geometric (back-projection) lifting and with and without the projection-consistency loss
# at 2 and 8 views; 3 seeds each, as three Hydra sweeps. Evaluates every best checkpoint with evaluate.py (the test
# split, and the real example CT with the same views) and writes one comparison (mean +- std over the seeds, test
# PSNR / SSIM against the number of views). Runs are pinned to one CPU thread (as scripts/benchmark_milestones.sh).
# Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

name="${BENCH_NAME:-bench_views_$(date +%Y%m%d_%H%M%S)}"
sweeps=("${name}_views" "${name}_lift" "${name}_projection")
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[0]}" data.num_views=2,4,8 \
  seed=1,2,3 "$@"
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[1]}" data.num_views=2,8 \
  lift=learned seed=1,2,3 "$@"
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[2]}" data.num_views=2,8 \
  loss.weights.projection=0 seed=1,2,3 "$@"

for sweep in "${sweeps[@]}"; do
  for job in "outputs/multiruns/${sweep}"/[0-9]*/; do
    "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --split test --no-volumes
    "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --data example_ct_benchmark --no-volumes \
      --out "${job}evaluation/best_example_ct"
  done
done
python -m x2ct.compare "${sweeps[@]/#/outputs/multiruns/}" --out "outputs/multiruns/${name}_comparison" \
  --over seed --x data.num_views --sort name
echo "done: outputs/multiruns/${name}_comparison/comparison.md"
