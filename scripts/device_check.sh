#!/usr/bin/env bash
# Prove the GPU path on ONE GPU in about 8 minutes (the stage timeouts add up to 620 s), then print one summary table (check, status, seconds,
# key figure); exit status 1 if any check failed.
#
#   1. gpu tests     python -m pytest -m gpu -q (full-size Triton kernels vs the reference, fp32 / bf16)
#   2. bench         scripts/bench_scan.py layer + bench_model.py backends at the Ti and S shapes, 8 frames: fused
#                    Triton scan vs two mamba-ssm calls (when installed), fraction of the bandwidth floor,
#                    VideoMambaPro / VideoMamba step
#   2b. step64       one 64-frame training step, Pro-Ti vs TimeSformer-Ti (224, batch 8, bf16): clips/s and peak
#                    MiB side by side, with --mixer_recompute inner (the default) and all (the leanest)
#   2c. split        torch.profiler split of one Pro-Ti / TimeSformer-Ti block step at 64 frames (224, batch 8,
#                    bf16): ms and share of scan, conv, norm, GEMMs, copies/elementwise (profile_block.py)
#   2d. pretrain     masked-pretraining step vs fine-tuning step, Pro-Ti 8 frames (224, batch 8, bf16, 80% masked):
#                    the CLIP-aligned student alone, with its CLIP ViT-B/16 teacher (random weights), MaskFeat
#   3. data          synthetic videos at 224 px, 8 frames (scripts/make_synthetic_dataset.py), sized so one
#                    epoch is STEPS optimizer steps at batch BATCH
#   4. train native  exp/k400/videomambapro_tiny_f8_res224.sh (torchrun, GPUS=1, bf16) for one epoch
#   5. train ds      the same with --enable_deepspeed --zero_stage 2
#   6. eval          --eval of the native run's checkpoint (multi-view test, merged top-1)
#
#   bash scripts/device_check.sh               # on the GPU machine, from anywhere
#   bash scripts/device_check.sh --cpu-dry     # no GPU: every command and flag checked (collect-only tests,
#                                              # flag parsing, tiny dataset, recipe through DRY_RUN=1)
#
# Environment: WORK (scratch folder, default a new temp dir), STEPS (30), BATCH (16 videos per step; the
# recipe's --num_sample 2 makes it 32 clips), RECIPE, PYTHON, TIMEOUT_<STAGE> in seconds (TESTS 80, BENCH 120,
# STEP64 35 twice, SPLIT 60, PRETRAIN 40, DATA 40, NATIVE 80, DS 90, EVAL 40: 620 s at most;
# the Triton JIT cache is shared).
set -uo pipefail

MODE=gpu
case "${1:-}" in
    "") ;;
    --cpu-dry) MODE=dry ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--cpu-dry]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
RECIPE="${RECIPE:-$ROOT/exp/k400/videomambapro_tiny_f8_res224.sh}"
STEPS="${STEPS:-30}"
BATCH="${BATCH:-16}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")}"
mkdir -p "$WORK"
export GPUS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
# the recipes start from VideoMamba's released ImageNet weights on the Hub by default; the GPU machine has no
# network and the check needs no pretrained weights: from scratch unless FINETUNE names a local file
export FINETUNE="${FINETUNE:-none}" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

declare -a ROWS=()
FAILED=0

# run NAME TIMEOUT KEY_FN CMD...: run CMD under `timeout`, log to $WORK/NAME.log, record a summary row with the
# key figure KEY_FN prints (a shell function reading the log / outputs; "-" for none).
run() {
    local name="$1" limit="$2" keyfn="$3"
    shift 3
    local log="$WORK/${name// /_}.log" t0 rc status key
    echo "== $name (timeout ${limit}s): $*" | tee "$log"
    echo "   log: $log"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        status=ok
        [ "$MODE" = dry ] && status="ok (dry)"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="TIMEOUT"
        FAILED=1
    else
        status="FAIL($rc)"
        FAILED=1
    fi
    key=$("$keyfn" "$log" 2>/dev/null | tail -n 1)
    ROWS+=("$(printf '%-14s %-10s %7ss  %s' "$name" "$status" "$(( $(date +%s) - t0 ))" "${key:--}")")
    [ "$rc" -eq 0 ] || tail -n 15 "$log"
    return 0
}

none() { echo "-"; }

