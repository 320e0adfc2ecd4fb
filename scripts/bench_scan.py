#!/usr/bin/env python
"""Selective-scan benchmark: the original research code's algorithm vs our backends, in one table.

For each shape (b, d, n, l) and backend it measures forward time (no grad), forward+backward time and
peak memory, for the plain scan and for the VideoMambaPro scan (masked + residual start):

* ``original``: the released research code's algorithm, re-implemented here as the baseline: it
  materialises ``exp(Delta A)`` and ``Delta B u`` as (b, d, l, n) tensors, loops over all steps with
  autograd and stacks the per-step outputs;
* ``torch``: ``mamba.ops.scan_torch.selective_scan_torch`` (chunked, exact);
* ``cuda``: ``mamba.ops.scan_cuda.selective_scan_cuda_fn`` (mamba-ssm kernel), when on a GPU with it.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on the CPU each measurement
runs in a fresh subprocess and the peak resident set size (Linux ``VmHWM``, reset to the current RSS
through ``/proc/self/clear_refs``) is reported above the RSS after the inputs were created and a
warm-up call was made on a tiny shape (so imports and thread pools are not counted), with glibc's mmap
threshold fixed (``MALLOC_MMAP_THRESHOLD_``, see ``cpu_malloc_env``) so that freed tensors leave the RSS;
times come from a second subprocess with the default allocator.
tracemalloc does not see torch's allocations, hence RSS.

    python scripts/bench_scan.py                      # CPU defaults: d=384 at l=1569,3137,12545; d=1152 at l=1569
    python scripts/bench_scan.py --device cuda --repeats 10
    python scripts/bench_scan.py --skip-original-above 3137   # the original at l=12545 is slow and large
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ------------------------------------------------------------------ the original algorithm (baseline)


def original_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, *, residual=False, masked=False):
    """The research code's algorithm: (b, d, l, n) tensors, a Python loop over l under autograd."""
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, l = u.shape
    n = A.shape[1]
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B.float(), u)
    x = u[:, :, 0, None].expand(b, d, n) if residual else A.new_zeros(b, d, n)
    ys = []
    for i in range(l):
        carried = deltaA[:, :, i] * x
        x = carried + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", carried if masked else x, C[:, :, i].float()))
    y = torch.stack(ys, dim=2)
    out = y + u * D[:, None]
    out = out * F.silu(z.float())
    return out.to(dtype_in)


# ------------------------------------------------------------------ one measurement


def _backend_fn(name):
    if name == "original":
        return original_scan
    if name == "torch":
        from mamba.ops.scan_torch import selective_scan_torch

        return selective_scan_torch
    if name == "cuda":
        from mamba.ops.scan_cuda import selective_scan_cuda_fn

        return selective_scan_cuda_fn
    raise ValueError(name)


def _inputs(b, d, n, l, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device)

    x = dict(u=r(b, d, l), delta=r(b, d, l, scale=0.5), A=-torch.rand(d, n, generator=g).to(device) - 0.05,
             B=r(b, n, l), C=r(b, n, l), D=r(d), z=r(b, d, l), delta_bias=r(d, scale=0.3))
    for k in x:
        x[k].requires_grad_()
    return x


