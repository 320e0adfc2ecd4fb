#!/usr/bin/env python
"""GPU benchmark of the bidirectional scan backends (torch / cuda / triton), scan level and model level.

Scan level: one bidirectional layer ``bi_selective_scan_fn`` at the shapes of VideoMamba Ti/S/M
(E = 2d = 384/768/1152, N = 16) for 8/16/32/64 frames (l = 1 + 196 T), VideoMambaPro options (residual
start in both directions, backward mask) vs VideoMamba (none). Reports forward and backward time
(median of CUDA-event timings) and the achieved bandwidth against the bytes that must move at least:

    forward : read u, delta, B, C per direction + z, write out
    backward: read u, delta, B, C per direction + z + dout, write du, ddelta, dB, dC per direction + dz

Model level: a training step (forward, backward, AdamW step, bf16 autocast) of ``videomambapro_<size>``
vs ``videomamba_<size>`` from ``timm.create_model`` on each backend: clips/s and peak memory.

    python scripts/bench_gpu.py                                   # everything (long: use --sizes/--frames)
    python scripts/bench_gpu.py --sizes Ti --frames 8 16 --no-model
    python scripts/bench_gpu.py --allow-cpu                        # no GPU: tiny shapes, Triton interpreter
    python scripts/bench_gpu.py --json results.json
    python scripts/bench_gpu.py --sweep --sizes Ti S --frames 8 16     # Triton tiles: one table, best per shape

Tile sweep (``--sweep``): times the VideoMambaPro layer (fwd+bwd) on the Triton backend for each candidate
tile (``--tiles BD,CHUNK,WARPS ...``; default: the tiles of ``TILE_TABLE`` plus neighbours) and prints one
table: time per tile relative to the tile ``scan_tile(d, l)`` picks for that shape, registers / spills of the
compiled kernels, the best tile per shape. A faster tile goes into ``TILE_TABLE`` in
``mamba/ops/scan_triton.py`` only with tests/ops/test_scan_triton_aot.py extended to it (no spills).

Without CUDA it exits with a message unless ``--allow-cpu`` (then TRITON_INTERPRET=1 is set before triton
is imported and tiny shapes run, which proves the plumbing, not the speed).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIZES = {"Ti": ("tiny", 192), "S": ("small", 384), "M": ("middle", 576)}
N_STATE = 16
VARIANTS = {  # scan options of one bidirectional layer
    "videomambapro": dict(residual=(True, True), masked=(False, True)),
    "videomamba": dict(residual=(False, False), masked=(False, False)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["Ti", "S", "M"], choices=list(SIZES))
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--backends", nargs="+", default=["torch", "cuda", "triton"], choices=["torch", "cuda", "triton"])
    p.add_argument("--scan_batch", type=int, default=1)
    p.add_argument("--model_batch", type=int, default=4)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="scan input dtype")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--no-scan", dest="scan", action="store_false")
    p.add_argument("--no-model", dest="model", action="store_false")
    p.add_argument("--allow-cpu", action="store_true", help="no GPU: run tiny shapes through the Triton interpreter")
    p.add_argument("--peak_GBps", type=float, default=None,
                   help="device memory bandwidth for the floor (default: measured with a large device copy)")
    p.add_argument("--json", default=None, help="also write all rows to this JSON file")
    p.add_argument("--sweep", action="store_true", help="time candidate Triton tiles instead (see the docstring)")
    p.add_argument("--tiles", nargs="+", default=None, type=parse_tile, metavar="BD,CHUNK,WARPS",
                   help="candidate tiles for --sweep (powers of two)")
    p.add_argument("--key_figures", default=None, metavar="JSON",
                   help="print the one-line key figures of an earlier --json file and exit (scripts/device_check.sh)")
    return p.parse_args(argv)


def parse_tile(text):
    """'8,16,4' -> {'block_d': 8, 'chunk': 16, 'num_warps': 4}."""
    try:
        bd, chunk, warps = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a tile is BLOCK_D,CHUNK,NUM_WARPS (e.g. 8,16,4), got {text!r}") from None
    for v in (bd, chunk, warps):
        if v < 1 or v & (v - 1):
            raise argparse.ArgumentTypeError(f"tile sizes must be powers of two, got {text!r}")
    return {"block_d": bd, "chunk": chunk, "num_warps": warps}


def tile_str(t):
    return f"{t['block_d']},{t['chunk']},{t['num_warps']}"


# candidates around the table: two channels per program, shorter / longer chunks, fewer / more warps
SWEEP_EXTRA = ("1,2048,8", "2,2048,16", "1,4096,16", "1,1024,8", "1,1024,4", "2,512,8", "1,512,4")
CPU_SWEEP_TILES = ("4,4,1", "8,8,1")  # the interpreter: tiny tiles beside the table's tile


# --------------------------------------------------------------------------------------------- timing


class Timer:
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


def reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device):
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")


def backend_available(name, device):
    from mamba.ops.backend import check_backend_available

    try:
        check_backend_available(name)
    except RuntimeError as e:
        return str(e)
    if name == "cuda" and device.type != "cuda":
        return "cuda backend needs a GPU"
    return None


# ------------------------------------------------------------------------------------------- scan level


def scan_bytes(b, E, N, l, elem, ndir=2):
    """The floor: bytes that forward and backward must move at least."""
    per_dir_in = 2 * b * E * l + 2 * b * N * l  # u, delta, B, C
    fwd = elem * (ndir * per_dir_in + b * E * l + b * E * l)  # + z, out
    bwd = elem * (ndir * per_dir_in + 2 * b * E * l) + elem * (ndir * per_dir_in + b * E * l)  # + z, dout | + dz
    return fwd, bwd


def make_scan_inputs(b, E, N, l, dtype, device, seed=0):
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


def measure_peak_bandwidth(device, timer, mib=1024):
    """GB/s of a large device-to-device copy (read + write): the bandwidth the floor is measured against."""
    import torch

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


def bench_scan(args, device, dtype, timer, rows):
    import torch

    from mamba.ops.backend import set_scan_backend
    from mamba.ops.selective_scan import bi_selective_scan_fn

    elem = torch.tensor([], dtype=dtype).element_size()
    shapes = [(s, 2 * SIZES[s][1], 1 + 196 * T, T) for s in args.sizes for T in args.frames]
    if device.type != "cuda":  # interpreter: tiny stand-ins
        shapes = [("tiny-cpu", 16, 1 + 4 * 2, 2)]
    for size, E, l, T in shapes:
        b = args.scan_batch
        fwd_b, bwd_b = scan_bytes(b, E, N_STATE, l, elem)
        if device.type == "cuda":
            x = make_scan_inputs(b, E, N_STATE, l, dtype, device)
            run = upstream_plain_x2(x)
            if run is not None:
                row = dict(level="scan", size=size, frames=T, l=l, E=E, batch=b, backend="mamba_ssm_x2",
                           variant="videomamba")

                def fwd_bwd_up(run=run, shape=(b, E, l)):
                    run().backward(torch.ones(*shape, device=device, dtype=dtype))

                with torch.no_grad():
                    t_f = timer.measure(run, args.warmup, args.iters)
                t_fb = timer.measure(fwd_bwd_up, args.warmup, args.iters)
                row.update(fwd_ms=1e3 * t_f, bwd_ms=1e3 * max(t_fb - t_f, 1e-9), fwd_bwd_ms=1e3 * t_fb)
                rows.append(row)
                print(_fmt(row), flush=True)
            x = None
        for backend in args.backends:
            why = backend_available(backend, device)
            if why:
                rows.append(dict(level="scan", size=size, frames=T, backend=backend, skipped=why))
                continue
            for variant, kw in VARIANTS.items():
                row = dict(level="scan", size=size, frames=T, l=l, E=E, batch=b, backend=backend, variant=variant)
                try:
                    x = make_scan_inputs(b, E, N_STATE, l, dtype, device)
                    set_scan_backend(backend)

                    def fwd(x=x, kw=kw):
                        with torch.no_grad():
                            return bi_selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                                        x["delta_bias"], True, **kw)

                    def fwd_bwd(x=x, kw=kw):
                        out = bi_selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                                   x["delta_bias"], True, **kw)
                        out.backward(torch.ones_like(out))

                    reset_peak(device)
                    t_f = timer.measure(fwd, args.warmup, args.iters)
                    t_fb = timer.measure(fwd_bwd, args.warmup, args.iters)
                    t_b = max(t_fb - t_f, 1e-9)
                    row.update(fwd_ms=1e3 * t_f, bwd_ms=1e3 * t_b, fwd_bwd_ms=1e3 * t_fb, fwd_GBps=fwd_b / t_f / 1e9,
                               bwd_GBps=bwd_b / t_b / 1e9, floor_fwd_MB=fwd_b / 1e6, floor_bwd_MB=bwd_b / 1e6,
                               peak_MiB=peak_mib(device))
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of memory"
                finally:
                    set_scan_backend(None)
                    x = None
                rows.append(row)
                print(_fmt(row), flush=True)


# ------------------------------------------------------------------------------------------ model level


def bench_model(args, device, timer, rows):
    import torch

    try:
        import timm

        import models  # noqa: F401  (registers the models in timm)
    except ImportError as e:
        rows.append(dict(level="model", skipped=f"models/ not importable: {e}"))
        print(f"model level skipped: models/ not importable ({e})", flush=True)
        return
    from mamba.ops.backend import set_scan_backend

    if device.type == "cuda":
        configs = [(s, SIZES[s][0], T, 224, args.model_batch) for s in args.sizes for T in args.frames]
    else:
        configs = [("test", "test", 2, 32, 2)]
    for size, suffix, T, img, b in configs:
        for backend in args.backends:
            why = backend_available(backend, device)
            if why:
                rows.append(dict(level="model", size=size, frames=T, backend=backend, skipped=why))
                continue
            for variant in VARIANTS:
                row = dict(level="model", size=size, frames=T, batch=b, backend=backend, variant=variant)
                model = opt = None
                try:
                    set_scan_backend(backend)
                    model = timm.create_model(f"{variant}_{suffix}", num_classes=400, num_frames=T, img_size=img)
                    model = model.to(device).train()
                    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                    clip = torch.randn(b, 3, T, img, img, device=device)
                    target = torch.randint(0, 400, (b,), device=device)
                    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

                    def step(model=model, opt=opt, clip=clip, target=target, amp=amp):
                        with amp:
                            loss = torch.nn.functional.cross_entropy(model(clip), target)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()

                    reset_peak(device)
                    t = timer.measure(step, args.warmup, args.iters)
                    row.update(step_ms=1e3 * t, clips_per_s=b / t, peak_MiB=peak_mib(device))
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of memory"
                finally:
                    set_scan_backend(None)
                    model = opt = None
                rows.append(row)
                print(_fmt(row), flush=True)


# ------------------------------------------------------------------------------------------- tile sweep


def _jit_usage(tile):
    """(max registers, max spill bytes) of the compiled Triton scan kernels cached for ``tile``; None where the
    JIT cache cannot be read (the interpreter, another triton)."""
    try:
        import mamba.ops.scan_triton as st

        regs, spills = [], []
        for kern in (st._scan_fwd_kernel, st._scan_bwd_kernel):
            for cache in kern.device_caches.values():
                for ck in cache[0].values():
                    names = ck.src.fn.arg_names
                    const = {names[k[0]]: v for k, v in ck.src.constants.items()}
                    if (const.get("BLOCK_C"), const.get("CHUNK"), ck.metadata.num_warps) == (
                            tile["block_d"], tile["chunk"], tile["num_warps"]):
                        ck._init_handles()
                        regs.append(ck.n_regs)
                        spills.append(ck.n_spills)
        return (max(regs), max(spills)) if regs else None
    except Exception:  # noqa: BLE001 - best effort: the column shows '-'
        return None


def sweep_tiles(args, device):
    """Candidate tiles: --tiles, else the table's tiles and SWEEP_EXTRA (CPU: tiny ones), de-duplicated."""
    from mamba.ops.scan_triton import TILE_TABLE

    if args.tiles:
        cands = list(args.tiles)
    elif device.type == "cuda":
        cands = [t for *_, t in TILE_TABLE] + [parse_tile(t) for t in SWEEP_EXTRA]
    else:
        cands = [parse_tile(t) for t in CPU_SWEEP_TILES]
    out = []
    for t in cands:
        if t not in out:
            out.append(t)
    return out