key_step64() {  # "videomambapro_tiny C clips/s P MiB vs timesformer_tiny ..." from bench_model's table rows
    awk '$1 == 64 && $2 ~ /^(videomambapro_tiny|timesformer_tiny)$/ { printf "%s %s clips/s %s MiB; ", $2, $6, $9 }' "$1"
}

key_split() {  # "videomambapro_tiny X ms (scan S%, GEMM G%); timesformer_tiny ..." from profile_block's tables
    awk '/^one block step of/ { m = $5; t = $0; sub(/.*: /, "", t); sub(/ ms.*/, "", t); printf "%s%s %s ms", sep, m, t; sep = "; " }
         /^\| (scan|GEMM) / { printf " %s %s", $2, $6 }' "$1"; echo
}

key_pretrain() {  # "student x0.31 time x0.28 memory; +teacher x0.52; maskfeat x1.10" vs the fine-tuning step
    awk '$2 == "clip" && $3 == "student" { printf "student x%s time x%s mem; ", $7, $10 }
         $2 == "clip" && $3 == "step" { printf "+teacher x%s; ", $7 } $2 == "maskfeat" { printf "maskfeat x%s", $6 }' "$1"
    echo
}

key_tests() { grep -E '[0-9]+ (passed|failed|errors?|tests? collected)' "$1" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//'; }

key_bench() { "$PYTHON" scripts/bench_scan.py layer --key_figures "$WORK/bench_scan.json" "$WORK/bench_model.json"; }

key_data() { grep -Eo 'train [0-9]+ videos' "$1" | tail -n 1; }

key_train() {  # last training loss / steps from the run's log.txt (JSON lines), else the log's last summary
    local out="$WORK/${2:-native}"
    if [ -f "$out/log.txt" ]; then
        "$PYTHON" -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; r=[x for x in rows if 'train_loss' in x][-1]; print('train loss %.3f, val top-1 %s' % (r['train_loss'], r.get('val_acc1', '-')))" "$out/log.txt"
    else
        grep -Eo 'training: .*' "$1" | tail -n 1
    fi
}
key_native() { key_train "$1" native; }
key_ds() { key_train "$1" ds; }
key_eval() { grep -hEo '"Final top-1": *[0-9.]+' "$WORK/eval/log.txt" "$1" 2>/dev/null | tail -n 1 | sed 's/"Final top-1": */top-1 /'; }

# overrides appended to the recipe (its extra arguments win): the synthetic set, one epoch of STEPS steps
DATA="$WORK/data"
TRAIN_FLAGS=(--data_set video --nb_classes 4 --split ' ' --data_path "$DATA" --data_root "$DATA"
             --batch_size "$BATCH" --epochs 1 --warmup_epochs 0 --num_workers 8 --save_ckpt_freq 1
             --no_auto_resume --no_test_at_end --print_freq 5)
EVAL_FLAGS=(--data_set video --nb_classes 4 --split ' ' --data_path "$DATA" --data_root "$DATA"
            --batch_size "$BATCH" --num_workers 8 --test_num_segment 2 --test_num_crop 3 --eval
            --resume "$WORK/native/checkpoint-best.pth")
PER_CLASS=$(( (STEPS * BATCH + 3) / 4 ))  # 4 classes; drop_last: STEPS full batches per epoch

if [ "$MODE" = gpu ]; then
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "device_check.sh: no CUDA GPU visible (use --cpu-dry to check the script without one)" >&2
        exit 2
    fi
    run "gpu tests" "${TIMEOUT_TESTS:-80}" key_tests "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider
    run bench "${TIMEOUT_BENCH:-120}" key_bench bash -c '"$1" scripts/bench_scan.py layer --sizes Ti S --frames 8 \
        --backends triton cuda --json "$2/bench_scan.json" && "$1" scripts/bench_model.py backends --sizes Ti S \
        --frames 8 --backends triton cuda --json "$2/bench_model.json"' bench "$PYTHON" "$WORK"
    # 64-frame training step, Pro-Ti vs TimeSformer-Ti (224, batch 8, bf16): clips/s and peak GiB, for each mixer
    # recompute mode (inner is the training default; all keeps only each mixer's input: decides the default)
    for mode in inner all; do
        run "step64 $mode" "${TIMEOUT_STEP64:-35}" key_step64 "$PYTHON" scripts/bench_model.py --models \
            videomambapro_tiny timesformer_tiny --frames 64 --img_size 224 --batch_size 8 --bf16 --iters 2 \
            --mixer_recompute "$mode"
    done
    run split "${TIMEOUT_SPLIT:-60}" key_split "$PYTHON" scripts/profile_block.py --model videomambapro_tiny \
        --compare timesformer_tiny --num_frames 64 --input_size 224 --batch_size 8 --no_recipes --probe_frames 1 \
        --step_split --split_device cuda
    run pretrain "${TIMEOUT_PRETRAIN:-40}" key_pretrain "$PYTHON" scripts/bench_pretrain.py --size tiny --frames 8 \
        --img_size 224 --batch_size 8 --iters 2
    run data "${TIMEOUT_DATA:-40}" key_data "$PYTHON" scripts/make_synthetic_dataset.py --out "$DATA" \
        --num_classes 4 --train_per_class "$PER_CLASS" --val_per_class 5 --test_per_class 5 --frames 8 --size 224
    run "train native" "${TIMEOUT_NATIVE:-80}" key_native env OUTPUT_DIR="$WORK/native" bash "$RECIPE" \
        "${TRAIN_FLAGS[@]}"
    run "train ds" "${TIMEOUT_DS:-90}" key_ds env OUTPUT_DIR="$WORK/ds" bash "$RECIPE" "${TRAIN_FLAGS[@]}" \
        --enable_deepspeed --zero_stage 2
    run eval "${TIMEOUT_EVAL:-40}" key_eval env OUTPUT_DIR="$WORK/eval" bash "$RECIPE" "${EVAL_FLAGS[@]}"
else
    # the same commands, checked without a GPU: tests collected, bench flags parsed, a tiny dataset, and the
    # recipe with every override through DRY_RUN=1 (flags parsed by the entry point, model on meta, lists read)
    run "gpu tests" 300 key_tests "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --collect-only
    run bench 120 none "$PYTHON" -c "import sys; sys.path.insert(0, 'scripts'); import bench_scan as b, bench_model as bm; \
a = b.parse_layer_args(['--sizes', 'Ti', 'S', '--frames', '8', '--backends', 'triton', 'cuda', '--json', 'x.json']); \
m = bm.parse_backends_args(['--sizes', 'Ti', 'S', '--frames', '8', '--backends', 'triton', 'cuda', '--json', 'y.json']); \
assert a.sizes == m.sizes == ['Ti', 'S'] and a.backends == m.backends == ['triton', 'cuda']"
    run "step64 inner" 120 none "$PYTHON" -c "import sys; sys.path.insert(0, 'scripts'); import bench_model as b; \
a = b.parse_args(['--models', 'videomambapro_tiny', 'timesformer_tiny', '--frames', '64', '--img_size', '224', \
'--batch_size', '8', '--bf16', '--iters', '2', '--mixer_recompute', 'none']); assert a.mixer_recompute == 'none'"
    run split 300 key_split "$PYTHON" scripts/profile_block.py --model videomambapro_tiny --compare timesformer_tiny \
        --num_frames 2 --input_size 32 --batch_size 1 --no_recipes --probe_frames 1 --step_split --split_device cpu
    run pretrain 300 key_pretrain "$PYTHON" scripts/bench_pretrain.py --device cpu --size test --frames 4 --iters 1
    run data 120 key_data "$PYTHON" scripts/make_synthetic_dataset.py --out "$DATA" --num_classes 4 \
        --train_per_class $(( (BATCH + 3) / 4 )) --val_per_class 1 --test_per_class 1 --frames 8 --size 32
    # --eval's --resume target: a placeholder checkpoint (no weights: the dry run builds the model on meta)
    mkdir -p "$WORK/native"
    "$PYTHON" -c "import sys, torch; torch.save({'model': {}, 'epoch': 0}, sys.argv[1])" \
        "$WORK/native/checkpoint-best.pth"
    run "train native" 300 none env DRY_RUN=1 OUTPUT_DIR="$WORK/native" bash "$RECIPE" "${TRAIN_FLAGS[@]}"
    run "train ds" 300 none env DRY_RUN=1 OUTPUT_DIR="$WORK/ds" bash "$RECIPE" "${TRAIN_FLAGS[@]}" \
        --enable_deepspeed --zero_stage 2
    run eval 300 none env DRY_RUN=1 OUTPUT_DIR="$WORK/eval" bash "$RECIPE" "${EVAL_FLAGS[@]}"
fi

echo
echo "device check ($MODE), logs in $WORK"
printf '%-14s %-10s %8s  %s\n' check status seconds "key figure"
for r in "${ROWS[@]}"; do echo "$r"; done
exit "$FAILED"
