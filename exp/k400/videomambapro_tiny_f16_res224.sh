#!/usr/bin/env bash
# Kinetics-400 fine-tuning: VideoMambaPro-Ti, 16 frames x 224.
# Hyper-parameters: VideoMamba's recipe (OpenGVLab/VideoMamba videomamba/video_sm/exp/k400/videomamba_tiny/run_f16x224.sh).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-your_k400_list_dir}"   # folder with train.csv / val.csv / test.csv
DATA_ROOT="${DATA_ROOT:-your_k400_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/videomambapro_tiny_f16_res224}"
FINETUNE="${FINETUNE:-}"   # ImageNet-pretrained videomambapro_tiny_image checkpoint (exp/imagenet/); empty: from scratch
if [ -n "$FINETUNE" ]; then set -- --finetune "$FINETUNE" "$@"; fi

launch run_class_finetuning.py \
    --model videomambapro_tiny \
    --data_set 'Kinetics-400' \
    --nb_classes 400 \
    --split ',' \
    --batch_size 32 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 16 \
    --tubelet_size 1 \
    --epochs 70 \
    --warmup_epochs 5 \
    --lr 2e-4 \
    --drop_path 0.1 \
    --aa rand-m5-n2-mstd0.25-inc1 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.1 \
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
