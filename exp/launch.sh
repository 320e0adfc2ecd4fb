# Sourced by every recipe in exp/: `launch ENTRY FLAGS...`.
#   default         torchrun --nproc_per_node=$((GPUS / NNODES)) --nnodes=$NNODES --node_rank=$NODE_RANK
#                   --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT ENTRY FLAGS...
#                   GPUS is the total over all nodes (each recipe sets VideoMamba's count as its default), so a
#                   16-GPU recipe runs on two 8-GPU nodes with NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0>, or on
#                   one node with GPUS=8 and --update_freq doubled (same total batch).
#   LAUNCHER=python one process per task, rank from the environment (used by exp/slurm/srun.sh: srun
#                   starts the tasks and sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)
#   DRY_RUN=1       $PYTHON ENTRY FLAGS... --dry_run: parse flags, build the model (meta device), datasets
#                   when the lists exist and the optimizer, then exit (tests/test_exp_scripts.py)
# Extra arguments given to a recipe are appended, so `bash exp/k400/x.sh --epochs 1 --batch_size 2` works.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

launch() {
    local entry="$REPO_ROOT/$1"
    shift
    cd "$REPO_ROOT"
    export GPUS="${GPUS:-8}" NNODES="${NNODES:-1}"
    if [ -n "${DRY_RUN:-}" ]; then
        exec "${PYTHON:-python}" "$entry" "$@" --dry_run
    elif [ "${LAUNCHER:-torchrun}" = "python" ]; then
        exec "${PYTHON:-python}" "$entry" "$@"
    else
        if [ $((GPUS % NNODES)) -ne 0 ]; then
            echo "error: GPUS=$GPUS (total) is not a multiple of NNODES=$NNODES" >&2
            exit 2
        fi
        exec torchrun --nproc_per_node="$((GPUS / NNODES))" --nnodes="$NNODES" --node_rank="${NODE_RANK:-0}" \
            --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-$((12000 + RANDOM % 20000))}" \
            "$entry" "$@"
    fi
}
