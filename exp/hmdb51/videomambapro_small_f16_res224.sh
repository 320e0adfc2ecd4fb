#!/usr/bin/env bash
# HMDB51 (51 classes) fine-tuning from the Kinetics-400 model: VideoMambaPro-S, 16 x 224.
# Hyper-parameters: our choice (VideoMamba ships no UCF101/HMDB51 recipe): a short schedule from K400.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-your_hmdb51_list_dir}"   # folder with train.csv / val.csv / test.csv
DATA_ROOT="${DATA_ROOT:-your_hmdb51_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/hmdb51_videomambapro_small_f16_res224}"
FINETUNE="${FINETUNE:-$REPO_ROOT/work_dirs/videomambapro_small_f16_res224/checkpoint-best.pth}"   # the K400 16x224 model; its 400-class head is dropped
set -- --finetune "$FINETUNE" "$@"

launch run_class_finetuning.py \
    --model videomambapro_small \
    --data_set 'HMDB51' \
    --nb_classes 51 \
    --batch_size 16 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 16 \
    --tubelet_size 1 \
    --epochs 30 \
    --warmup_epochs 3 \
    --lr 1e-4 \
    --drop_path 0.35 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.05 \
    --save_ckpt_freq 100 \
    --num_workers 12 \
    --test_num_segment 5 \
    --test_num_crop 3 \
    --dist_eval \
    --test_best \
    --bf16 \
    --data_path "$DATA_PATH" \
    --data_root "$DATA_ROOT" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tb" \
    "$@"
