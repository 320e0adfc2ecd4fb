#!/usr/bin/env bash
# Kinetics-400: VideoMambaPro-M 64 frames, 224 -> 384 resolution fine-tuning.
# Hyper-parameters: VideoMamba's recipe (OpenGVLab/VideoMamba videomamba/video_sm/exp/k400/videomamba_middle/run_f64x224to384.sh).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-your_k400_list_dir}"   # folder with train.csv / val.csv / test.csv
DATA_ROOT="${DATA_ROOT:-your_k400_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/videomambapro_middle_f64_res384}"
FINETUNE="${FINETUNE:-$REPO_ROOT/work_dirs/videomambapro_middle_f64_res224/checkpoint-best.pth}"   # the 64x224 model
set -- --finetune "$FINETUNE" "$@"

launch run_class_finetuning.py \
    --model videomambapro_middle \
    --data_set 'Kinetics-400' \
    --nb_classes 400 \
    --split ',' \
    --batch_size 2 \
    --num_sample 2 \
    --input_size 384 \
    --short_side_size 384 \
    --num_frames 64 \
    --tubelet_size 1 \
    --orig_t_size 64 \
    --epochs 10 \
    --warmup_epochs 2 \
    --lr 5e-6 \
    --drop_path 0.8 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 1e-8 \
    --save_ckpt_freq 100 \
    --num_workers 12 \
    --test_num_segment 4 \
    --test_num_crop 3 \
    --dist_eval \
    --test_best \
    --bf16 \
    --data_path "$DATA_PATH" \
    --data_root "$DATA_ROOT" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tb" \
    "$@"
