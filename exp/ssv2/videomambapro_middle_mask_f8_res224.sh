#!/usr/bin/env bash
# Something-Something V2 fine-tuning (174 classes, no flip, raw frames): VideoMambaPro-M, 8 x 224, from masked pretraining (VideoMamba's *MASK* rows).
# Recipe: VideoMamba's videomamba/video_sm/exp/ssv2/videomamba_middle_mask/run_f8x224.sh (OpenGVLab/VideoMamba), same hyper-parameters on the same total batch;
# exp/RECIPES.md lists every recipe against upstream (tests/test_recipes_upstream.py fails on drift).
# Total batch: GPUS 16 x batch_size 32 x update_freq 1 x num_sample 2 = 1024 clips; effective lr 1e-4 x 1024 / 256 = 0.0004.
# Fewer GPUs, same total batch: raise --update_freq by the same factor, e.g. GPUS=8 bash exp/ssv2/videomambapro_middle_mask_f8_res224.sh --update_freq 2.
# Start (FINETUNE): VideoMamba-M's released masked-pretraining encoder by tag (videomamba_middle.ssv2_mask_pt_f8_res224); to fine-tune our own
# VideoMambaPro pretraining instead: FINETUNE=$REPO_ROOT/work_dirs/videomambapro_middle_mask_pt_ssv2/checkpoint-latest.pth (exp/pretrain/videomambapro_middle_mask_pt_ssv2.sh).
# Upstream's script passes --finetune twice: first your_model_path/videomamba_m16_ssv2_mask_pt_f8_res224.pth, then ${MODEL_PATH}, which wins
# (and, unset, leaves --finetune without a value: the command fails); the intended start is the SSV2 mask-pretrained file, used here.
set -euo pipefail
source "$(dirname "$0")/../launch.sh"

GPUS="${GPUS:-16}"   # total GPUs (VideoMamba ran 16); several nodes: NNODES=N NODE_RANK=i MASTER_ADDR=host
DATA_PATH="${DATA_PATH:-your_ssv2_list_dir}"   # train.csv / val.csv / test.csv: "frame_folder total_frames label" rows
DATA_ROOT="${DATA_ROOT:-your_ssv2_rawframes_root}"   # prefix joined to the frame folders
SSV2_FORMAT="${SSV2_FORMAT:-rawframes}"   # rawframes (the convention) or videos ("video_path label" lists)
if [ "$SSV2_FORMAT" = videos ]; then set -- --use_decord "$@"; else set -- --no_use_decord "$@"; fi
OUTPUT_DIR="${OUTPUT_DIR:-$REPO_ROOT/work_dirs/ssv2_videomambapro_middle_mask_f8_res224}"
FINETUNE="${FINETUNE:-videomamba_middle.ssv2_mask_pt_f8_res224}"   # released mask-pretrained encoder (Hub, by tag); a file; or none: from scratch

launch run_class_finetuning.py \
    --model videomambapro_middle \
    --finetune "$FINETUNE" \
    --data_set 'SSV2' \
    --nb_classes 174 \
    --batch_size 32 \
    --update_freq 1 \
    --num_sample 2 \
    --input_size 224 \
    --short_side_size 224 \
    --num_frames 8 \
    --tubelet_size 1 \
    --epochs 30 \
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
