#!/usr/bin/env bash
# The CPU demo as a recipe: videomambapro_demo (d=96, depth 6) fine-tuned from scratch on the synthetic
# motion-direction videos (4 classes; a single frame is at chance), then the 2 x 1 multi-view test.
# About 6 minutes on a 2-core CPU. The recipe itself (the run_class_finetuning.py flags) is DEMO_FLAGS in
# run_demo.py, which also writes the dataset to $DATA_PATH when it is missing and prints the full command.
#   bash exp/demo/videomambapro_demo.sh [run_demo.py flags, e.g. --epochs 8 --seed 1] [-- run_class_finetuning flags]
#   MODEL=videomamba_demo SEED=1 OUTPUT_DIR=output/demo_vm bash exp/demo/videomambapro_demo.sh
#   GPUS=2 bash exp/demo/videomambapro_demo.sh      # torchrun, 2 processes (rank 0 writes the data)
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-1}"   # processes; 1 runs plain python (no launcher), more run torchrun
if [ "$GPUS" = 1 ]; then export LAUNCHER="${LAUNCHER:-python}"; fi

launch run_demo.py \
    --data_path "${DATA_PATH:-$REPO_ROOT/data/synthetic}" \
    --output_dir "${OUTPUT_DIR:-$REPO_ROOT/output/demo}" \
    --model "${MODEL:-videomambapro_demo}" \
    --seed "${SEED:-0}" \
    "$@"
