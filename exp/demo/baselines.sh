#!/usr/bin/env bash
# The baselines on the CPU demo: every model at demo size (d = 96) fine-tuned from scratch with the demo's recipe
# (run_demo.py: the synthetic motion videos, 8 frames x 64 px, tubelet 2, 16 epochs, the same seed), then one table
# (scripts/baseline_table.py): params, GFLOPs, best val top-1, multi-view test top-1, minutes; chance is 25%.
#   videomambapro_demo   VideoMambaPro, the reference (6 blocks)
#   timesformer_demo     TimeSformer, divided space-time attention (6 blocks, 3 heads)
#   vivit_demo           ViViT factorised encoder (4 spatial + 2 temporal blocks, 3 heads)
#   videomambaout_demo   VideoMamba's layout with MambaOut's gated CNN instead of the SSM (6 blocks)
# About 20 minutes on a 2-core CPU. Choose the models with MODELS="a b ..."; extra arguments go to every
# run_demo.py call, e.g.  bash exp/demo/baselines.sh --epochs 8
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

PY="${PYTHON:-python}"
DATA_PATH="${DATA_PATH:-$REPO_ROOT/data/synthetic}"
OUT="${OUTPUT_DIR:-$REPO_ROOT/output/baselines}"
SEED="${SEED:-0}"
MODELS="${MODELS:-videomambapro_demo timesformer_demo vivit_demo videomambaout_demo}"

RUNS=()
for model in $MODELS; do
    "$PY" "$REPO_ROOT/run_demo.py" --data_path "$DATA_PATH" --output_dir "$OUT/$model" --model "$model" \
        --seed "$SEED" "$@"
    RUNS+=("$OUT/$model")
done

"$PY" "$REPO_ROOT/scripts/baseline_table.py" "${RUNS[@]}" --chance 25 --csv "$OUT/baselines_table.csv"
