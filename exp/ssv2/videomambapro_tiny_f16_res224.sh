#!/usr/bin/env bash
# Something-Something V2 fine-tuning (174 classes, no flip, raw frames): VideoMambaPro-Ti, 16 x 224, from ImageNet-1K.
# Recipe: VideoMamba's videomamba/video_sm/exp/ssv2/videomamba_tiny/run_f16x224.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 8 x batch_size 64 x update_freq 1 x num_sample 2 = 1024 clips; effective lr 4e-4 x 1024 / 256 = 0.0016.
# Fewer GPUs, same total batch: raise --update_freq by the same factor, e.g. GPUS=4 bash exp/ssv2/videomambapro_tiny_f16_res224.sh --update_freq 2.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-8}"   # total GPUs (VideoMamba ran 8); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_ssv2_list_dir}"   # train.csv / val.csv / test.csv: "frame_folder total_frames label" rows
DATA_ROOT="${DATA_ROOT:-your_ssv2_rawframes_root}"   # prefix joined to the frame folders
SSV2_FORMAT="${SSV2_FORMAT:-rawframes}"   # rawframes (the convention) or videos ("video_path label" lists)
if [ "$SSV2_FORMAT" = videos ]; then set -- --use_decord "$@"; else set -- --no_use_decord "$@"; fi
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/ssv2_videomambapro_tiny_f16_res224}"
FINETUNE="${FINETUNE:-videomamba_tiny.in1k}"   # released ImageNet-1K weights (Hub, by tag); a file; or none: from scratch

launch run_class_finetuning.py \
    --model videomambapro_tiny \
    --finetune "$FINETUNE" \
    --data_set 'SSV2' \
    --nb_classes 174 \
    --batch_size 64 \
    --update_freq 1 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 16 \
    --tubelet_size 1 \
    --epochs 35 \
    --warmup_epochs 5 \
    --lr 4e-4 \
    --min_lr 1e-6 \
    --warmup_lr 1e-6 \
    --drop_path 0.1 \
    --aa rand-m5-n2-mstd0.25-inc1 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.1 \
    --layer_decay 0.75 \
    --layer_decay_mode videomamba \
    --weight_decay_ssm \
    --init videomamba \
    --lr_scale_rule linear256 \
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
