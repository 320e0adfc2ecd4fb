"""What the benchmark scripts share (scripts/bench_scan.py, bench_model.py, tune_tiles.py): the timer, the memory
probes, the shapes and variants, scan inputs, and the frame of a GPU run (``--allow-cpu``, the rows, ``--json``,
the key figures of scripts/device_check.sh).

A module of this folder, not a script: the scripts import it as ``import _bench`` (Python puts a script's own folder
first on ``sys.path``; the tests put scripts/ there).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

SIZES = {"Ti": ("tiny", 192), "S": ("small", 384), "M": ("middle", 576)}
N_STATE = 16
VARIANTS = {  # scan options of one bidirectional layer
    "videomambapro": dict(residual=(True, True), masked=(False, True)),
    "videomamba": dict(residual=(False, False), masked=(False, False)),
}
CPU_SHAPE = ("tiny-cpu", 16, 1 + 4 * 2, 2)  # (size, E, l, frames): the interpreter's stand-in for a layer


# --------------------------------------------------------------------------------------------- timing


class Timer:
    """Median seconds of a call: CUDA events on a GPU, ``time.perf_counter`` on the CPU, after a warm-up."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def measure(self, fn, warmup, iters):
        """Median seconds of ``fn()``."""
        import torch

        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(iters):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)


def time_fwd_bwd(timer, call, warmup, iters):
    """Forward (``call()`` under no_grad) and forward + backward (ones as the output gradient) median times:
    ``(fwd_ms, bwd_ms, fwd_bwd_ms)`` with the backward as their difference."""
    import torch

    def fwd():
        with torch.no_grad():
            return call()

    def fwd_bwd():
        out = call()
        out.backward(torch.ones_like(out))

    t_f = timer.measure(fwd, warmup, iters)
    t_fb = timer.measure(fwd_bwd, warmup, iters)
    return 1e3 * t_f, 1e3 * max(t_fb - t_f, 1e-9), 1e3 * t_fb


def sync(device):
    """Wait for the GPU (``device``: a torch.device or its type name); nothing on the CPU."""
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------- memory


def reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device):
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")


def proc_status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_rss_peak():
    """Lower the RSS high-water mark (VmHWM) to the current RSS (Linux: /proc/self/clear_refs, value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_malloc_env():
    """The environment of a CPU memory measurement: a fixed glibc mmap threshold, so that every tensor above
    64 KiB is its own mapping, returned to the OS when freed. Without it glibc raises the threshold as large
    blocks are freed and keeps them in its heap, and the RSS high-water mark depends on the history of frees
    (repeat runs of one row differed by up to 1.9x). It also makes every large allocation a page-faulting
    mmap, which slows the scan, so times are taken in a second process with the default allocator."""
    return dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")


# ----------------------------------------------------------------------------------- shapes and inputs


def layer_shapes(args, device):
    """(size, E, l, frames) of one bidirectional layer per --sizes x --frames (l = 1 + 196 T); the CPU stand-in
    off a GPU."""
    if device.type != "cuda":
        return [CPU_SHAPE]
    return [(s, 2 * SIZES[s][1], 1 + 196 * T, T) for s in args.sizes for T in args.frames]


def make_scan_inputs(b, E, N, l, dtype, device, seed=0):
    """(forward, backward) pairs of one bidirectional layer's scan inputs, leaves with gradients."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0, dt=dtype):
        return (torch.randn(*s, generator=g) * scale).to(device=device, dtype=dt).requires_grad_()

    pair = lambda f: (f(), f())  # noqa: E731
    x = dict(
        u=pair(lambda: r(b, E, l)), delta=pair(lambda: r(b, E, l, scale=0.5)),
        A=pair(lambda: (-torch.rand(E, N, generator=g) - 0.1).to(device).requires_grad_()),
        B=pair(lambda: r(b, N, l)), C=pair(lambda: r(b, N, l)), D=pair(lambda: r(E, dt=torch.float32)),
        z=r(b, E, l), delta_bias=pair(lambda: r(E, scale=0.1, dt=torch.float32)),
    )
    return x


def backend_available(name, device):
    """None when scan backend ``name`` runs on ``device``, else why not."""
    from mamba.ops.backend import check_backend_available

    try:
        check_backend_available(name)
    except RuntimeError as e:
        return str(e)
    if name == "cuda" and device.type != "cuda":
        return "cuda backend needs a GPU"
    return None


def measure_variants(rows, device, backends, base, measure):
    """One row per (backend, variant of VARIANTS): ``base`` (level, size, frames first) with the backend, the
    variant and what ``measure(variant)`` returns, run with that scan backend forced; a backend that cannot run
    here is one ``skipped`` row, an out-of-memory a ``skipped`` row of its variant. Rows are printed as they come."""
    import torch

    from mamba.ops.backend import set_scan_backend

    for backend in backends:
        why = backend_available(backend, device)
        if why:
            rows.append(dict(level=base["level"], size=base["size"], frames=base["frames"], backend=backend,
                             skipped=why))
            continue
        for variant in VARIANTS:
            row = dict(base, backend=backend, variant=variant)
            try:
                set_scan_backend(backend)
                row.update(measure(variant))
            except torch.cuda.OutOfMemoryError:
                row["skipped"] = "out of memory"
            finally:
                set_scan_backend(None)
            rows.append(row)
            print(fmt_row(row), flush=True)


