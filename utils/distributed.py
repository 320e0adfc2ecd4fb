"""Process-group setup from the launcher's environment (torchrun, SLURM, or none at all).

Single process without a launcher runs without a process group (``args.distributed = False``).
torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; SLURM sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and the
master address comes from MASTER_ADDR or ``scontrol show hostnames``.

On CUDA the process group is ``cuda:nccl,cpu:gloo``: NCCL carries CUDA tensors and gloo the CPU tensors
(loss flags, meters, evaluation counts), so a collective works whatever device its tensor is on. On CPU it is
``cpu:gloo``. Every collective of ours goes through ``collective(name)``: a timeout (``--dist_timeout``) or a
dead peer is reported with the collective's name and this rank, instead of a bare backend error.
"""
from __future__ import annotations

import builtins
import contextlib
import datetime
import os
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


DEFAULT_TIMEOUT_MIN = 10.0
_timeout = datetime.timedelta(minutes=DEFAULT_TIMEOUT_MIN)


class CollectiveError(RuntimeError):
    """A collective failed (timed out or lost a peer); the message names it, the rank and the timeout."""


def process_group_backend(use_cuda: bool) -> str:
    """The backend string for init_process_group: NCCL for CUDA tensors plus gloo for CPU tensors on GPUs."""
    return "cuda:nccl,cpu:gloo" if use_cuda else "cpu:gloo"


@contextlib.contextmanager
def collective(name: str):
    """Run one collective; on failure raise CollectiveError naming it (and print that on this rank)."""
    t0 = time.time()
    try:
        yield
    except Exception as e:  # gloo/NCCL raise RuntimeError / DistBackendError subclasses
        waited = time.time() - t0
        msg = (f"rank {get_rank()}/{get_world_size()}: collective '{name}' failed after {waited:.0f} s "
               f"(--dist_timeout {_timeout.total_seconds() / 60:g} min): another rank stalled or died before "
               f"reaching it. Backend error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
        raise CollectiveError(msg) from e


def barrier(name: str = "barrier") -> None:
    """All ranks meet here. With gloo available the barrier is monitored: on a timeout, rank 0 names the
    ranks that never arrived."""
    if not is_dist_avail_and_initialized():
        return
    with collective(name):
        if "gloo" in str(dist.get_backend()):
            dist.monitored_barrier(timeout=_timeout, wait_all_ranks=True)
        else:
            dist.barrier()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_for_distributed(is_master: bool) -> None:
    """Silence ``print`` on non-master ranks (``print(..., force=True)`` still prints)."""
    builtin_print = getattr(builtins, "_vmp_orig_print", builtins.print)
    builtins._vmp_orig_print = builtin_print

    def _print(*a, **kw):
        force = kw.pop("force", False)
        if is_master or force:
            builtin_print(*a, **kw)

    builtins.print = _print


def _slurm_master_addr() -> str:
    if os.environ.get("MASTER_ADDR"):
        return os.environ["MASTER_ADDR"]
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if nodelist:
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 check=True).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"SLURM run: MASTER_ADDR is not set and `scontrol show hostnames {nodelist}` "
                               f"failed ({e}); export MASTER_ADDR in the job script") from e
    raise RuntimeError("SLURM run: set MASTER_ADDR (or run inside an allocation where scontrol works)")


def read_launch_env(environ=None) -> dict:
    """Rank/world/local rank plus where they came from: 'torchrun', 'slurm' or 'none'."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return {"source": "torchrun", "rank": int(env["RANK"]), "world_size": int(env["WORLD_SIZE"]),
                "local_rank": int(env.get("LOCAL_RANK", 0))}
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return {"source": "slurm", "rank": int(env["SLURM_PROCID"]), "world_size": int(env["SLURM_NTASKS"]),
                "local_rank": int(env.get("SLURM_LOCALID", 0))}
    return {"source": "none", "rank": 0, "world_size": 1, "local_rank": 0}


def set_single_process_rendezvous() -> None:
    """For DeepSpeed without a launcher: rank 0 of 1 on localhost (otherwise it looks for MPI)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def init_distributed_mode(args) -> None:
    """Fill args.rank/world_size/gpu/distributed/dist_backend and start the process group if needed."""
    launch = read_launch_env()
    args.rank, args.world_size, args.gpu = launch["rank"], launch["world_size"], launch["local_rank"]
    args.launcher = launch["source"]
    use_cuda = torch.cuda.is_available() and str(getattr(args, "device", "cuda")).startswith("cuda")
    args.dist_backend = process_group_backend(use_cuda)
    global _timeout
    _timeout = datetime.timedelta(minutes=float(getattr(args, "dist_timeout", None) or DEFAULT_TIMEOUT_MIN))
    if launch["source"] == "slurm":
        os.environ.setdefault("MASTER_ADDR", _slurm_master_addr())
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(args.rank), str(args.world_size)
        os.environ["LOCAL_RANK"] = str(args.gpu)
    if launch["source"] == "none" and not getattr(args, "enable_deepspeed", False):
        args.distributed = False
        setup_for_distributed(True)
        return
    if launch["source"] == "none":
        set_single_process_rendezvous()
    args.distributed = True
    if use_cuda:
        torch.cuda.set_device(args.gpu)
    if not is_dist_avail_and_initialized():
        dist.init_process_group(backend=args.dist_backend, init_method="env://", world_size=args.world_size,
                                rank=args.rank, timeout=_timeout)
    setup_for_distributed(args.rank == 0)
    print(f"| distributed init ({args.launcher}, {args.dist_backend}): rank {args.rank}/{args.world_size}, "
          f"local rank {args.gpu}, collective timeout {_timeout.total_seconds() / 60:g} min", flush=True)


def all_reduce_sum(x: torch.Tensor, name: str = "all_reduce") -> torch.Tensor:
    if is_dist_avail_and_initialized():
        with collective(name):
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_gather_object(obj, name: str = "all_gather_object") -> list:
    """Every rank's ``obj`` (picklable plain data), in rank order; ``[obj]`` without a process group."""
    if not is_dist_avail_and_initialized():
        return [obj]
    out = [None] * get_world_size()
    with collective(name):
        dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()
