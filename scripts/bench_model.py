#!/usr/bin/env python
"""Training-step throughput (forward + backward, clips/s) and peak memory vs frames for any registered models,
side by side with the ratio to VideoMambaPro (the shape of VideoMamba's Fig. 1), plus analytic GFLOPs
(scripts/count_flops.py), in one table; then how each model's time and memory grow from the fewest frames to
the most.

    python scripts/bench_model.py --device cuda --models videomambapro_tiny videomamba_tiny timesformer_tiny \
        vivit_tiny videomambaout_tiny --frames 8 16 32 64 --img_size 224 --batch_size 8
    python scripts/bench_model.py --models videomambapro_tiny timesformer_tiny --img_size 64   # CPU, reduced
    python scripts/bench_model.py                      # CPU default: videomambapro_test vs videomamba_test, 32 px

``--size S`` (without ``--models``) compares ``videomambapro_S`` and ``videomamba_S``. The reference of the
ratio columns is the first ``videomambapro_*`` model given (else the first model). Each model keeps its own
tubelet (ViViT 2, the others 1) unless ``--tubelet_size`` is given; ``tokens`` is the longest sequence a block
sees (ViViT: the spatial transformer's 1 + n per frame, all frames together).

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the peak resident set above the
RSS before each configuration (Linux VmHWM, reset through /proc/self/clear_refs), measured with glibc's mmap
threshold fixed (``MALLOC_MMAP_THRESHOLD_=65536``, so freed tensors leave the RSS) in a subprocess per
configuration; the times come from this process, with the default allocator (a fixed threshold makes every
large allocation a page-faulting mmap). The scan backend is the one ``VMP_SCAN_BACKEND`` / ``--scan_backend`` selects.

``backends`` mode (GPU): a training step (forward, backward, AdamW step, bf16 autocast) of ``videomambapro_<size>``
vs ``videomamba_<size>`` from ``timm.create_model`` on each scan backend (torch / cuda / triton) for --sizes Ti S M
x --frames: clips/s (median of CUDA-event timings), peak memory and its growth over the fewest frames;
``--allow-cpu``: the test models through the Triton interpreter (plumbing only).

    python scripts/bench_model.py backends --sizes Ti --frames 8 16 --backends triton cuda --json model.json
"""
import argparse
import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _bench  # noqa: E402  (scripts/_bench.py, beside this script)
import torch  # noqa: E402


def _cpu_peak_start():
    """Reset the RSS high-water mark to the current RSS; return the RSS (MiB)."""
    gc.collect()
    _bench.reset_rss_peak()
    return _bench.proc_status_mb("VmRSS")


def bench_one(name, frames, args, device):
    import timm

    kw = dict(num_frames=frames, img_size=args.img_size, num_classes=400)
    if args.tubelet_size is not None:
        kw["tubelet_size"] = args.tubelet_size
    model = timm.create_model(name, **kw).to(device)
    if args.use_checkpoint:
        model.set_grad_checkpointing(True)
    if args.mixer_recompute and hasattr(model, "set_mixer_recompute"):
        model.set_mixer_recompute(args.mixer_recompute)
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
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _bench.proc_status_mb("VmHWM") - rss0
    return args.batch_size * args.iters / dt, mem