def _call(fn, x, variant):
    kw = dict(residual=True, masked=True) if variant == "pro" else {}
    return fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, **kw)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _proc_status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_rss_peak():
    """Lower the RSS high-water mark (VmHWM) to the current RSS (Linux: /proc/self/clear_refs, value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(backend, variant, b, d, n, l, device, repeats):
    """Times (s) and peak memory (MiB above the inputs) of one backend/variant/shape."""
    fn = _backend_fn(backend)
    # warm up on a tiny shape (thread pools, lazy imports, kernels) before taking the memory baseline
    _call(fn, _inputs(1, 8, n, 8, device), variant).sum().backward()
    x = _inputs(b, d, n, l, device)
    _sync(device)
    res = {}
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_rss_peak()
        base = _proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    with torch.no_grad():
        _call(fn, x, variant)
    _sync(device)
    tf = [time.perf_counter() - t0]
    res["mem_fwd"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else (
        _proc_status_mb("VmHWM") - base)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = _call(fn, x, variant)
    out.sum().backward()
    _sync(device)
    tb = [time.perf_counter() - t0]
    res["mem_fwdbwd"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else (
        _proc_status_mb("VmHWM") - base)
    del out
    if repeats > 0:  # else: the times of the measured (first) calls above
        tf, tb = [], []
    for _ in range(repeats):
        for k in x:
            x[k].grad = None
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            _call(fn, x, variant)
        _sync(device)
        t1 = time.perf_counter()
        _call(fn, x, variant).sum().backward()
        _sync(device)
        t2 = time.perf_counter()
        tf.append(t1 - t0)
        tb.append(t2 - t1)
    res["t_fwd"] = statistics.median(tf)
    res["t_fwdbwd"] = statistics.median(tb)
    return res


def cpu_malloc_env():
    """The environment of a CPU memory measurement: a fixed glibc mmap threshold, so that every tensor above
    64 KiB is its own mapping, returned to the OS when freed. Without it glibc raises the threshold as large
    blocks are freed and keeps them in its heap, and the RSS high-water mark depends on the history of frees
    (repeat runs of one row differed by up to 1.9x). It also makes every large allocation a page-faulting
    mmap, which slows the scan, so times are taken in a second process with the default allocator."""
    return dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")


def _worker(job, env):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {job}:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_job(job, isolate):
    if not isolate:
        return measure(**job)
    res = _worker(job, cpu_malloc_env())  # memory
    if job["backend"] != "original":  # (the original's single call is minutes long: one process does both)
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
        res.update({k: v for k, v in _worker(job, env).items() if k.startswith("t_")})  # times
    return res


# ------------------------------------------------------------------ driver


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--lengths", default="1569,3137,12545",
                    help="sequence lengths, run at the first of --dims (default: 8, 16, 64 frames at 224)")
    ap.add_argument("--dims", default="384,1152",
                    help="d (channels): the first runs at every length, the others at the first length only")
    ap.add_argument("--state", type=int, default=16, help="n (state size)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed repeats (median) after the measured call; the original is timed once (its call "
                         "is minutes long: every per-step select's backward allocates a full (b, d, l, n) gradient)")
    ap.add_argument("--skip-original-above", type=int, default=1569, metavar="L",
                    help="do not run the original algorithm for l > L (its fwd+bwd time grows as l^2 and its "
                         "memory as b d l n; 0 = always skip, -1 = never skip) [1569]")
    ap.add_argument("--skip-original-d-above", type=int, default=384, metavar="D",
                    help="likewise for d > D (-1 = never skip) [384]")
    ap.add_argument("--backends", default="original,torch,cuda")
    ap.add_argument("--no-isolate", action="store_true", help="CPU: measure in this process (memory less exact)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return 0

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA GPU is visible")
    lengths = [int(v) for v in args.lengths.split(",") if v]
    dims = [int(v) for v in args.dims.split(",") if v]
    shapes = [(args.batch, dims[0], args.state, l) for l in lengths] + [
        (args.batch, d, args.state, lengths[0]) for d in dims[1:]]
    backends = [s for s in args.backends.split(",") if s]
    notes = []
    if "cuda" in backends:
        from mamba.ops.backend import cuda_kernels_available

        if device != "cuda" or not cuda_kernels_available():
            backends.remove("cuda")
            notes.append("cuda backend not run: " + ("needs --device cuda" if device != "cuda"
                                                     else "mamba-ssm's selective_scan_cuda is not installed"))
    isolate = device == "cpu" and not args.no_isolate
    mem_how = ("torch.cuda.max_memory_allocated above the inputs" if device == "cuda" else
               "peak RSS (Linux VmHWM, reset via /proc/self/clear_refs) above the RSS after inputs + warm-up, "
               "one subprocess per row"
               if isolate else "peak RSS in this process (later rows may under-report)")
    print(f"# selective scan benchmark: device={device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else f", torch threads={torch.get_num_threads()}")
          + f", torch {torch.__version__}, float32, softplus+bias+D+z, repeats={args.repeats} (median; original: 1)")
    print(f"# peak memory: {mem_how}")
    print("# variant 'plain' = Mamba scan; 'pro' = masked + residual start (VideoMambaPro backward direction)")

    results = {}
    for shape in shapes:
        b, d, n, l = shape
        for be in backends:
            for variant in ("plain", "pro"):
                if be == "original" and args.skip_original_above >= 0 and l > args.skip_original_above:
                    notes.append(f"original skipped at l={l} (--skip-original-above {args.skip_original_above})")
                    continue
                if be == "original" and args.skip_original_d_above >= 0 and d > args.skip_original_d_above:
                    notes.append(f"original skipped at d={d} (--skip-original-d-above {args.skip_original_d_above})")
                    continue
                job = dict(backend=be, variant=variant, b=b, d=d, n=n, l=l, device=device,
                           repeats=0 if be == "original" else args.repeats)
                try:
                    results[(shape, be, variant)] = run_job(job, isolate)
                except (RuntimeError, MemoryError) as e:  # e.g. CUDA OOM of the original: report, keep going
                    notes.append(f"{be}/{variant} at {shape} failed: {str(e).splitlines()[-1][:200]}")
                r = results.get((shape, be, variant))
                if r:
                    print(f"#   done {be:8s} {variant:5s} b={b} d={d} n={n} l={l}: fwd+bwd {r['t_fwdbwd']:.3f}s",
                          file=sys.stderr, flush=True)

    hdr = (f"{'b,d,n,l':>18} {'backend':>8} {'variant':>7} {'fwd ms':>10} {'fwd+bwd ms':>11} "
           f"{'peak fwd MiB':>12} {'peak f+b MiB':>12} {'speedup f+b':>11} {'mem ratio':>9} {'pro overhead':>12}")
    print()
    print(hdr)
    print("-" * len(hdr))
    for shape in shapes:
        for be in backends:
            for variant in ("plain", "pro"):
                r = results.get((shape, be, variant))
                if r is None:
                    continue
                o = results.get((shape, "original", variant))
                speed = f"{o['t_fwdbwd'] / r['t_fwdbwd']:.0f}x" if o else "n/a"
                memr = f"{r['mem_fwdbwd'] / o['mem_fwdbwd']:.3f}" if o and o["mem_fwdbwd"] > 0 else "n/a"
                p = results.get((shape, be, "plain"))
                ovh = f"{100 * (r['t_fwdbwd'] / p['t_fwdbwd'] - 1):+.1f}%" if variant == "pro" and p else ""
                print(f"{','.join(map(str, shape)):>18} {be:>8} {variant:>7} {1e3 * r['t_fwd']:10.1f} "
                      f"{1e3 * r['t_fwdbwd']:11.1f} {r['mem_fwd']:12.1f} {r['mem_fwdbwd']:12.1f} {speed:>11} "
                      f"{memr:>9} {ovh:>12}")
    print("# speedup / mem ratio: the original's fwd+bwd time / ours, our fwd+bwd peak / the original's (same variant)")
    # memory scaling of our backends with l
    for be in backends:
        if be == "original" or len(lengths) < 2:
            continue
        for variant in ("plain", "pro"):
            first = results.get(((args.batch, dims[0], args.state, lengths[0]), be, variant))
            last = results.get(((args.batch, dims[0], args.state, lengths[-1]), be, variant))
            if first and last and first["mem_fwdbwd"] > 0:
                print(f"# {be}/{variant}: peak f+b memory at l={lengths[-1]} is "
                      f"{last['mem_fwdbwd'] / first['mem_fwdbwd']:.2f}x that at l={lengths[0]} "
                      f"(sequence {lengths[-1] / lengths[0]:.2f}x longer)")
    for note in dict.fromkeys(notes):
        print("# note: " + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
