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
threshold fixed (``MALLOC_MMAP_THRESHOLD_``, see ``_bench.cpu_malloc_env``) so that freed tensors leave the RSS;
times come from a second subprocess with the default allocator.
tracemalloc does not see torch's allocations, hence RSS.

    python scripts/bench_scan.py                      # CPU defaults: d=384 at l=1569,3137,12545; d=1152 at l=1569
    python scripts/bench_scan.py --device cuda --repeats 10
    python scripts/bench_scan.py --skip-original-above 3137   # the original at l=12545 is slow and large

``layer`` mode (GPU): one bidirectional layer ``bi_selective_scan_fn`` at the VideoMamba Ti/S/M shapes (E = 384 /
768 / 1152, N = 16, l = 1 + 196 T for 8-64 frames), VideoMambaPro options (residual start both ways, backward mask)
vs VideoMamba, per scan backend and as two plain mamba-ssm calls when installed: forward / backward median times
(CUDA events) and the bandwidth achieved for the bytes that must move at least (fwd: read u, delta, B, C per
direction + z, write out; bwd: also dout, write du, ddelta, dB, dC per direction + dz). ``--allow-cpu``: tiny shapes
through the Triton interpreter (plumbing only). Per backend training steps: ``bench_model.py backends``.

    python scripts/bench_scan.py layer --sizes Ti --frames 8 16 --json scan.json
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

import _bench  # noqa: E402  (scripts/_bench.py, beside this script)
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


