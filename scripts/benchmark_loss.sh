#!/usr/bin/env bash
# The loss ablation on the phantom benchmark (docs/results.md "Ablations"): milestone 1's benchmark recipe
# (experiments/benchmark/milestone1.yaml) with the six-part loss as designed (L1 1.0, SSIM 0.3, perceptual 0.2,
# edge 0.2, deep supervision 0.2, frequency 0.3), each component's weight at 0 in turn, and L1 alone, 3 seeds each,
# as ONE Hydra sweep over loss.weights (a dict per job, merged into the recipe's weights; loss.weights.deep_supervision
# =0 also switches the model's deep-supervision heads off). The perceptual term needs the VGG16 ImageNet file: where
# it is absent (offline; the benchmark's default) the recipe runs without it and its row is not run (it would equal
# the full recipe). Every best checkpoint is evaluated with evaluate.py on the test split and the real example CT,
# then compared over seeds with x2ct.compare. W&B (offline) puts the sweep's runs in one group, the sweep's name.
# One CPU thread, pinned by BENCH_PIN (default core 0): run beside scripts/benchmark_components.sh with
# BENCH_PIN="taskset -c 1" for that one. SEEDS (default 1,2,3) and LOSS_ABLATIONS (default every row, e.g.
# '{},{ssim:0}') run part of the study, BENCH_GROUP names the W&B group (default the sweep's name) so that parts
# run as several sweeps compare as one. Extra arguments go to every train.py call.
#   bash scripts/benchmark_loss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

name="${BENCH_NAME:-bench_loss_$(date +%Y%m%d_%H%M%S)}"
recipe=experiment=benchmark/milestone1
if [[ "$(vgg16_available)" == 1 ]]; then
  perceptual=("loss.weights.perceptual=0.2")  # the design's weight; its leave-one-out row below
  ablations='{},{l1:0},{ssim:0},{perceptual:0},{edge:0},{deep_supervision:0},{frequency:0},{ssim:0,perceptual:0,edge:0,deep_supervision:0,frequency:0}'
else
  echo "VGG16 ImageNet file absent: the perceptual term stays 0 in every run (docs/results.md 'Ablations')"
  perceptual=()
  ablations='{},{l1:0},{ssim:0},{edge:0},{deep_supervision:0},{frequency:0},{ssim:0,edge:0,deep_supervision:0,frequency:0}'
fi

ablations="${LOSS_ABLATIONS:-${ablations}}"

ensure_data "${recipe}"
# seed first: all settings of seed 1, then seed 2, then 3 (an interrupted study still has whole paired seeds)
"${pin[@]}" python train.py -m "${recipe}" run_name="${name}" logger.group="${BENCH_GROUP:-${name}}" \
  seed="${SEEDS:-1,2,3}" "loss.weights=${ablations}" "${perceptual[@]}" "$@"
evaluate_sweep "outputs/multiruns/${name}"
paired=()  # per-seed differences from the full loss, where this part of the study ran it
[[ "${ablations}" == "{}" || "${ablations}" == "{},"* ]] && paired=(--paired-to "loss.weights={}")
python -m x2ct.compare "outputs/multiruns/${name}" --out "outputs/multiruns/${name}/comparison" --over seed \
  --sort name "${paired[@]}"
echo "done: outputs/multiruns/${name}/comparison/comparison.md"
