#!/usr/bin/env bash
# Does the phantom ranking transfer to real anatomy? (docs/results.md "Phantom ranking against the real CT")
# Six settings on one phantom data set, 3 seeds each: the baseline, milestone 1, the patch-trained milestone-2
# cascade, milestone 4 at 2 and at 8 views, and one milestone-4 model for 2-8 views (view dropout); the two
# settings whose phantom and real-CT rankings disagreed most on `benchmark` are the cascade and view dropout.
# Every best checkpoint is evaluated with evaluate.py on the test split and on the real example CT on the same grid
# (scanned voxels are the real-CT headline); x2ct.compare then gives mean +- std over the seeds and Spearman's rho
# between the phantom test PSNR and the real-CT PSNR over the six settings.
#   DATA=benchmark_v2 REAL=example_ct_32 bash scripts/benchmark_transfer.sh   (the defaults)
#   DATA=benchmark SEEDS=1 bash scripts/benchmark_transfer.sh                 (the first benchmark, seed 1)
# Two lanes run side by side, one thread each, pinned to cores 0 and 1 (about 75 min on the 2-core machine at 32^3
# when nothing else runs). Extra arguments go to every train.py call.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

data="${DATA:-benchmark_v2}"
real="${REAL:-example_ct_32}"
seeds="${SEEDS:-1,2,3}"
name="${BENCH_NAME:-bench_transfer_${data}_$(date +%Y%m%d_%H%M%S)}"
sweeps=("${name}_a" "${name}_m4_2" "${name}_m4_8" "${name}_dropout")

ensure_data "data=${data}"
ensure_data "data=${real}"

sweep() {  # core, sweep name, train.py overrides...
  local core="$1" sweep_name="$2"
  shift 2
  taskset -c "${core}" python train.py -m run_name="${sweep_name}" "data=${data}" seed="${seeds}" "$@"
}

score() {  # core, sweep name: the test split (no figures) and the real CT (no volumes)
  local job
  for job in "outputs/multiruns/$2"/[0-9]*/; do
    taskset -c "$1" python evaluate.py "${job}checkpoints/best.pt" --split test --no-volumes --no-figures
    taskset -c "$1" python evaluate.py "${job}checkpoints/best.pt" --data "${real}" --no-volumes \
      --out "${job}evaluation/best_example_ct"
  done
}

mkdir -p outputs
(
  sweep 0 "${sweeps[0]}" experiment=benchmark/baseline,benchmark/milestone1,benchmark/milestone2 "$@"
  sweep 0 "${sweeps[1]}" experiment=benchmark/milestone4 data.num_views=2 "$@"
  score 0 "${sweeps[0]}"
  score 0 "${sweeps[1]}"
) > "outputs/${name}_core0.log" 2>&1 &
(
  sweep 1 "${sweeps[2]}" experiment=benchmark/milestone4 data.num_views=8 "$@"
  sweep 1 "${sweeps[3]}" experiment=benchmark/milestone4 data.num_views=8 'data.view_dropout={min_views:2}' "$@"
  score 1 "${sweeps[2]}"
  score 1 "${sweeps[3]}"
) > "outputs/${name}_core1.log" 2>&1 &
wait

python -m x2ct.compare "${sweeps[@]/#/outputs/multiruns/}" \
  --over seed --merge-sweeps --sort name --out "outputs/multiruns/${name}_comparison" \
  --rank-correlation 'best_test scanned PSNR' 'best_example_ct scanned PSNR' \
  --rank-correlation 'best_test PSNR' 'best_example_ct PSNR'
echo "done: outputs/multiruns/${name}_comparison/comparison.md"
