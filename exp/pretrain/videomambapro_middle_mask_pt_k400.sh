#!/usr/bin/env bash
# Kinetics-400 masked pretraining: VideoMambaPro-M (do VideoMambaPro's gains hold after masked pretraining?), 8 x 224, from scratch.
# Recipe: VideoMamba's videomamba/video_sm/exp/k400/videomamba_middle_mask/run_mask_pretrain.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 32 x batch_size 64 x update_freq 1 = 2048 clips (num_sample 1); effective lr 1.5e-4 x 2048 / 256 = 0.0012 (min_lr, warmup_lr alike).
# Fewer GPUs, same total batch: raise --update_freq by the same factor, e.g. GPUS=8 bash exp/pretrain/videomambapro_middle_mask_pt_k400.sh --update_freq 4.
# Objective: CLIP-teacher alignment (UMT-style): 80% of the tokens masked by the teacher's cls attention, the student's visible tokens matched to CLIP ViT-B/16's.
# Same values as VideoMamba's script with the VideoMambaPro student (the only intended difference); exp/pretrain/videomamba_middle_mask_pt_k400.sh is the baseline.
# Fine-tune the result: FINETUNE=$REPO_ROOT/work_dirs/videomambapro_middle_mask_pt_k400/checkpoint-latest.pth bash exp/k400/videomambapro_middle_mask_f8_res224.sh (or f16...).
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-32}"   # total GPUs (VideoMamba ran 32); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_k400_metadata_path/train.csv}"   # the training list itself, as upstream ("video_path,label" rows)
DATA_ROOT="${DATA_ROOT:-your_k400_path}"   # prefix joined to the relative paths in the list (--prefix = --data_root)
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/videomambapro_middle_mask_pt_k400}"

launch run_videomamba_pretraining.py \
    --model videomambapro_middle_pretrain \
    --objective clip \
    --num_sample 1 \
    --split ',' \
    --flip True \
    --mask_type attention \
    --mask_ratio 0.8 \
    --clip_teacher clip_b16 \
    --clip_loss_ratio 1 \
    --clip_loss_type l2 \
    --clip_decoder_embed_dim 576 \
    --clip_output_dim 512 \
    --clip_norm_type l2 \
    --clip_return_layer 1 \
    --clip_return_interval 1 \
    --clip_student_return_interval 1 \
    --clip_return_cls \
    --clip_return_attn \
    --tubelet_size 1 \
    --input_size 224 \
    --batch_size 64 \
    --update_freq 1 \
    --num_segments 8 \
    --num_frames 8 \
    --sampling_rate 1 \
    --epochs 801 \
    --warmup_epochs 40 \
    --lr 1.5e-4 \
    --min_lr 1e-5 \
    --warmup_lr 1e-6 \
    --drop_path 0.4 \
    --opt adamw \
    --opt_betas 0.9 0.95 \
    --weight_decay 0.05 \
    --weight_decay_ssm \
    --init videomamba \
    --lr_scale_rule linear256 \
    --save_ckpt_freq 1000 \
    --num_workers 12 \
    --bf16 \
    --data_path "$DATA_PATH" \
    --prefix "$DATA_ROOT" \
    --output_dir "$OUTPUT_DIR" \
    --log_dir "$OUTPUT_DIR/tb" \
    "$@"
