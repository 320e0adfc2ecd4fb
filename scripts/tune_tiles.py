#!/usr/bin/env python
"""Triton scan tile sweep: the VideoMambaPro layer (fwd+bwd) on the Triton backend for each candidate tile, in one
table against the tile ``TILE_TABLE`` picks.

For each shape (``--sizes`` x ``--frames``: E = 2d, l = 1 + 196 T) it times every candidate tile (``--tiles
BD,CHUNK,WARPS ...``; default: the tiles of ``TILE_TABLE`` plus neighbours, and always the tile ``scan_tile(d, l)``
picks for the shape) and prints the time per tile relative to the picked one, the registers / spill bytes of the
compiled kernels (``ptxas -v`` through ``mamba.ops.triton_aot.ptxas_usage``, on the JIT's own PTX) and the best
tile per shape. A faster tile goes into ``TILE_TABLE`` in ``mamba/ops/scan_triton.py`` only with
tests/ops/test_scan_triton_aot.py extended to it (no spills).

    python scripts/tune_tiles.py --sizes Ti S --frames 8 16
    python scripts/tune_tiles.py --sizes Ti --frames 64 --tiles 1,2048,16 1,4096,16 2,2048,16
    python scripts/tune_tiles.py --allow-cpu --tiles 4,4,1     # no GPU: the Triton interpreter, plumbing only

Exit status 1 when the picked tile fails or a measured row has no time.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import _bench  # noqa: E402  (scripts/_bench.py, beside this script)

# candidates around the table: two channels per program, shorter / longer chunks, fewer / more warps
SWEEP_EXTRA = ("1,2048,8", "2,2048,16", "1,4096,16", "1,1024,8", "1,1024,4", "2,512,8", "1,512,4")
CPU_SWEEP_TILES = ("4,4,1", "8,8,1")  # the interpreter: tiny tiles beside the table's tile


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


def parse_args(argv=None):
    p = _bench.gpu_parser(__doc__.split("\n")[0], backends=False)
    _bench.add_dtype(p)
    p.add_argument("--tiles", nargs="+", default=None, type=parse_tile, metavar="BD,CHUNK,WARPS",
                   help="candidate tiles (powers of two)")
    return p.parse_args(argv)


def jit_usage(tile):
    """(max registers, max spill bytes) of the compiled Triton scan kernels in the JIT cache for ``tile``, read by
    ``triton_aot.ptxas_usage`` from their PTX; None where the JIT cache cannot be read (the interpreter, another
    triton)."""
    try:
        import mamba.ops.scan_triton as st
        from mamba.ops.triton_aot import ptxas_usage

        regs, spills = [], []
        for kern in (st._scan_fwd_kernel, st._scan_bwd_kernel):
            for cache in kern.device_caches.values():
                for ck in cache[0].values():
                    names = ck.src.fn.arg_names
                    const = {names[k[0]]: v for k, v in ck.src.constants.items()}
                    if (const.get("BLOCK_C"), const.get("CHUNK"), ck.metadata.num_warps) == (
                            tile["block_d"], tile["chunk"], tile["num_warps"]):
                        usage = ptxas_usage(ck.asm["ptx"])
                        regs.append(usage["registers"])
                        spills.append(max(usage["spill_stores"], usage["spill_loads"]))
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
    from mamba.ops.scan_triton import bi_selective_scan_triton, scan_tile, triton_scan_config

    kw = _bench.VARIANTS["videomambapro"]
    for size, E, l, T in _bench.layer_shapes(args, device):
        table_tile = scan_tile(E, l)
        cands = sweep_tiles(args, device)
        if table_tile not in cands:
            cands.insert(0, table_tile)
        x = _bench.make_scan_inputs(args.scan_batch, E, _bench.N_STATE, l, dtype, device)
        args_ = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
        for tile in cands:
            row = dict(level="sweep", size=size, frames=T, l=l, E=E, batch=args.scan_batch, tile=tile_str(tile),
                       table=tile == table_tile)
            try:
                with triton_scan_config(**tile):
                    f, b, fb = _bench.time_fwd_bwd(timer, lambda a=args_: bi_selective_scan_triton(*a, **kw),
                                                   args.warmup, args.iters)
                row.update(fwd_ms=f, bwd_ms=b, fwd_bwd_ms=fb)
                usage = jit_usage(tile)
                if usage is not None:
                    row.update(max_regs=usage[0], max_spill=usage[1])
            except Exception as e:  # noqa: BLE001 - a tile that fails (out of resources...) is a row, not a crash
                row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            rows.append(row)
            print(_bench.fmt_row(row), flush=True)
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
            ratio = _bench.ratio(r["fwd_bwd_ms"], base and base["fwd_bwd_ms"])
            regs = str(r["max_regs"]) if "max_regs" in r else "-"
            spill = str(r["max_spill"]) if "max_spill" in r else "-"
            out.append(f"{size:8s} {T:3d} {r['l']:6d} {r['tile']:>8s} {r['fwd_ms']:8.3f} {r['bwd_ms']:8.3f} "
                       f"{r['fwd_bwd_ms']:8.3f} {ratio:>8s} {regs:>5s} {spill:>5s}  {note.strip()}")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    status, rows = _bench.run(args, "tune_tiles.py", lambda device, timer, rows: bench_sweep(
        args, device, _bench.torch_dtype(args.dtype), timer, rows), summarize_sweep)
    if status == 2:
        return status
    # every candidate measured, and the table's own tile among them
    table_ok = any(r.get("table") and "skipped" not in r for r in rows)
    return 1 if status or not table_ok or any("skipped" in r and r.get("table") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
