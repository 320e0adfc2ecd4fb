#!/usr/bin/env bash
# The CPU demo as a recipe: videomambapro_demo (d=96, depth 6) fine-tuned from scratch on the synthetic
# motion-direction videos (4 classes; one frame is at chance), then the 2 x 1 multi-view test.
# ~10 minutes on a 2-core CPU. Same flags as `python run_demo.py` (tests/test_demo.py checks they agree).
#   bash exp/demo/videomambapro_demo.sh [more run_class_finetuning.py flags, e.g. --epochs 4 --seed 1]
# The dataset is written to $DATA_PATH first when it is not there.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-$REPO_ROOT/data/synthetic}"
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/output/demo}"
MODEL="${MODEL:-videomambapro_demo}"
SEED="${SEED:-0}"
LAUNCHER="${LAUNCHER:-python}"   # one CPU process; LAUNCHER=torchrun GPUS=N for more

if [ -z "${DRY_RUN:-}" ] && [ ! -f "$DATA_PATH/train.csv" ]; then
    "${PYTHON:-python}" "$REPO_ROOT/scripts/make_synthetic_dataset.py" --out "$DATA_PATH" --seed 0 \
        --train_per_class 150 --val_per_class 10 --test_per_class 25 --frames 16 --size 64
fi

launch run_class_finetuning.py \
    --model "$MODEL" \
    --data_set video \
    --nb_classes 4 \
    --num_frames 8 \
    --tubelet_size 2 \
    --input_size 64 \
    --short_side_size 64 \
    --test_num_segment 2 \
    --test_num_crop 1 \
    --batch_size 16 \
    --epochs 16 \
    --lr 1.6e-2 \
    --min_lr 1e-4 \
    --warmup_epochs 1 \
    --weight_decay 0.05 \
    --drop_path 0 \
    --mixup 0 \
    --cutmix 0 \
    --smoothing 0 \
    --reprob 0 \
    --aa none \
    --device cpu \
    --num_workers 1 \
    --print_freq 10 \
    --no_auto_resume \
    --no_pin_mem \
    --seed "$SEED" \
    --data_path "$DATA_PATH" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tensorboard" \
    "$@"
