#!/usr/bin/env bash
# Something-Something V2: VideoMambaPro-M 16 frames, 224 -> 288 resolution fine-tuning.
# Hyper-parameters: VideoMamba's recipe (OpenGVLab/VideoMamba videomamba/video_sm/exp/ssv2/videomamba_middle/run_f16x224to288.sh).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-your_ssv2_list_dir}"   # folder with train.csv / val.csv / test.csv
DATA_ROOT="${DATA_ROOT:-your_ssv2_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/ssv2_videomambapro_middle_f16_res288}"
FINETUNE="${FINETUNE:-$REPO_ROOT/work_dirs/ssv2_videomambapro_middle_f16_res224/checkpoint-best.pth}"   # the SSV2 16x224 model
set -- --finetune "$FINETUNE" "$@"

launch run_class_finetuning.py \
    --model videomambapro_middle \
    --data_set 'SSV2' \
    --nb_classes 174 \
    --batch_size 6 \
    --num_sample 2 \
    --input_size 288 \
    --short_side_size 288 \
    --num_frames 16 \
    --tubelet_size 1 \
    --orig_t_size 16 \
    --epochs 10 \
    --warmup_epochs 2 \
    --lr 5e-6 \
    --drop_path 0.8 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 1e-8 \
    --save_ckpt_freq 100 \
    --num_workers 12 \
    --test_num_segment 2 \
    --test_num_crop 3 \
    --dist_eval \
    --test_best \
    --bf16 \
    --data_path "$DATA_PATH" \
    --data_root "$DATA_ROOT" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tb" \
    "$@"
