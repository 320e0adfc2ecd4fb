#!/usr/bin/env python
"""Training-step throughput (forward + backward, clips/s) and peak memory vs frames, VideoMambaPro
next to VideoMamba, in one table.

    python scripts/bench_model.py --device cuda --size tiny --frames 8 16 32 64 --img_size 224 --batch_size 8
    python scripts/bench_model.py                      # CPU default: the 'test' size, 32 px, small batch

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the peak resident set above the
RSS before each configuration (Linux VmHWM, reset through /proc/self/clear_refs), measured with glibc's mmap
threshold fixed (``MALLOC_MMAP_THRESHOLD_=65536``, so freed tensors leave the RSS) in a subprocess per
configuration; the times come from this process, with the default allocator (a fixed threshold makes every
large allocation a page-faulting mmap). The scan backend is the one ``VMP_SCAN_BACKEND`` / ``--scan_backend`` selects.
"""
import argparse
import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from bench_scan import _proc_status_mb, _reset_rss_peak, cpu_malloc_env  # noqa: E402  (this folder)


def _cpu_peak_start():
    """Reset the RSS high-water mark to the current RSS; return the RSS (MiB)."""
    gc.collect()
    _reset_rss_peak()
    return _proc_status_mb("VmRSS")


def bench_one(name, frames, args, device):
    import timm

    kw = dict(num_frames=frames, img_size=args.img_size, num_classes=400)
    model = timm.create_model(name, **kw).to(device)
    if args.use_checkpoint:
        model.set_grad_checkpointing(True)
    x = torch.randn(args.batch_size, 3, frames, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 400, (args.batch_size,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step():
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = _cpu_peak_start() if device.type == "cpu" else 0.0
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _proc_status_mb("VmHWM") - rss0
    return args.batch_size * args.iters / dt, mem


def _cpu_memory(name, frames, argv):
    """Peak RSS growth (MiB) of one configuration, measured in a fresh process with a fixed mmap threshold."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--device", "cpu", "--mem_worker", name, str(frames)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=cpu_malloc_env())
    if p.returncode != 0:
        raise RuntimeError(f"memory worker failed for {name} at {frames} frames:\n{p.stderr[-2000:]}")
    return float(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default=None, help="tiny|small|middle|demo|test (default: tiny on CUDA, test on CPU)")
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--img_size", type=int, default=None, help="default 224 on CUDA, 32 on CPU")
    p.add_argument("--batch_size", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--use_checkpoint", action="store_true", help="activation checkpointing of all blocks")
    p.add_argument("--scan_backend", default=None, help="auto|reference|torch|cuda|triton")
    p.add_argument("--mem_worker", nargs=2, metavar=("MODEL", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    args.size = args.size or ("test" if cpu else "tiny")
    args.img_size = args.img_size or (32 if cpu else 224)
    args.batch_size = args.batch_size or (2 if cpu else 8)

    import models  # noqa: F401
    from mamba.ops import resolve_backend, set_scan_backend

    if args.scan_backend:
        set_scan_backend(args.scan_backend)
    if args.mem_worker:  # one CPU memory measurement (see the module docstring), printed as the last line
        print(bench_one(args.mem_worker[0], int(args.mem_worker[1]), args, device)[1])
        return
    print(f"device {device}, size {args.size}, img {args.img_size}, batch {args.batch_size}, "
          f"scan backend {resolve_backend(device.type)}, bf16 {args.bf16}, threads {torch.get_num_threads()}")
    mem_name = "peak MiB" if not cpu else "peak RSS +MiB"
    print(f"{'frames':>6} {'tokens':>7} | {'Pro clips/s':>11} {'VM clips/s':>10} {'Pro/VM':>6} | "
          f"{'Pro ' + mem_name:>17} {'VM ' + mem_name:>16}")
    n = (args.img_size // 16) ** 2
    for f in args.frames:
        row = {}
        for arch in ("videomambapro", "videomamba"):
            try:
                row[arch] = bench_one(f"{arch}_{args.size}", f, args, device)
                if cpu:
                    row[arch] = (row[arch][0], _cpu_memory(f"{arch}_{args.size}", f, argv))
            except torch.cuda.OutOfMemoryError:
                row[arch] = (float("nan"), float("nan"))
                torch.cuda.empty_cache()
        (tp, mp), (tv, mv) = row["videomambapro"], row["videomamba"]
        print(f"{f:>6} {1 + n * f:>7} | {tp:>11.2f} {tv:>10.2f} {tp / tv:>6.2f} | {mp:>17.0f} {mv:>16.0f}")


if __name__ == "__main__":
    main()
