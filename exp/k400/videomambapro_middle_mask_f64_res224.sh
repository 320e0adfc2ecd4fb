#!/usr/bin/env bash
# Kinetics-400 fine-tuning: VideoMambaPro-M, 64 frames x 224, from masked pretraining (VideoMamba's *MASK* rows).
# Recipe: VideoMamba's videomamba/video_sm/exp/k400/videomamba_middle_mask/run_f64x224.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 16 x batch_size 4 x update_freq 1 x num_sample 2 = 128 clips; effective lr 1e-4 x 128 / 256 = 5e-05.
# Fewer GPUs, same total batch: raise --update_freq by the same factor, e.g. GPUS=8 bash exp/k400/videomambapro_middle_mask_f64_res224.sh --update_freq 2.
# Start (FINETUNE): VideoMamba-M's released masked-pretraining encoder by tag (videomamba_middle.k400_mask_pt_f8_res224); to fine-tune our own
# VideoMambaPro pretraining instead: FINETUNE=$REPO_ROOT/work_dirs/videomambapro_middle_mask_pt_k400/checkpoint-latest.pth (exp/pretrain/videomambapro_middle_mask_pt_k400.sh).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-16}"   # total GPUs (VideoMamba ran 16); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_k400_list_dir}"   # folder with train.csv / val.csv / test.csv (video_path,label)
DATA_ROOT="${DATA_ROOT:-your_k400_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/videomambapro_middle_mask_f64_res224}"
FINETUNE="${FINETUNE:-videomamba_middle.k400_mask_pt_f8_res224}"   # released mask-pretrained encoder (Hub, by tag); a file; or none: from scratch

launch run_class_finetuning.py \
    --model videomambapro_middle \
    --finetune "$FINETUNE" \
    --data_set 'Kinetics-400' \
    --nb_classes 400 \
    --split ',' \
    --batch_size 4 \
    --update_freq 1 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 64 \
    --tubelet_size 1 \
    --epochs 45 \
    --warmup_epochs 5 \
    --lr 1e-4 \
    --min_lr 1e-6 \
    --warmup_lr 1e-6 \
    --drop_path 0.4 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.05 \
    --layer_decay 0.8 \
    --layer_decay_mode videomamba \
    --weight_decay_ssm \
    --init videomamba \
    --lr_scale_rule linear256 \
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
