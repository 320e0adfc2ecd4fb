#!/usr/bin/env bash
# Kinetics-400 fine-tuning: VideoMambaOut-M (VideoMamba-M's network with MambaOut's gated CNN blocks instead of the SSM), 8 frames x 224.
# Recipe: exactly exp/k400/videomambapro_middle_f8_res224.sh (VideoMamba's videomamba_middle/run_f8x224.sh hyper-parameters on the
# same total batch), so "VideoMambaPro vs the same network without any SSM" is the --model flag; MambaOut has no video
# recipe of its own. Left out: the SSM-only switches (--weight_decay_ssm, --init videomamba).
# Total batch: GPUS 16 x batch_size 32 x update_freq 1 x num_sample 2 = 1024 clips; effective lr 2e-4 x 1024 / 256 = 0.0008.
# ImageNet start: there are no released isotropic MambaOut weights (timm's are hierarchical). Pre-train
# videomambaout_middle_image with run_pretrain_imagenet.py (the exp/imagenet recipe with --model videomambaout_middle_image)
# and pass its checkpoint as FINETUNE: the 7x7 depthwise kernels inflate to 3x7x7. Empty: from scratch.
# Activation checkpointing of the first 13 blocks: python scripts/profile_block.py predicts 67.5 GiB per GPU at 64 clips
# (bf16, CPU-measured saved set), 102.7 GiB without; raise --checkpoint_num if your GPU has less than 80 GB.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-16}"
DATA_PATH="${DATA_PATH:-your_k400_list_dir}"   # folder with train.csv / val.csv / test.csv (video_path,label)
DATA_ROOT="${DATA_ROOT:-your_k400_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/videomambaout_middle_f8_res224}"
FINETUNE="${FINETUNE:-}"   # a videomambaout_middle_image ImageNet checkpoint; empty: from scratch
if [ -n "$FINETUNE" ]; then set -- --finetune "$FINETUNE" "$@"; fi

launch run_class_finetuning.py \
    --model videomambaout_middle \
    --data_set 'Kinetics-400' \
    --nb_classes 400 \
    --split ',' \
    --batch_size 32 \
    --update_freq 1 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 8 \
    --tubelet_size 1 \
    --epochs 50 \
    --warmup_epochs 5 \
    --lr 2e-4 \
    --min_lr 1e-6 \
    --warmup_lr 1e-6 \
    --drop_path 0.8 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.05 \
    --layer_decay 0.75 \
    --layer_decay_mode videomamba \
    --lr_scale_rule linear256 \
    --save_ckpt_freq 100 \
    --num_workers 12 \
    --test_num_segment 4 \
    --test_num_crop 3 \
    --dist_eval \
    --test_best \
    --use_checkpoint \
    --checkpoint_num 13 \
    --bf16 \
    --data_path "$DATA_PATH" \
    --data_root "$DATA_ROOT" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tb" \
    "$@"
