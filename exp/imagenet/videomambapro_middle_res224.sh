#!/usr/bin/env bash
# ImageNet-1K supervised pre-training: VideoMambaPro-M image model, 224 x 224, 300 epochs, self-distilled from the S model.
# Recipe: VideoMamba's videomamba/image_sm/exp_distill/videomamba_middle/run224.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 16 x batch_size 128 = 2048; DeiT lr rule (--lr_scale_rule deit512): effective lr 5e-4 x 2048 / 512 = 0.002; min_lr / warmup_lr are absolute.
# Fewer GPUs, same total batch: raise --update_freq, e.g. GPUS=8 bash exp/imagenet/videomambapro_middle_res224.sh --update_freq 2 (the DeiT rule then scales lr by batch x GPUS / 512 only: pass --lr 1e-3 to keep it).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-16}"   # total GPUs (VideoMamba ran 16); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_imagenet_dir}"   # train/ and val/ class folders (or train.csv / val.csv lists)
DATA_ROOT="${DATA_ROOT:-}"
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/imagenet_videomambapro_middle}"
TEACHER_CKPT="${TEACHER_CKPT:-$REPO_ROOT/work_dirs/imagenet_videomambapro_small/checkpoint-best.pth}"   # our S run
set -- --teacher_model videomambapro_small_image --teacher_ckpt "$TEACHER_CKPT" --distill_weight 1.0 \
    --distill_style videomamba "$@"   # self-distillation S -> M, upstream head and loss

launch run_pretrain_imagenet.py \
    --model videomambapro_middle_image \
    --finetune none \
    --data_set IMNET \
    --nb_classes 1000 \
    --batch_size 128 \
    --update_freq 1 \
    --epochs 300 \
    --warmup_epochs 20 \
    --lr 5e-4 \
    --min_lr 5e-6 \
    --warmup_lr 5e-7 \
    --lr_scale_rule deit512 \
    --clip_grad 5.0 \
    --weight_decay 0.05 \
    --drop_path 0.5 \
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