def bench_sweep(args, device, dtype, timer, rows):
    """One row per (shape, tile): fwd / bwd time of the VideoMambaPro layer on the Triton backend."""
    import torch

    from mamba.ops.scan_triton import bi_selective_scan_triton, scan_tile, triton_scan_config

    if device.type == "cuda":
        shapes = [(s, 2 * SIZES[s][1], 1 + 196 * T, T) for s in args.sizes for T in args.frames]
    else:
        shapes = [("tiny-cpu", 16, 1 + 4 * 2, 2)]
    kw = VARIANTS["videomambapro"]
    for size, E, l, T in shapes:
        table_tile = scan_tile(E, l)
        cands = sweep_tiles(args, device)
        if table_tile not in cands:
            cands.insert(0, table_tile)
        x = make_scan_inputs(args.scan_batch, E, N_STATE, l, dtype, device)
        args_ = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
        for tile in cands:
            row = dict(level="sweep", size=size, frames=T, l=l, E=E, batch=args.scan_batch, tile=tile_str(tile),
                       table=tile == table_tile)
            try:
                with triton_scan_config(**tile):
                    def fwd(args_=args_):
                        with torch.no_grad():
                            return bi_selective_scan_triton(*args_, **kw)

                    def fwd_bwd(args_=args_):
                        out = bi_selective_scan_triton(*args_, **kw)
                        out.backward(torch.ones_like(out))

                    t_f = timer.measure(fwd, args.warmup, args.iters)
                    t_fb = timer.measure(fwd_bwd, args.warmup, args.iters)
                row.update(fwd_ms=1e3 * t_f, bwd_ms=1e3 * max(t_fb - t_f, 1e-9), fwd_bwd_ms=1e3 * t_fb)
                usage = _jit_usage(tile)
                if usage is not None:
                    row.update(max_regs=usage[0], max_spill=usage[1])
            except Exception as e:  # noqa: BLE001 - a tile that fails (out of resources...) is a row, not a crash
                row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            rows.append(row)
            print(_fmt(row), flush=True)
        x = None


