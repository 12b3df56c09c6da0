#!/usr/bin/env bash
# The full-resolution study on the phantom benchmark (docs/results.md "Phantom benchmark", the rows marked *):
# milestone 2 with the refiners' per-voxel normalisation (patches of 16^3 with tiled inference as in the recipe; the
# same patches with whole-volume inference; whole-volume training), milestone 3 with the local PatchGANs (receptive
# field half the volume side), and milestone 3 with the conditional volume discriminator
# (adversarial.condition=backprojection), 3 seeds each.
# Two sweeps run side by side, one thread each, pinned to cores 0 and 1 (2 h 04 min on the 2-core machine while it also
# ran development work; the runs alone need less);
# every best checkpoint is then evaluated with evaluate.py on the test split and on the real example CT, and each
# study compared over seeds with x2ct.compare. Extra arguments go to every train.py call.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

stamp="${BENCH_STAMP:-$(date +%Y%m%d_%H%M%S)}"
m2_patch="bench_m2_patches_${stamp}"
m2_whole="bench_m2_whole_${stamp}"
m3_local="bench_m3_local_${stamp}"
m3_cond="bench_m3_conditional_${stamp}"

sweep() {  # core, name, train.py overrides...
  local core="$1" name="$2"
  shift 2
  taskset -c "${core}" python train.py -m run_name="${name}" seed=1,2,3 "$@"
}

evaluate() {  # core, sweep name
  local job
  for job in "outputs/multiruns/$2"/[0-9]*/; do
    taskset -c "$1" python evaluate.py "${job}checkpoints/best.pt" --split test
    taskset -c "$1" python evaluate.py "${job}checkpoints/best.pt" --data example_ct_demo \
      --out "${job}evaluation/best_example_ct"
  done
}

# the data set is prepared once, before the two sweeps start (each would otherwise prepare it)
python -c '
from x2ct.config_files import compose_config
from x2ct.data.ensure import ensure_dataset
ensure_dataset(compose_config("train", ["experiment=benchmark/baseline"]).data)
'

(
  sweep 0 "${m2_whole}" experiment=benchmark/milestone2 model.train_patch_size=null model.infer_patch_size=null "$@"
  sweep 0 "${m3_local}" experiment=benchmark/milestone3 "$@"
  evaluate 0 "${m2_whole}"
  evaluate 0 "${m3_local}"
) > "outputs/${stamp}_core0.log" 2>&1 &
core0=$!
(
  sweep 1 "${m2_patch}" experiment=benchmark/milestone2 model.infer_patch_size=16,null "$@"
  sweep 1 "${m3_cond}" experiment=benchmark/milestone3 adversarial.condition=backprojection \
    adversarial.discriminators.volume.condition_channels=1 "$@"
  evaluate 1 "${m2_patch}"
  evaluate 1 "${m3_cond}"
) > "outputs/${stamp}_core1.log" 2>&1 &
core1=$!
wait "${core0}" "${core1}"

for name in "${m2_patch}" "${m2_whole}" "${m3_local}" "${m3_cond}"; do
  python -m x2ct.compare "outputs/multiruns/${name}" --out "outputs/multiruns/${name}/comparison" --over seed \
    --sort name
done
echo "done: outputs/multiruns/{${m2_patch},${m2_whole},${m3_local},${m3_cond}}/comparison/comparison.md"
