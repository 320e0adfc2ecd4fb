#!/usr/bin/env bash
# The VideoMambaPro ablation on the CPU demo: the 2 x 2 grid of the two Pro changes on the same model
# (videomambapro_demo), same data, same seed, then one comparison table (scripts/ablation_table.py).
#                         --residual_start none   --residual_start both
#   --no_bwd_mask         videomamba              residual_only
#   --bwd_mask            mask_only               videomambapro
# About 4 x the demo (~23 minutes on a 2-core CPU). Extra arguments go to every run_demo.py call, e.g.
#   bash exp/demo/ablation_grid.sh --epochs 8
# (run_demo.py flags only: a `--` section would replace the grid's own flags).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

PY="${PYTHON:-python}"
DATA_PATH="${DATA_PATH:-$REPO_ROOT/data/synthetic}"
OUT="${OUTPUT_DIR:-$REPO_ROOT/output/ablation}"
SEED="${SEED:-0}"
MODEL="${MODEL:-videomambapro_demo}"

RUNS=()
for cfg in "videomamba --no_bwd_mask none" "mask_only --bwd_mask none" \
           "residual_only --no_bwd_mask both" "videomambapro --bwd_mask both"; do
    read -r name mask residual <<< "$cfg"
    "$PY" "$REPO_ROOT/run_demo.py" --data_path "$DATA_PATH" --output_dir "$OUT/$name" --model "$MODEL" \
        --seed "$SEED" "$@" -- "$mask" --residual_start "$residual"
    RUNS+=("$OUT/$name")
done

"$PY" "$REPO_ROOT/scripts/ablation_table.py" "${RUNS[@]}" --csv "$OUT/ablation_table.csv"
