#!/usr/bin/env bash
# Milestone 4's study on the phantom benchmark (docs/results.md "Milestone 4 on the phantom benchmark"): the N-view model
# with 2, 4 and 8 views; learned against geometric (back-projection) lifting and with and without the
# projection-consistency loss at 2 and 8 views; one view-dropout model for 2-8 views (10 and 30 epochs); 3 seeds
# each, as five Hydra sweeps. Evaluates every best checkpoint with evaluate.py (the test split, and the real example
# CT with the same views; the 8-view and dropout models also on 2 and 4 views) and writes one comparison (mean +-
# std over the seeds, test PSNR / SSIM against the number of views). Runs are pinned to one CPU thread (as
# scripts/benchmark_milestones.sh).
# Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

name="${BENCH_NAME:-bench_views_$(date +%Y%m%d_%H%M%S)}"
sweeps=("${name}_views" "${name}_lift" "${name}_projection" "${name}_dropout" "${name}_dropout30")
dropout=("data.num_views=8" "data.view_dropout={min_views:2}")
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[0]}" data.num_views=2,4,8 \
  seed=1,2,3 "$@"
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[1]}" data.num_views=2,8 \
  lift=learned seed=1,2,3 "$@"
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[2]}" data.num_views=2,8 \
  loss.weights.projection=0 seed=1,2,3 "$@"
# one model for 2-8 views: a random subset of at least 2 of the 8 views per batch, at the schedule and 3x as long
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[3]}" "${dropout[@]}" seed=1,2,3 "$@"
"${pin[@]}" python train.py -m experiment=benchmark/milestone4 run_name="${sweeps[4]}" "${dropout[@]}" \
  trainer.max_epochs=30 trainer.checkpoint_every_epochs=30 seed=1,2,3 "$@"

for sweep in "${sweeps[@]}"; do
  for job in "outputs/multiruns/${sweep}"/[0-9]*/; do
    "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --split test --no-volumes
    "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --data example_ct_benchmark --no-volumes \
      --out "${job}evaluation/best_example_ct"
  done
done
# the models trained on 8 views (with and without dropout) scored on 2 and 4 of them
for sweep in "${sweeps[0]}" "${sweeps[3]}" "${sweeps[4]}"; do
  for job in "outputs/multiruns/${sweep}"/[0-9]*/; do
    grep -qx -- "- data.num_views=8" "${job}.hydra/overrides.yaml" || continue
    for n in 2 4; do
      "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --num-views "$n" --no-volumes --no-figures \
        --out "${job}evaluation/best_test_${n}views"
      "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --data example_ct_benchmark --num-views "$n" \
        --no-volumes --out "${job}evaluation/best_example_ct_${n}views"
    done
  done
done
python -m x2ct.compare "${sweeps[@]/#/outputs/multiruns/}" --out "outputs/multiruns/${name}_comparison" \
  --over seed --x data.num_views --sort name
echo "done: outputs/multiruns/${name}_comparison/comparison.md"
