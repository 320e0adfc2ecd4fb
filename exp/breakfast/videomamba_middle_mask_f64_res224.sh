#!/usr/bin/env bash
# Breakfast fine-tuning: VideoMamba-M, 64 frames x 224, from VideoMamba-M's K400 masked-pretraining fine-tuned model (VideoMamba's *MASK* rows).
# Recipe: VideoMamba's videomamba/video_sm/exp/breakfast/videomamba_middle_mask/run_f64x224.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch and its sampling (--data_set Kinetics_sparse: whole video, TSN);
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 8 x batch_size 4 x update_freq 1 x num_sample 2 = 64 clips; effective lr 2e-4 x 64 / 256 = 5e-05.
# Fewer GPUs, same total batch: raise --update_freq by the same factor, e.g. GPUS=4 bash exp/breakfast/videomamba_middle_mask_f64_res224.sh --update_freq 2.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-8}"   # total GPUs (VideoMamba ran 8); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_breakfast_list_dir}"   # folder with train.csv / val.csv / test.csv (video_path,label)
DATA_ROOT="${DATA_ROOT:-your_breakfast_video_root}"   # prefix joined to the relative paths in the lists
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/breakfast_videomamba_middle_mask_f64_res224}"
FINETUNE="${FINETUNE:-videomamba_middle.k400_mask_ft_f64_res224}"   # released K400 fine-tuned weights (Hub, by tag); a file; or none: from scratch

launch run_class_finetuning.py \
    --model videomamba_middle \
    --finetune "$FINETUNE" \
    --data_set 'Kinetics_sparse' \
    --nb_classes 10 \
    --split ',' \
    --batch_size 4 \
    --update_freq 1 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 64 \
    --orig_t_size 64 \
    --tubelet_size 1 \
    --epochs 45 \
    --warmup_epochs 5 \
    --lr 2e-4 \
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