def summarize_sweep(rows):
    """One table: per shape and tile, times and the ratio to the tile the table picks (lower is better), the
    compiled kernels' registers / spill bytes, and the best tile per shape (*)."""
    sweep = [r for r in rows if r.get("level") == "sweep"]
    if not sweep:
        return ""
    shapes = []
    for r in sweep:
        if (r["size"], r["frames"]) not in shapes:
            shapes.append((r["size"], r["frames"]))
    out = ["triton tile sweep (VideoMambaPro layer fwd+bwd; tile = block_d,chunk,num_warps; "
           "vs table = time / time of the table's tile; * best)",
           f"{'size':8s} {'T':>3s} {'l':>6s} {'tile':>8s} {'fwd ms':>8s} {'bwd ms':>8s} {'f+b ms':>8s} "
           f"{'vs table':>8s} {'regs':>5s} {'spill':>5s}  note"]
    for size, T in shapes:
        rs = [r for r in sweep if (r["size"], r["frames"]) == (size, T)]
        ok = [r for r in rs if "skipped" not in r]
        base = next((r for r in ok if r["table"]), None)
        best = min(ok, key=lambda r: r["fwd_bwd_ms"]) if ok else None
        for r in rs:
            note = ("table" if r["table"] else "") + (" *" if r is best else "")
            if "skipped" in r:
                out.append(f"{size:8s} {T:3d} {r['l']:6d} {r['tile']:>8s} {'failed: ' + r['skipped']}")
                continue
            ratio = _r(r["fwd_bwd_ms"], base and base["fwd_bwd_ms"])
            regs = str(r["max_regs"]) if "max_regs" in r else "-"
            spill = str(r["max_spill"]) if "max_spill" in r else "-"
            out.append(f"{size:8s} {T:3d} {r['l']:6d} {r['tile']:>8s} {r['fwd_ms']:8.3f} {r['bwd_ms']:8.3f} "
                       f"{r['fwd_bwd_ms']:8.3f} {ratio:>8s} {regs:>5s} {spill:>5s}  {note.strip()}")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- output


