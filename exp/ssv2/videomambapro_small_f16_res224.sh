#!/usr/bin/env bash
# Something-Something V2 fine-tuning (174 classes, no flip): VideoMambaPro-S, 16 x 224.
# Hyper-parameters: VideoMamba's recipe (OpenGVLab/VideoMamba videomamba/video_sm/exp/ssv2/videomamba_small/run_f16x224.sh).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-your_ssv2_list_dir}"   # folder with train.csv / val.csv / test.csv
DATA_ROOT="${DATA_ROOT:-your_ssv2_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/ssv2_videomambapro_small_f16_res224}"
FINETUNE="${FINETUNE:-}"   # ImageNet-pretrained videomambapro_small_image checkpoint (exp/imagenet/); empty: from scratch
if [ -n "$FINETUNE" ]; then set -- --finetune "$FINETUNE" "$@"; fi

launch run_class_finetuning.py \
    --model videomambapro_small \
    --data_set 'SSV2' \
    --nb_classes 174 \
    --batch_size 32 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 16 \
    --tubelet_size 1 \
    --epochs 35 \
    --warmup_epochs 5 \
    --lr 4e-4 \
    --drop_path 0.35 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.05 \
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
