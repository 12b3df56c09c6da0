#!/usr/bin/env bash
# The milestone table of the README ("Benchmark"): trains the baseline and milestones 1, 2 and 3 (and milestone 3
# with the volume discriminator only) on the phantom benchmark (conf/data/benchmark.yaml) with 3 seeds each, as one
# Hydra sweep; evaluates every best checkpoint with evaluate.py on the benchmark's test split and on the real
# example CT; writes the comparison with mean +- std over the seeds. About 50 minutes on 2 CPU cores.
# Extra arguments go to train.py (e.g. trainer.max_epochs=2 for a quick look; seed=1 for one seed).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE="${WANDB_MODE:-offline}"

name="${BENCH_NAME:-bench_milestones_$(date +%Y%m%d_%H%M%S)}"
sweep="outputs/multiruns/${name}"
python train.py -m run_name="${name}" seed=1,2,3 \
  experiment=benchmark/baseline,benchmark/milestone1,benchmark/milestone2,benchmark/milestone3,benchmark/milestone3_volume_only \
  "$@"

for job in "${sweep}"/[0-9]*/; do
  python evaluate.py "${job}checkpoints/best.pt" --split test
  python evaluate.py "${job}checkpoints/best.pt" --data example_ct_demo --out "${job}evaluation/best_example_ct"
done

python -m x2ct.compare "${sweep}" --out "${sweep}/comparison" --over seed --sort name
echo "benchmark done: ${sweep}/comparison/comparison.md"
