#!/usr/bin/env bash
# SLURM wrapper: run any recipe of exp/ with srun, one task per GPU (no torchrun inside).
#   PARTITION=video GPUS=16 GPUS_PER_NODE=8 bash exp/slurm/srun.sh exp/k400/videomambapro_small_f16_res224.sh [extra flags]
# Each task runs `python ENTRY ...` (LAUNCHER=python); the training code reads SLURM_PROCID / SLURM_NTASKS /
# SLURM_LOCALID, and MASTER_ADDR from the environment or `scontrol show hostnames` (utils/distributed.py).
# Preemption / time limit: srun asks SLURM for SIGUSR1 SIGNAL_LEAD seconds (default 300) before the end; every
# task then finishes its step, saves a mid-epoch checkpoint and exits 75. Inside a batch job (sbatch --requeue)
# the job is then requeued and the rerun continues from that step (--auto_resume is on by default);
# interactively the line to rerun is printed. REQUEUE=0 turns the requeue off.
set -euo pipefail
RECIPE="${1:?usage: srun.sh exp/<dataset>/<recipe>.sh [extra flags]}"
shift
PARTITION="${PARTITION:-video}"
# total tasks: the recipe's own GPU count (its GPUS="${GPUS:-N}" line) unless GPUS is set
RECIPE_GPUS="$(sed -n 's/^GPUS="\${GPUS:-\([0-9]*\)}".*/\1/p' "$RECIPE" | head -n 1)"
GPUS="${GPUS:-${RECIPE_GPUS:-8}}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
CPUS_PER_TASK="${CPUS_PER_TASK:-16}"
JOB_NAME="${JOB_NAME:-$(basename "$RECIPE" .sh)}"
export MASTER_PORT="${MASTER_PORT:-$((12000 + RANDOM % 20000))}"
SIGNAL_LEAD="${SIGNAL_LEAD:-300}"   # seconds between the warning signal and the time limit
PREEMPTED_EXIT=75                   # engines/preemption.py: stopped on a signal, state saved, resumable

set +e
srun --partition="$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    --signal=USR1@"$SIGNAL_LEAD" \
    env LAUNCHER=python bash "$RECIPE" "$@"
rc=$?
set -e
if [ "$rc" -eq "$PREEMPTED_EXIT" ]; then
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "${REQUEUE:-1}" = "1" ] && command -v scontrol >/dev/null; then
        echo "srun.sh: the run stopped on a signal and saved its state; requeueing job $SLURM_JOB_ID" >&2
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "srun.sh: the run stopped on a signal and saved its state; rerun the same command to continue" >&2
    fi
fi
exit "$rc"
