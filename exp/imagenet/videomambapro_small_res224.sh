#!/usr/bin/env bash
# ImageNet-1K supervised pre-training: VideoMambaPro-S image model, 224 x 224, 300 epochs.
# Recipe: VideoMamba's videomamba/image_sm/exp/videomamba_small/run224.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 8 x batch_size 512 = 4096; DeiT lr rule (--lr_scale_rule deit512): effective lr 5e-4 x 4096 / 512 = 0.004; min_lr / warmup_lr are absolute.
# Fewer GPUs, same total batch: raise --update_freq, e.g. GPUS=4 bash exp/imagenet/videomambapro_small_res224.sh --update_freq 2 (the DeiT rule then scales lr by batch x GPUS / 512 only: pass --lr 1e-3 to keep it).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-8}"   # total GPUs (VideoMamba ran 8); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_imagenet_dir}"   # train/ and val/ class folders (or train.csv / val.csv lists)
DATA_ROOT="${DATA_ROOT:-}"
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/imagenet_videomambapro_small}"

launch run_pretrain_imagenet.py \
    --model videomambapro_small_image \
    --finetune none \
    --data_set IMNET \
    --nb_classes 1000 \
    --batch_size 512 \
    --update_freq 1 \
    --epochs 300 \
    --warmup_epochs 5 \
    --lr 5e-4 \
    --min_lr 1e-5 \
    --warmup_lr 1e-6 \
    --lr_scale_rule deit512 \
    --weight_decay 0.05 \
    --drop_path 0.15 \
    --input_size 224 \
    --repeated_aug \
    --no_model_ema \
    --init videomamba \
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
