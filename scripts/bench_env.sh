# Sourced by the benchmark scripts (benchmark_milestones.sh, benchmark_views.sh) from the repository root: W&B
# offline, one CPU thread per run, and `pin`, the command prefix that pins a run to one core (BENCH_PIN, default
# `taskset -c 0`; BENCH_PIN="" runs unpinned), so that wall times do not depend on what else the machine does.
export WANDB_MODE="${WANDB_MODE:-offline}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
read -r -a pin <<< "${BENCH_PIN-taskset -c 0}"
