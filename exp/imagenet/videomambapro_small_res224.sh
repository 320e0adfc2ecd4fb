#!/usr/bin/env bash
# ImageNet-1K supervised pre-training: VideoMambaPro-S image model, 224 x 224, 300 epochs.
# Hyper-parameters: after VideoMamba's image recipes; drop path and batch for S/M are our estimates.
# Our lr rule is lr x total batch / 256 (VideoMamba's image main.py divides by 512): --lr 2.5e-4 = their 5e-4.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

DATA_PATH="${DATA_PATH:-your_imagenet_dir}"   # train/ and val/ class folders (or train.csv / val.csv lists)
DATA_ROOT="${DATA_ROOT:-}"
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/imagenet_videomambapro_small}"

launch run_pretrain_imagenet.py \
    --model videomambapro_small_image \
    --data_set IMNET \
    --nb_classes 1000 \
    --batch_size 512 \
    --epochs 300 \
    --warmup_epochs 5 \
    --lr 2.5e-4 \
    --min_lr 1e-5 \
    --clip_grad 5.0 \
    --weight_decay 0.05 \
    --drop_path 0.15 \
    --input_size 224 \
    --no_repeated_aug \
    --mixup 0.8 \
    --cutmix 1.0 \
    --smoothing 0.1 \
    --reprob 0.25 \
    --aa rand-m9-mstd0.5-inc1 \
    --num_workers 16 \
    --dist_eval \
    --bf16 \
    --data_path "$DATA_PATH" \
    --data_root "$DATA_ROOT" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tb" \
    "$@"
