#!/usr/bin/env bash
# The masked-pretraining CPU demo: videomambapro_demo pretrained with MaskFeat (HOG targets of masked tubes) on the
# synthetic motion videos, then fine-tuned with 10% of the training labels from that checkpoint and from scratch;
# prints one table (pretraining minutes and loss, val and multi-view test top-1 of both starts). About 10 minutes on
# a 2-core CPU. The recipes are PRETRAIN_FLAGS in run_pretrain_demo.py and DEMO_FLAGS in run_demo.py.
#   bash exp/demo/pretrain.sh [run_pretrain_demo.py flags, e.g. --label_fraction 0.2 --pretrain_epochs 6]
set -euo pipefail
source "$(dirname "$0")/../launch.sh"
export LAUNCHER=python   # one process (the demo runs its three trainings one after the other)

launch run_pretrain_demo.py \
    --data_path "${DATA_PATH:-$REPO_ROOT/data/synthetic}" \
    --output_dir "${OUTPUT_DIR:-$REPO_ROOT/output/pretrain_demo}" \
    --seed "${SEED:-0}" \
    "$@"
