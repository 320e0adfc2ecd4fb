#!/usr/bin/env bash
# Kinetics-400 fine-tuning: ViViT-B/16x2 factorised encoder, 32 frames x 224, spatial transformer from ImageNet-21k ViT-B/16.
# Recipe: the paper's (Arnab et al. 2021; google-research/scenic projects/vivit/configs/kinetics400/vivit_base_factorised_encoder.py):
# 32 frames at stride 2, 2 x 16 x 16 tubelets (central-frame inflation), 12 spatial + 4 temporal layers, SGD momentum 0.9,
# lr 0.05 for a total batch of 64 with cosine decay and 2.5 warmup epochs, 30 epochs, no weight decay, gradient clipping 1,
# no dropout / stochastic depth / label smoothing / mixup, test 4 temporal x 3 spatial views.
# Differences: 3 warmup epochs (whole epochs here), and the shared train augmentation (the paper: scale jitter 0.9-1.33 and
# colour augmentation) with RandAugment off.
# Total batch: GPUS 8 x batch_size 8 = 64 clips (the paper's); effective lr 0.2 x 64 / 256 = 0.05.
# ImageNet weights: FINETUNE=a .pth of timm's ViT-B/16 in21k (see exp/k400/timesformer_base_f8_res224.sh for the one-liner).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-8}"
DATA_PATH="${DATA_PATH:-your_k400_list_dir}"   # folder with train.csv / val.csv / test.csv (video_path,label)
DATA_ROOT="${DATA_ROOT:-your_k400_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/vivit_base_f32_res224}"
FINETUNE="${FINETUNE:-}"   # ViT-B/16 ImageNet-21k weights (.pth); empty: from scratch (not the paper's setting)
if [ -n "$FINETUNE" ]; then set -- --finetune "$FINETUNE" "$@"; fi

launch run_class_finetuning.py \
    --model vivit_base \
    --data_set 'Kinetics-400' \
    --nb_classes 400 \
    --split ',' \
    --batch_size 8 \
    --update_freq 1 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 32 \
    --sampling_rate 2 \
    --tubelet_size 2 \
    --epochs 30 \
    --warmup_epochs 3 \
    --lr 0.2 \
    --min_lr 0 \
    --warmup_lr 0 \
    --opt sgd \
    --momentum 0.9 \
    --weight_decay 0 \
    --clip_grad 1.0 \
    --drop_path 0 \
    --aa none \
    --reprob 0 \
    --mixup 0 \
    --cutmix 0 \
    --smoothing 0 \
    --save_ckpt_freq 5 \
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