# ------------------------------------------------------------------------------------ a GPU run's frame


def gpu_parser(description, backends=True):
    """The flags every GPU mode takes: shapes, backends, warm-up / iterations, --allow-cpu, --json."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--sizes", nargs="+", default=["Ti", "S", "M"], choices=list(SIZES))
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    if backends:
        p.add_argument("--backends", nargs="+", default=["torch", "cuda", "triton"],
                       choices=["torch", "cuda", "triton"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--allow-cpu", action="store_true", help="no GPU: run tiny shapes through the Triton interpreter")
    p.add_argument("--json", default=None, help="also write all rows to this JSON file")
    return p


def add_dtype(p):
    p.add_argument("--scan_batch", type=int, default=1)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="scan input dtype")


def torch_dtype(name):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def start(args, what):
    """The device of a GPU run, or None (after a message) when there is no GPU and no ``--allow-cpu``. With
    ``--allow-cpu`` TRITON_INTERPRET=1 is set before triton is imported (kernels decorate at import), and a CPU
    run is one untimed call per measurement."""
    if args.allow_cpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"{what} needs a CUDA GPU (none found). Use scripts/bench_scan.py / bench_model.py without a mode for "
              "CPU figures, or --allow-cpu to run tiny shapes through the Triton interpreter (plumbing only).",
              file=sys.stderr)
        return None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        args.warmup, args.iters = 0, 1
        print("CPU run (Triton interpreter): tiny shapes, timings are not meaningful", flush=True)
    else:
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    return device


def small_cpu_tiles(device, backends):
    """On the CPU with the triton backend: small scan tiles (the interpreter is slow per tile)."""
    if device.type == "cpu" and "triton" in backends:
        from mamba.ops.scan_triton import triton_scan_config

        return triton_scan_config(block_d=8, chunk=8)
    return contextlib.nullcontext()


def run(args, what, bench, table):
    """One GPU mode: the device (:func:`start`; exit status 2 without one), ``bench(device, timer, rows)`` (with
    small scan tiles on the CPU when --backends has triton), then :func:`finish` with ``table(rows)``. Returns
    ``(exit status, rows)``."""
    device = start(args, what)
    if device is None:
        return 2, []
    rows = []
    with small_cpu_tiles(device, getattr(args, "backends", ())):
        bench(device, Timer(device), rows)
    return finish(args, rows, table(rows)), rows


def finish(args, rows, table):
    """Print the skipped rows and the table, write --json; exit status 1 when a row that is not skipped has no
    time."""
    for r in rows:
        if "skipped" in r:
            print(f"skipped: {r}", flush=True)
    print("\n" + table, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r for r in rows if "skipped" not in r and not any(k.endswith("_ms") for k in r)]
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------- output


def fmt_row(row):
    keys = [k for k in row if k not in ("level",)]
    return f"[{row['level']}] " + "  ".join(
        f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys
    )


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b is not None and b > 0 else "-"


def key_figures(rows, backend="triton"):
    """One line per run for scripts/device_check.sh: per size (first frame count), the VideoMambaPro layer's
    fwd+bwd ms on ``backend``, its ratio to two mamba-ssm calls, its fwd / bwd bandwidth as a fraction of the
    device copy bandwidth, and the VideoMambaPro / VideoMamba training-step time ratio (rows of
    ``bench_scan.py layer`` and ``bench_model.py backends``)."""
    ok = [r for r in rows if "skipped" not in r]

    def get(level, size, bk, variant):
        return next((r for r in ok if (r["level"], r.get("size"), r.get("backend"), r.get("variant")) ==
                     (level, size, bk, variant)), None)

    parts = []
    for size in dict.fromkeys(r["size"] for r in ok if "size" in r):
        pro, up = get("scan", size, backend, "videomambapro"), get("scan", size, "mamba_ssm_x2", "videomamba")
        mp, mv = get("model", size, backend, "videomambapro"), get("model", size, backend, "videomamba")
        p = [f"{size} scan {pro['fwd_bwd_ms']:.2f}ms" if pro else f"{size} scan -"]
        if pro and up:
            p.append(f"/mssm2 {pro['fwd_bwd_ms'] / up['fwd_bwd_ms']:.2f}")
        if pro and pro.get("peak_GBps"):
            p.append(f"floor {pro['fwd_GBps'] / pro['peak_GBps']:.2f}/{pro['bwd_GBps'] / pro['peak_GBps']:.2f}")
        if mp and mv:
            p.append(f"VMP/VM step {mp['step_ms'] / mv['step_ms']:.2f}")
        parts.append(" ".join(p))
    return "; ".join(parts) or "-"
