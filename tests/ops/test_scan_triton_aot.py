"""Every Triton kernel of the project compiled ahead of time for real GPUs (sm_80, sm_90), without a GPU:
``ptxas -v`` on the PTX must report 0 bytes of register spills.

The launches compiled are the ones the host code makes: ``mamba.ops.scan_triton.record_launches`` runs a
layer's forward and backward on CPU stand-ins (VideoMamba-Ti shapes, the mixer's strides) with the kernels
replaced by recorders, so each compile carries the constexprs, dtypes and alignments a GPU run specializes
on. The default suite checks the default tile on the VideoMambaPro and VideoMamba layers (bf16, as trained)
and fp32 inputs, plus every other TILE_TABLE tile on the VideoMambaPro layer; ``-m slow`` checks the full
matrix (every flag combination x fp32/bf16 x both layouts x both entries x every table tile).

Runs in a subprocess: other test modules set TRITON_INTERPRET=1 in this process, and with it triton builds
interpreter-only kernels that cannot be compiled.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHS = (80, 90)

_CHILD = r"""
import importlib, json, sys
from triton.runtime.jit import JITFunction
from mamba.ops import triton_aot
import mamba.ops.scan_triton as st
req = json.load(sys.stdin)
mods = [importlib.import_module(m) for m in req["modules"]]
defined = sorted(f"{m.__name__}.{name}" for m in mods for name, obj in vars(m).items()
                 if isinstance(obj, JITFunction) and name.endswith("_kernel"))
missing = [m.__name__ for m in mods if not all(hasattr(m, a) for a in ("AOT_KERNELS", "aot_jobs", "aot_record"))]
rows = triton_aot.aot_report([m for m in mods if m.__name__ not in missing], req["matrix"], req["archs"],
                             log=lambda r: print(json.dumps(r), file=sys.stderr, flush=True))
other_tiles = [t for *_, t in st.TILE_TABLE if t != st.DEFAULT_TILE]
json.dump(dict(rows=rows, defined=defined, missing=missing, default_tile=st.DEFAULT_TILE, other_tiles=other_tiles),
          sys.stdout)
"""


_SKIP_DIRS = {"tests", "data", "output", "work_dirs", "venv", "node_modules", "__pycache__"}


def _kernel_modules():
    """Importable modules of the project that define Triton kernels (tests, data and hidden folders skipped)."""
    mods = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for fn in filenames:
            if not fn.endswith(".py"):
                continue
            path = os.path.join(dirpath, fn)
            with open(path, encoding="utf-8", errors="replace") as f:
                if "@triton.jit" in f.read():
                    mods.append(os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."))
    return sorted(mods)


def _compile(matrix, timeout):
    """aot_report of a named job matrix (see _CHILD) in a fresh interpreter without TRITON_INTERPRET."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    req = dict(matrix=matrix, archs=list(ARCHS), modules=_kernel_modules())
    r = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(req), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-6000:]
    return json.loads(r.stdout)


def _tile(r, default_tile):
    return {**default_tile, **(r["job"].get("tile") or {})}


def _dtype(r):
    return r["job"].get("dtype", "bf16")


def _table(rows, default_tile):
    lines = [f"{'arch':6s} {'kernel':44s} {'dtype':5s} {'layout':10s} {'tile (bd,ch,w)':15s} {'regs':>4s} "
             f"{'spill st/ld':>11s}"]
    for r in rows:
        t = _tile(r, default_tile)
        lines.append(f"{r['gpu']:6s} {r['kernel']:44s} {_dtype(r):5s} {r['job'].get('layout', 'model'):10s} "
                     f"{t['block_d']:>3d},{t['chunk']:>3d},{t['num_warps']:>2d}       {r['registers']:4d} "
                     f"{r['spill_stores']:>5d}/{r['spill_loads']:<5d}")
    return "\n".join(lines)


def _check_no_spills(rep):
    rows, default_tile = rep["rows"], rep["default_tile"]
    assert not rep["missing"], f"kernel modules without the AOT protocol (mamba.ops.triton_aot): {rep['missing']}"
    print("\n" + _table(rows, default_tile))  # registers used, shown with -s / on failure
    spilled = [r for r in rows if r["spill_stores"] > 0 or r["spill_loads"] > 0]
    assert not spilled, "register spills:\n" + _table(spilled, default_tile)
    assert all(0 < r["registers"] <= 255 for r in rows)


@pytest.fixture(scope="module")
def default_report():
    return _compile("default", timeout=900)


def test_default_tile_compiles_without_spills(default_report):
    """VideoMambaPro / VideoMamba layers, forward and backward kernels of both directions, sm_80 and sm_90."""
    rows = default_report["rows"]
    assert {r["gpu"] for r in rows} == {"sm_80", "sm_90a"}  # sm_90 PTX targets sm_90a
    assert all(_tile(r, default_report["default_tile"]) == default_report["default_tile"] for r in rows)
    _check_no_spills(default_report)


def test_every_kernel_and_direction_role_is_compiled(default_report):
    """Every ``*_kernel`` of the project is compiled, in each role the bidirectional layer launches it."""
    rows = default_report["rows"]
    defined = {name.rsplit(".", 1)[1] for name in default_report["defined"]}
    assert {"_scan_fwd_kernel", "_scan_bwd_kernel"} <= defined
    for gpu in ("sm_80", "sm_90a"):  # a kernel nobody launches here needs its launches in the AOT jobs
        assert defined <= {r["name"] for r in rows if r["gpu"] == gpu}, defined
    compiled = {(r["gpu"], r["kernel"], _dtype(r)) for r in rows}
    for gpu in ("sm_80", "sm_90a"):
        for dtype in ("bf16", "fp32"):
            # forward direction into the accumulator; backward direction reversed, masked, gated, accumulating
            assert (gpu, "fwd RESIDUAL+WRITE_ACC", dtype) in compiled
            assert (gpu, "fwd REVERSE+RESIDUAL+MASKED+HAS_Z+ACC_IN", dtype) in compiled
            assert (gpu, "bwd RESIDUAL+HAS_Z", dtype) in compiled
            assert (gpu, "bwd REVERSE+RESIDUAL+MASKED+HAS_Z+DZ_ACC", dtype) in compiled
        assert (gpu, "fwd REVERSE+HAS_Z+ACC_IN", "bf16") in compiled  # VideoMamba: no mask, no residual
        assert (gpu, "bwd REVERSE+HAS_Z+DZ_ACC", "bf16") in compiled


def test_table_tiles_compile_without_spills():
    """Every other TILE_TABLE tile on the VideoMambaPro layer (bf16, the mixer's layout), sm_80 and sm_90."""
    rep = _compile("table", timeout=900)
    rows, tiles = rep["rows"], rep["other_tiles"]
    assert tiles, "the table has tiles besides the default"
    for t in tiles:  # the layer's 4 launches (2 directions x forward / backward) per arch
        assert sum(_tile(r, rep["default_tile"]) == t for r in rows) == 4 * len(ARCHS), t
    _check_no_spills(rep)


@pytest.mark.slow
def test_full_matrix_compiles_without_spills():
    """Every flag combination (mask x residual x mask_drops_D x gate) x fp32/bf16 x both layouts x the
    bidirectional and single-direction entries x every table tile x sm_80/sm_90."""
    _check_no_spills(_compile("full", timeout=6 * 3600))