def _cpu_memory(name, frames, argv):
    """Peak RSS growth (MiB) of one configuration, measured in a fresh process with a fixed mmap threshold."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--device", "cpu", "--mem_worker", name, str(frames)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_bench.cpu_malloc_env())
    if p.returncode != 0:
        raise RuntimeError(f"memory worker failed for {name} at {frames} frames:\n{p.stderr[-2000:]}")
    return float(p.stdout.strip().splitlines()[-1])


def _measure(name, frames, args, argv, device):
    """(clips/s, peak MiB) of one configuration; NaNs when it does not fit in GPU memory."""
    try:
        tput, mem = bench_one(name, frames, args, device)
        if device.type == "cpu":
            mem = _cpu_memory(name, frames, argv)
        return tput, mem
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return float("nan"), float("nan")


def _flops(name, frames, args):
    from count_flops import count_model  # noqa: E402  (this folder)

    try:
        return count_model(name, frames, args.img_size, 400, args.tubelet_size)["total"] / 1e9
    except (ValueError, KeyError):
        return float("nan")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=None, help="registered model names (default: --size's pair)")
    p.add_argument("--size", default=None, help="tiny|small|middle|demo|test: videomambapro_S vs videomamba_S "
                   "(default: tiny on CUDA, test on CPU)")
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--img_size", type=int, default=None, help="default 224 on CUDA, 32 on CPU")
    p.add_argument("--batch_size", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    p.add_argument("--tubelet_size", type=int, default=None, help="default: each model's own")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--use_checkpoint", action="store_true", help="activation checkpointing of all blocks")
    p.add_argument("--scan_backend", default=None, help="auto|reference|torch|cuda|triton")
    p.add_argument("--mixer_recompute", choices=("none", "inner", "all"), default="inner",
                   help="Mamba models' mixer recompute (default inner, as training)")
    p.add_argument("--mem_worker", nargs=2, metavar=("MODEL", "FRAMES"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    mode = sys.argv[1:2] if argv is None else list(argv)[:1]
    if mode == ["backends"]:
        return backends_main((sys.argv[1:] if argv is None else list(argv))[1:])
    args = parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    args.size = args.size or ("test" if cpu else "tiny")
    args.img_size = args.img_size or (32 if cpu else 224)
    args.batch_size = args.batch_size or (2 if cpu else 8)
    names = args.models or [f"videomambapro_{args.size}", f"videomamba_{args.size}"]

    import timm

    import models
    from mamba.ops import resolve_backend, set_scan_backend

    unknown = [n for n in names if n not in models.registered_models()]
    if unknown:
        raise SystemExit(f"error: not registered by models/: {unknown}")
    if args.scan_backend:
        set_scan_backend(args.scan_backend)
    if args.mem_worker:  # one CPU memory measurement (see the module docstring), printed as the last line
        print(bench_one(args.mem_worker[0], int(args.mem_worker[1]), args, device)[1])
        return
    ref = next((n for n in names if n.startswith("videomambapro_")), names[0])
    print(f"device {device}, img {args.img_size}, batch {args.batch_size}, scan backend {resolve_backend(device.type)}, "
          f"bf16 {args.bf16}, mixer recompute {args.mixer_recompute}, threads {torch.get_num_threads()}; ratios vs {ref}")
    mem_name = "peak MiB" if not cpu else "peak RSS +MiB"
    w = max(len(n) for n in names)
    print(f"{'frames':>6} {'model':<{w}} {'tokens':>7} {'GFLOPs':>8} | {'clips/s':>8} {'x ref':>6} | "
          f"{mem_name:>13} {'x ref':>6}")
    results = {}
    for f in args.frames:
        row = {n: _measure(n, f, args, argv, device) for n in names}
        tr, mr = row[ref]
        for n in names:
            tput, mem = row[n]
            results[(n, f)] = (tput, mem)
            with torch.device("meta"):
                kw = {} if args.tubelet_size is None else {"tubelet_size": args.tubelet_size}
                m = timm.create_model(n, num_frames=f, img_size=args.img_size, **kw)
            tokens = _tokens(m)
            print(f"{f:>6} {n:<{w}} {tokens:>7} {_flops(n, f, args):>8.3g} | {tput:>8.2f} {tput / tr:>6.2f} | "
                  f"{mem:>13.0f} {mem / mr:>6.2f}", flush=True)
    if len(args.frames) > 1:
        f0, f1 = min(args.frames), max(args.frames)
        print(f"\ngrowth from {f0} to {f1} frames ({f1 / f0:.0f}x the frames): step time and peak memory ratios")
        print(f"{'model':<{w}} {'time x':>7} {'memory x':>8}")
        for n in names:
            (t0, m0), (t1, m1) = results[(n, f0)], results[(n, f1)]
            print(f"{n:<{w}} {t0 / t1:>7.2f} {m1 / m0:>8.2f}")


# ------------------------------------------------------------------ backends mode: the scan backends on a GPU


def bench_backends(args, device, timer, rows):
    """Rows of one training step per (size, frames) x backend x VideoMambaPro / VideoMamba."""
    try:
        import timm

        import models  # noqa: F401  (registers the models in timm)
    except ImportError as e:
        rows.append(dict(level="model", skipped=f"models/ not importable: {e}"))
        print(f"model level skipped: models/ not importable ({e})", flush=True)
        return
    if device.type == "cuda":
        configs = [(s, _bench.SIZES[s][0], T, 224, args.model_batch) for s in args.sizes for T in args.frames]
    else:
        configs = [("test", "test", 2, 32, 2)]
    for size, suffix, T, img, b in configs:

        def measure(variant, suffix=suffix, T=T, img=img, b=b):
            model = timm.create_model(f"{variant}_{suffix}", num_classes=400, num_frames=T, img_size=img)
            model = model.to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            clip = torch.randn(b, 3, T, img, img, device=device)
            target = torch.randint(0, 400, (b,), device=device)
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

            def step():
                with amp:
                    loss = torch.nn.functional.cross_entropy(model(clip), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            _bench.reset_peak(device)
            t = timer.measure(step, args.warmup, args.iters)
            return dict(step_ms=1e3 * t, clips_per_s=b / t, peak_MiB=_bench.peak_mib(device))

        _bench.measure_variants(rows, device, args.backends, dict(level="model", size=size, frames=T, batch=b),
                                measure)


def summarize(rows):
    """Ratios side by side: training-step time VideoMambaPro / VideoMamba on the same backend and peak memory
    relative to the smallest frame count."""
    by = {}
    for r in rows:
        if "skipped" not in r and r["level"] == "model":
            by.setdefault((r["size"], r["frames"], r["backend"]), {})[r["variant"]] = r
    if not by:
        return ""
    out = ["\nmodel (training step)",
           f"{'size':8s} {'T':>3s} {'backend':8s} {'pro clip/s':>10s} {'plain clip/s':>12s} "
           f"{'pro/plain t':>11s} {'pro MiB':>9s} {'plain MiB':>9s} {'MiB/T_min':>9s}"]
    r_ = _bench.ratio
    for key in sorted(by):
        size, T, bk = key
        pro, plain = by[key].get("videomambapro"), by[key].get("videomamba")
        t_min = min(k[1] for k in by if k[0] == size and k[2] == bk)
        base = by.get((size, t_min, bk), {}).get("videomambapro")
        g = lambda r, k: r[k] if r else float("nan")  # noqa: E731
        out.append(f"{size:8s} {T:3d} {bk:8s} {g(pro, 'clips_per_s'):10.2f} {g(plain, 'clips_per_s'):12.2f} "
                   f"{r_(pro and pro['step_ms'], plain and plain['step_ms']):>11s} {g(pro, 'peak_MiB'):9.0f} "
                   f"{g(plain, 'peak_MiB'):9.0f} {r_(pro and pro['peak_MiB'], base and base['peak_MiB']):>9s}")
    return "\n".join(out)


def parse_backends_args(argv=None):
    p = _bench.gpu_parser("bench_model.py backends: the training step per scan backend on a GPU")
    p.add_argument("--model_batch", type=int, default=4)
    return p.parse_args(argv)


def backends_main(argv=None):
    args = parse_backends_args(argv)
    return _bench.run(args, "bench_model.py backends", lambda device, timer, rows: bench_backends(
        args, device, timer, rows), summarize)[0]


def _tokens(model):
    """The longest token sequence one block of ``model`` sees (clip-level for the isotropic models)."""
    pe = model.patch_embed
    t = model.num_frames // model.tubelet_size
    if hasattr(model, "temporal_blocks"):  # ViViT: spatial blocks see 1 + n tokens per frame
        return t * (1 + pe.num_patches)
    return t * pe.num_patches + (1 if hasattr(model, "cls_token") else 0)


if __name__ == "__main__":
    sys.exit(main())
