"""Every Triton kernel of the project compiled ahead of time for real GPUs (sm_80, sm_90), without a GPU:
``ptxas -v`` on the PTX must report 0 bytes of register spills, and the scan backward must keep >= 16 warps
resident per SM (``triton_aot.occupancy``).

The launches compiled are the ones the host code makes: each kernel module's ``aot_record`` (for the scan,
``mamba.ops.triton_aot.record_scan_launches``) runs a layer's forward and backward on CPU stand-ins (VideoMamba-Ti
shapes, the mixer's feature-major strides) with the kernels replaced by recorders, so each compile carries the
constexprs, dtypes and alignments a GPU run specializes on. The default suite checks the default tile on the
mixer entry's VideoMambaPro and VideoMamba layers (bf16, as trained) and the public bidirectional entry on fp32,
plus every other TILE_TABLE tile on the VideoMambaPro layer; ``-m slow`` checks the full matrix (every flag
combination x fp32/bf16 x entries x layouts, and every table tile).

Open target (strict xfail below, so that the day it holds the marker must go): at 16 warps (128 registers) some
scan backward variants spill 8-32 bytes (VideoMambaPro's mixer layer: 16 on sm_80, 0 on sm_90); a ceiling keeps
that from growing.

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
    lines = [f"{'arch':6s} {'kernel':58s} {'dtype':5s} {'entry':6s} {'layout':10s} {'tile (bd,ch,w)':15s} "
             f"{'regs':>4s} {'spill st/ld':>11s} {'warps/SM':>8s}"]
    for r in rows:
        t = _tile(r, default_tile)
        lines.append(f"{r['gpu']:6s} {r['kernel']:58s} {_dtype(r):5s} {r['job'].get('entry', 'mixer'):6s} "
                     f"{r['job'].get('layout', 'mixer'):10s} {t['block_d']:>3d},{t['chunk']:>4d},{t['num_warps']:>2d}"
                     f"      {r['registers']:4d} {r['spill_stores']:>5d}/{r['spill_loads']:<5d} "
                     f"{r['warps_per_sm']:>8d}")
    return "\n".join(lines)


BWD_SPILL_CEILING = 32  # bytes: the scan backward's spills today (0-32), until the open target holds


def _spills(r):
    return max(r["spill_stores"], r["spill_loads"])


def _is_scan_bwd(r):
    return r["name"] == "_scan_bwd_kernel"


def _check_no_spills(rep):
    rows, default_tile = rep["rows"], rep["default_tile"]
    assert not rep["missing"], f"kernel modules without the AOT protocol (mamba.ops.triton_aot): {rep['missing']}"
    print("\n" + _table(rows, default_tile))  # registers used, shown with -s / on failure
    spilled = [r for r in rows if _spills(r) > 0 and not _is_scan_bwd(r)]
    assert not spilled, "register spills:\n" + _table(spilled, default_tile)
    over = [r for r in rows if _is_scan_bwd(r) and _spills(r) > BWD_SPILL_CEILING]
    assert not over, f"scan backward spills over {BWD_SPILL_CEILING} bytes:\n" + _table(over, default_tile)
    assert all(0 < r["registers"] <= 255 for r in rows)


@pytest.fixture(scope="module")
def default_report():
    return _compile("default", timeout=900)


def test_default_tile_compiles_without_spills(default_report):
    """Mixer VideoMambaPro / VideoMamba layers and the public bidirectional entry, forward and backward kernels,
    sm_80 and sm_90."""
    rows = default_report["rows"]
    assert {r["gpu"] for r in rows} == {"sm_80", "sm_90a"}  # sm_90 PTX targets sm_90a
    assert all(_tile(r, default_report["default_tile"]) == default_report["default_tile"] for r in rows)
    _check_no_spills(default_report)


def test_scan_backward_keeps_16_warps_resident(default_report):
    """>= 16 resident warps per SM for the scan backward (registers, shared memory and warps of the compiled
    kernel, the CUDA occupancy rules), on sm_80 and sm_90, at the default tile."""
    rows = [r for r in default_report["rows"] if _is_scan_bwd(r)]
    assert {r["gpu"] for r in rows} == {"sm_80", "sm_90a"}
    low = [r for r in rows if r["warps_per_sm"] < 16]
    assert not low, "fewer than 16 resident warps:\n" + _table(low, default_report["default_tile"])


@pytest.mark.xfail(strict=True, reason="open target: some scan backward variants spill 8-32 bytes at 16 warps "
                                       "(128 registers per thread)")
def test_scan_backward_compiles_without_spills(default_report):
    spilled = [r for r in default_report["rows"] if _is_scan_bwd(r) and _spills(r) > 0]
    assert not spilled, "register spills:\n" + _table(spilled, default_report["default_tile"])


def test_every_kernel_and_direction_role_is_compiled(default_report):
    """Every ``*_kernel`` of the project is compiled, in each role a bidirectional layer launches it: both
    directions in one forward and one backward launch, the mixer's low-rank delta / A_log / out_z and the public
    entry's delta tensor."""
    rows = default_report["rows"]
    defined = {name.rsplit(".", 1)[1] for name in default_report["defined"]}
    assert {"_scan_fwd_kernel", "_scan_bwd_kernel"} <= defined
    for gpu in ("sm_80", "sm_90a"):  # a kernel nobody launches here needs its launches in the AOT jobs
        assert defined <= {r["name"] for r in rows if r["gpu"] == gpu}, defined
    compiled = {(r["gpu"], r["kernel"], _dtype(r)) for r in rows}
    for gpu in ("sm_80", "sm_90a"):
        # VideoMambaPro mixer (bf16): residual both, mask on direction 1, gate, out_z recomputed in the backward
        assert (gpu, "fwd x2 RESIDUAL0+RESIDUAL1+MASKED1+LOW_RANK+A_LOG+HAS_Z", "bf16") in compiled
        assert (gpu, "bwd x2 RESIDUAL0+RESIDUAL1+MASKED1+LOW_RANK+A_LOG+HAS_Z+WANT_OZ", "bf16") in compiled
        # VideoMamba mixer: no mask, no residual
        assert (gpu, "fwd x2 LOW_RANK+A_LOG+HAS_Z", "bf16") in compiled
        assert (gpu, "bwd x2 LOW_RANK+A_LOG+HAS_Z+WANT_OZ", "bf16") in compiled
        # bi_selective_scan_triton on fp32: delta tensor, A given
        assert (gpu, "fwd x2 RESIDUAL0+RESIDUAL1+MASKED1+HAS_Z", "fp32") in compiled
        assert (gpu, "bwd x2 RESIDUAL0+RESIDUAL1+MASKED1+HAS_Z", "fp32") in compiled


def test_table_tiles_compile_without_spills():
    """Every other TILE_TABLE tile on the mixer's VideoMambaPro layer (bf16), sm_80 and sm_90."""
    rep = _compile("table", timeout=900)
    rows, tiles = rep["rows"], rep["other_tiles"]
    assert tiles, "the table has tiles besides the default"
    for t in tiles:  # the layer's 2 launches (forward and backward, both directions each) per arch
        assert sum(_tile(r, rep["default_tile"]) == t for r in rows) == 2 * len(ARCHS), t
    _check_no_spills(rep)


@pytest.mark.slow
def test_full_matrix_compiles_without_spills():
    """Every flag combination (mask x residual x mask_drops_D x gate) x fp32/bf16 x the mixer, bidirectional and
    single-direction entries x both layouts on the default tile, and every flag combination on every table tile,
    x sm_80/sm_90."""
    _check_no_spills(_compile("full", timeout=6 * 3600))
