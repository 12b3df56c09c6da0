#!/usr/bin/env bash
# The milestone table of the README (and docs/results.md "Phantom benchmark"): trains the baseline and milestones
# 1, 2 and 3 (and milestone 3 with the volume discriminator only) on the phantom benchmark
# (conf/data/benchmark.yaml) with 3 seeds each, as one Hydra sweep; evaluates every best checkpoint with
# evaluate.py on the benchmark's test split and on the real example CT; writes the comparison with mean +- std over
# the seeds. About 80 minutes on one CPU core.
# Every run uses one CPU thread pinned to one core (OMP_NUM_THREADS=1, taskset -c 0), as for the README's numbers,
# so that wall times do not depend on what else the machine does; BENCH_PIN="" and OMP_NUM_THREADS=N change that.
# Extra arguments go to train.py (e.g. trainer.max_epochs=2 for a quick look; seed=1 for one seed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

name="${BENCH_NAME:-bench_milestones_$(date +%Y%m%d_%H%M%S)}"
sweep="outputs/multiruns/${name}"
"${pin[@]}" python train.py -m run_name="${name}" seed=1,2,3 \
  experiment=benchmark/baseline,benchmark/milestone1,benchmark/milestone2,benchmark/milestone3,benchmark/milestone3_volume_only \
  "$@"

for job in "${sweep}"/[0-9]*/; do
  "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --split test
  "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --data example_ct_demo --out "${job}evaluation/best_example_ct"
done

python -m x2ct.compare "${sweep}" --out "${sweep}/comparison" --over seed --sort name
echo "benchmark done: ${sweep}/comparison/comparison.md"