def _fmt(row):
    keys = [k for k in row if k not in ("level",)]
    return f"[{row['level']}] " + "  ".join(
        f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys
    )


def _r(a, b):
    return f"{a / b:.2f}" if a is not None and b is not None and b > 0 else "-"


def summarize(rows, peak_GBps=float("nan")):
    """Two tables of ratios side by side. Scan: VideoMambaPro (pro) vs VideoMamba (plain) fwd+bwd time on the
    same backend, pro vs two plain mamba-ssm calls, vs the torch backend, and achieved bandwidth as a fraction
    of ``peak_GBps`` (>= 0.5 is the target at l >= 3137). Model: training-step time pro/plain and peak memory
    relative to the smallest frame count."""
    by = {}
    for r in rows:
        if "skipped" not in r:
            by.setdefault((r["level"], r["size"], r["frames"], r["backend"]), {})[r["variant"]] = r
    out = []
    scan = sorted(k for k in by if k[0] == "scan" and k[3] != "mamba_ssm_x2")
    if scan:
        out.append(f"scan (bidirectional layer, fwd+bwd; bandwidth fraction vs {peak_GBps:.0f} GB/s)")
        out.append(f"{'size':8s} {'T':>3s} {'backend':8s} {'pro ms':>9s} {'plain ms':>9s} {'pro/plain':>9s} "
                   f"{'pro/mssm2':>9s} {'torch/pro':>9s} {'fwd bw':>7s} {'bwd bw':>7s}")
        for key in scan:
            _, size, T, bk = key
            pro, plain = by[key].get("videomambapro"), by[key].get("videomamba")
            up = by.get(("scan", size, T, "mamba_ssm_x2"), {}).get("videomamba")
            tor = by.get(("scan", size, T, "torch"), {}).get("videomambapro")
            t = lambda r: r["fwd_bwd_ms"] if r else None  # noqa: E731
            frac = lambda r, k: f"{r[k] / peak_GBps:.2f}" if r and peak_GBps == peak_GBps else "-"  # noqa: E731
            out.append(f"{size:8s} {T:3d} {bk:8s} {t(pro) or float('nan'):9.2f} {t(plain) or float('nan'):9.2f} "
                       f"{_r(t(pro), t(plain)):>9s} {_r(t(pro), t(up)):>9s} {_r(t(tor), t(pro)):>9s} "
                       f"{frac(pro, 'fwd_GBps'):>7s} {frac(pro, 'bwd_GBps'):>7s}")
    model = sorted(k for k in by if k[0] == "model")
    if model:
        out.append("\nmodel (training step)")
        out.append(f"{'size':8s} {'T':>3s} {'backend':8s} {'pro clip/s':>10s} {'plain clip/s':>12s} "
                   f"{'pro/plain t':>11s} {'pro MiB':>9s} {'plain MiB':>9s} {'MiB/T_min':>9s}")
        for key in model:
            _, size, T, bk = key
            pro, plain = by[key].get("videomambapro"), by[key].get("videomamba")
            t_min = min(k[2] for k in model if k[1] == size and k[3] == bk)
            base = by.get(("model", size, t_min, bk), {}).get("videomambapro")
            g = lambda r, k: r[k] if r else float("nan")  # noqa: E731
            out.append(f"{size:8s} {T:3d} {bk:8s} {g(pro, 'clips_per_s'):10.2f} {g(plain, 'clips_per_s'):12.2f} "
                       f"{_r(pro and pro['step_ms'], plain and plain['step_ms']):>11s} {g(pro, 'peak_MiB'):9.0f} "
                       f"{g(plain, 'peak_MiB'):9.0f} {_r(pro and pro['peak_MiB'], base and base['peak_MiB']):>9s}")
    return "\n".join(out)


