# Sourced by the benchmark scripts (benchmark_milestones.sh, benchmark_views.sh) from the repository root: W&B
# offline, one CPU thread per run, and `pin`, the command prefix that pins a run to one core (BENCH_PIN, default
# `taskset -c 0`; BENCH_PIN="" runs unpinned), so that wall times do not depend on what else the machine does.
export WANDB_MODE="${WANDB_MODE:-offline}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
read -r -a pin <<< "${BENCH_PIN-taskset -c 0}"

# Prepare a recipe's data set once, before sweeps start (each job would otherwise prepare it, and two sweeps side by
# side would race): ensure_data experiment=benchmark/milestone1
ensure_data() {  # (python -c, not a here-document: preparation spawns worker processes that re-import __main__)
  python -c '
import sys
from x2ct.config_files import compose_config
from x2ct.data.ensure import ensure_dataset
ensure_dataset(compose_config("train", sys.argv[1:]).data)
' "$@"
}

# Score every job of a sweep folder with evaluate.py: its best checkpoint on the test split and on the real example
# CT with the same two views (example_ct_demo, the milestone table's real-CT column), without the predicted volumes
# and, on the test split, without the 24 per-patient figures: evaluate_sweep outputs/multiruns/X
evaluate_sweep() {
  local job
  for job in "$1"/[0-9]*/; do
    "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --split test --no-volumes --no-figures
    "${pin[@]}" python evaluate.py "${job}checkpoints/best.pt" --data example_ct_demo --no-volumes \
      --out "${job}evaluation/best_example_ct"
  done
}

# 1 when the perceptual loss's VGG16 ImageNet file is available offline ($X2CT_VGG16_WEIGHTS or torch hub's cache)
vgg16_available() {
  python -c '
import os, sys
from pathlib import Path
from x2ct.losses.vgg import VGG16_WEIGHTS_ENV, vgg16_cache_path
env = os.environ.get(VGG16_WEIGHTS_ENV)
print(int(Path(env).is_file() if env else vgg16_cache_path().is_file()))'
}
