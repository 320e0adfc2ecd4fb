#!/usr/bin/env bash
# Kinetics-400: VideoMambaPro-S 64 frames, 224 -> 384 resolution fine-tuning.
# Recipe: VideoMamba's videomamba/video_sm/exp/k400/videomamba_small/run_f64x224to384.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 32 x batch_size 2 x update_freq 2 x num_sample 2 = 256 clips; effective lr 5e-6 x 256 / 256 = 5e-06.
# Fewer GPUs, same total batch: raise --update_freq by the same factor, e.g. GPUS=16 bash exp/k400/videomambapro_small_f64_res384.sh --update_freq 4.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-32}"   # total GPUs (VideoMamba ran 32); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_k400_list_dir}"   # folder with train.csv / val.csv / test.csv (video_path,label)
DATA_ROOT="${DATA_ROOT:-your_k400_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/videomambapro_small_f64_res384}"
FINETUNE="${FINETUNE:-$REPO_ROOT/work_dirs/videomambapro_small_f64_res224/checkpoint-best.pth}"   # our 64x224 run (upstream starts from its own 64x224 model)

launch run_class_finetuning.py \
    --model videomambapro_small \
    --finetune "$FINETUNE" \
    --data_set 'Kinetics-400' \
    --nb_classes 400 \
    --split ',' \
    --batch_size 2 \
    --update_freq 2 \
    --num_sample 2 \
    --input_size 384 \
    --short_side_size 384 \
    --num_frames 64 \
    --tubelet_size 1 \
    --orig_t_size 64 \
    --epochs 6 \
    --warmup_epochs 1 \
    --lr 5e-6 \
    --min_lr 1e-6 \
    --warmup_lr 1e-6 \
    --drop_path 0.35 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 1e-8 \
    --layer_decay 0.75 \
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