def key_figures(rows, backend="triton"):
    """One line per run for scripts/device_check.sh: per size (first frame count), the VideoMambaPro layer's
    fwd+bwd ms on ``backend``, its ratio to two mamba-ssm calls, its fwd / bwd bandwidth as a fraction of the
    device copy bandwidth, and the VideoMambaPro / VideoMamba training-step time ratio."""
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


def main(argv=None):
    args = parse_args(argv)
    if args.key_figures:
        with open(args.key_figures) as f:
            print(key_figures(json.load(f)))
        return 0
    if args.allow_cpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (kernels decorate at import)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("bench_gpu.py needs a CUDA GPU (none found). Use scripts/bench_scan.py / bench_model.py for CPU "
              "figures, or --allow-cpu to run tiny shapes through the Triton interpreter (plumbing only).",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if device.type == "cpu":
        args.warmup, args.iters = 0, 1
        print("CPU run (Triton interpreter): tiny shapes, timings are not meaningful", flush=True)
    else:
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    timer = Timer(device)
    peak = args.peak_GBps or measure_peak_bandwidth(device, timer)
    if device.type == "cuda":
        print(f"device copy bandwidth: {peak:.0f} GB/s", flush=True)
    rows = []
    with contextlib.ExitStack() as stack:
        if device.type == "cpu" and "triton" in args.backends and not args.sweep:
            # small tiles: the interpreter is slow per tile (the sweep sets its own)
            from mamba.ops.scan_triton import triton_scan_config

            stack.enter_context(triton_scan_config(block_d=8, chunk=8))
        if args.sweep:
            bench_sweep(args, device, dtype, timer, rows)
        else:
            if args.scan:
                bench_scan(args, device, dtype, timer, rows)
            if args.model:
                bench_model(args, device, timer, rows)
    for r in rows:
        if "skipped" in r:
            print(f"skipped: {r}", flush=True)
        elif r["level"] == "scan" and peak == peak:
            r["peak_GBps"] = peak  # the floor's reference, for readers of --json
    print("\n" + (summarize_sweep(rows) if args.sweep else summarize(rows, peak)), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    failed = [r for r in rows if "skipped" not in r and not any(k.endswith("_ms") for k in r)]
    if args.sweep:  # every candidate measured, and the table's own tile among them
        failed += [r for r in rows if "skipped" in r and r.get("table")]
        failed += [] if any(r.get("table") and "skipped" not in r for r in rows) else [None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