def measure(backend, variant, b, d, n, l, device, repeats):
    """Times (s) and peak memory (MiB above the inputs) of one backend/variant/shape."""
    fn = _backend_fn(backend)
    # warm up on a tiny shape (thread pools, lazy imports, kernels) before taking the memory baseline
    _call(fn, _inputs(1, 8, n, 8, device), variant).sum().backward()
    x = _inputs(b, d, n, l, device)
    _bench.sync(device)
    res = {}
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        _bench.reset_rss_peak()
        base = _bench.proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    with torch.no_grad():
        _call(fn, x, variant)
    _bench.sync(device)
    tf = [time.perf_counter() - t0]
    res["mem_fwd"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else (
        _bench.proc_status_mb("VmHWM") - base)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = _call(fn, x, variant)
    out.sum().backward()
    _bench.sync(device)
    tb = [time.perf_counter() - t0]
    res["mem_fwdbwd"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else (
        _bench.proc_status_mb("VmHWM") - base)
    del out
    if repeats > 0:  # else: the times of the measured (first) calls above
        tf, tb = [], []
    for _ in range(repeats):
        for k in x:
            x[k].grad = None
        _bench.sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            _call(fn, x, variant)
        _bench.sync(device)
        t1 = time.perf_counter()
        _call(fn, x, variant).sum().backward()
        _bench.sync(device)
        t2 = time.perf_counter()
        tf.append(t1 - t0)
        tb.append(t2 - t1)
    res["t_fwd"] = statistics.median(tf)
    res["t_fwdbwd"] = statistics.median(tb)
    return res


def _worker(job, env):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {job}:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_job(job, isolate):
    if not isolate:
        return measure(**job)
    res = _worker(job, _bench.cpu_malloc_env())  # memory
    if job["backend"] != "original":  # (the original's single call is minutes long: one process does both)
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
        res.update({k: v for k, v in _worker(job, env).items() if k.startswith("t_")})  # times
    return res


# ------------------------------------------------------------------ layer mode: the backends on a GPU


def scan_bytes(b, E, N, l, elem, ndir=2):
    """The floor: bytes that forward and backward must move at least."""
    per_dir_in = 2 * b * E * l + 2 * b * N * l  # u, delta, B, C
    fwd = elem * (ndir * per_dir_in + b * E * l + b * E * l)  # + z, out
    bwd = elem * (ndir * per_dir_in + 2 * b * E * l) + elem * (ndir * per_dir_in + b * E * l)  # + z, dout | + dz
    return fwd, bwd


def measure_peak_bandwidth(device, timer, mib=1024):
    """GB/s of a large device-to-device copy (read + write): the bandwidth the floor is measured against."""
    if device.type != "cuda":
        return float("nan")
    n = mib * 2**20 // 4
    src, dst = torch.empty(n, device=device), torch.empty(n, device=device)
    t = timer.measure(lambda: dst.copy_(src), 2, 10)
    return 2 * n * 4 / t / 1e9


def upstream_plain_x2(x):
    """Two plain mamba-ssm ``selective_scan_fn`` calls (the VideoMamba v2 layer without flipped copies):
    the yardstick of the fused bidirectional scan. None when mamba-ssm is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as upstream
    except Exception:  # noqa: BLE001 - any import failure means: not available
        return None

    def run():
        y = upstream(x["u"][0], x["delta"][0], x["A"][0], x["B"][0], x["C"][0], x["D"][0], x["z"],
                     x["delta_bias"][0], True)
        return y + upstream(x["u"][1], x["delta"][1], x["A"][1], x["B"][1], x["C"][1], x["D"][1], x["z"],
                            x["delta_bias"][1], True)

    return run


def bench_layer(args, device, dtype, timer, rows):
    """Rows of one bidirectional layer (``bi_selective_scan_fn``) per shape: two mamba-ssm calls when installed,
    then each backend x variant: fwd / bwd / fwd+bwd ms, achieved bandwidth over the floor, peak MiB."""
    from mamba.ops.selective_scan import bi_selective_scan_fn

    elem = torch.tensor([], dtype=dtype).element_size()
    for size, E, l, T in _bench.layer_shapes(args, device):
        b = args.scan_batch
        fwd_b, bwd_b = scan_bytes(b, E, _bench.N_STATE, l, elem)
        base = dict(level="scan", size=size, frames=T, l=l, E=E, batch=b)
        if device.type == "cuda":
            x = _bench.make_scan_inputs(b, E, _bench.N_STATE, l, dtype, device)
            run = upstream_plain_x2(x)
            if run is not None:
                f, b_, fb = _bench.time_fwd_bwd(timer, run, args.warmup, args.iters)
                row = dict(base, backend="mamba_ssm_x2", variant="videomamba", fwd_ms=f, bwd_ms=b_, fwd_bwd_ms=fb)
                rows.append(row)
                print(_bench.fmt_row(row), flush=True)
            x = None

        def measure_one(variant, b=b, E=E, l=l, fwd_b=fwd_b, bwd_b=bwd_b):
            x = _bench.make_scan_inputs(b, E, _bench.N_STATE, l, dtype, device)
            kw = _bench.VARIANTS[variant]
            _bench.reset_peak(device)
            f, b_, fb = _bench.time_fwd_bwd(timer, lambda: bi_selective_scan_fn(
                x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, **kw),
                args.warmup, args.iters)
            return dict(fwd_ms=f, bwd_ms=b_, fwd_bwd_ms=fb, fwd_GBps=fwd_b / f / 1e6, bwd_GBps=bwd_b / b_ / 1e6,
                        floor_fwd_MB=fwd_b / 1e6, floor_bwd_MB=bwd_b / 1e6, peak_MiB=_bench.peak_mib(device))

        _bench.measure_variants(rows, device, args.backends, base, measure_one)


def summarize(rows, peak_GBps=float("nan")):
    """Ratios side by side: VideoMambaPro (pro) vs VideoMamba (plain) fwd+bwd time on the same backend, pro vs
    two plain mamba-ssm calls, vs the torch backend, and achieved bandwidth as a fraction of ``peak_GBps``
    (>= 0.5 is the target at l >= 3137)."""
    by = {}
    for r in rows:
        if "skipped" not in r and r["level"] == "scan":
            by.setdefault((r["size"], r["frames"], r["backend"]), {})[r["variant"]] = r
    scan = sorted(k for k in by if k[2] != "mamba_ssm_x2")
    if not scan:
        return ""
    out = [f"scan (bidirectional layer, fwd+bwd; bandwidth fraction vs {peak_GBps:.0f} GB/s)",
           f"{'size':8s} {'T':>3s} {'backend':8s} {'pro ms':>9s} {'plain ms':>9s} {'pro/plain':>9s} "
           f"{'pro/mssm2':>9s} {'torch/pro':>9s} {'fwd bw':>7s} {'bwd bw':>7s}"]
    r_ = _bench.ratio
    for key in scan:
        size, T, bk = key
        pro, plain = by[key].get("videomambapro"), by[key].get("videomamba")
        up = by.get((size, T, "mamba_ssm_x2"), {}).get("videomamba")
        tor = by.get((size, T, "torch"), {}).get("videomambapro")
        t = lambda r: r["fwd_bwd_ms"] if r else None  # noqa: E731
        frac = lambda r, k: f"{r[k] / peak_GBps:.2f}" if r and peak_GBps == peak_GBps else "-"  # noqa: E731
        out.append(f"{size:8s} {T:3d} {bk:8s} {t(pro) or float('nan'):9.2f} {t(plain) or float('nan'):9.2f} "
                   f"{r_(t(pro), t(plain)):>9s} {r_(t(pro), t(up)):>9s} {r_(t(tor), t(pro)):>9s} "
                   f"{frac(pro, 'fwd_GBps'):>7s} {frac(pro, 'bwd_GBps'):>7s}")
    return "\n".join(out)


def parse_layer_args(argv=None):
    p = _bench.gpu_parser("bench_scan.py layer: " + LAYER_DOC)
    _bench.add_dtype(p)
    p.add_argument("--peak_GBps", type=float, default=None,
                   help="device memory bandwidth for the floor (default: measured with a large device copy)")
    p.add_argument("--key_figures", nargs="+", default=None, metavar="JSON",
                   help="print the one-line key figures of earlier --json files (this mode's and bench_model.py "
                        "backends') and exit (scripts/device_check.sh)")
    return p.parse_args(argv)


LAYER_DOC = "one bidirectional layer per scan backend on a GPU: times, bandwidth vs the floor"


def layer_main(argv=None):
    args = parse_layer_args(argv)
    if args.key_figures:
        rows = []
        for path in args.key_figures:
            with open(path) as f:
                rows += json.load(f)
        print(_bench.key_figures(rows))
        return 0
    peak = []

    def bench(device, timer, rows):
        peak.append(args.peak_GBps or measure_peak_bandwidth(device, timer))
        if device.type == "cuda":
            print(f"device copy bandwidth: {peak[0]:.0f} GB/s", flush=True)
        bench_layer(args, device, _bench.torch_dtype(args.dtype), timer, rows)
        for r in rows:
            if "skipped" not in r and peak[0] == peak[0]:
                r["peak_GBps"] = peak[0]  # the floor's reference, for readers of --json

    return _bench.run(args, "bench_scan.py layer", bench, lambda rows: summarize(rows, peak[0]))[0]


# ------------------------------------------------------------------ driver


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["layer"]:
        return layer_main(argv[1:])
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
