#!/usr/bin/env bash
# Fault injection end to end on CPU (about 5-8 minutes on 2 cores): kill -9 and resume, a killed and a stalled
# rank, corrupt / truncated / code-carrying checkpoints of each kind, unreadable train / val / test videos and a
# non-finite loss, against the real entry point. Prints one table of what survived; exit 1 if anything did not.
#   bash scripts/fault_check.sh [--only kill9_resume bad_videos ...] [--work DIR --keep]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/fault_check.py "$@"
