#!/usr/bin/env bash
# The component ablation on the phantom benchmark (docs/results.md "Ablations"): milestone 1's benchmark recipe
# (experiments/benchmark/milestone1.yaml) as designed and with each of its parts switched off in turn (leave-one-out,
# conf/ablation/: swin, cross_view, dense_blocks, attention_gates, deep_supervision, pyramid), 3 seeds each, as one
# Hydra sweep over `ablation`; and the baseline U-Net for reference (a second sweep). Every best checkpoint is
# evaluated with evaluate.py on the test split and the real example CT, then all runs are compared over seeds with
# x2ct.compare. W&B (offline) puts both sweeps' runs in one group, the study's name.
# One CPU thread, pinned by BENCH_PIN (default core 0); beside scripts/benchmark_loss.sh, give one of them
# BENCH_PIN="taskset -c 1". ABLATIONS picks the rows (default all; the loss study's full-recipe and
# deep-supervision-off runs are the same runs as `none` and `deep_supervision`), SEEDS the seeds (default 1,2,3),
# BASELINE=0 skips the baseline sweep, BENCH_GROUP names the W&B group (default the study's name). Extra arguments
# go to train.py.
#   bash scripts/benchmark_components.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_env.sh

name="${BENCH_NAME:-bench_components_$(date +%Y%m%d_%H%M%S)}"
ablations="${ABLATIONS:-none,swin,cross_view,dense_blocks,attention_gates,deep_supervision,pyramid}"

group="${BENCH_GROUP:-${name}}"
sweeps=("outputs/multiruns/${name}")

ensure_data experiment=benchmark/milestone1
# seed first: all parts of seed 1, then seed 2, then 3 (an interrupted study still has whole paired seeds)
"${pin[@]}" python train.py -m experiment=benchmark/milestone1 run_name="${name}" logger.group="${group}" \
  seed="${SEEDS:-1,2,3}" "ablation=${ablations}" "$@"
if [[ "${BASELINE:-1}" == 1 ]]; then
  "${pin[@]}" python train.py -m experiment=benchmark/baseline run_name="${name}_baseline" logger.group="${group}" \
    seed="${SEEDS:-1,2,3}" "$@"
  sweeps+=("outputs/multiruns/${name}_baseline")
fi
for sweep in "${sweeps[@]}"; do
  evaluate_sweep "${sweep}"
done
paired=()  # per-seed differences from the design as is, where this part of the study ran it
[[ ",${ablations}," == *",none,"* ]] && paired=(--paired-to ablation=none)
python -m x2ct.compare "${sweeps[@]}" --out "outputs/multiruns/${name}/comparison" --over seed --sort name \
  "${paired[@]}"
echo "done: outputs/multiruns/${name}/comparison/comparison.md"
