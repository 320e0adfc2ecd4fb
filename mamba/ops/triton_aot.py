"""Ahead-of-time compilation of the project's Triton kernels for real GPUs, without one.

Tools, not kernels: the kernel modules (``mamba/ops/*_triton.py``) keep their kernels and host code; this module
records the launches their real host code makes (kernels replaced by recorders, so the launches carry exactly the
constexprs, dtypes, strides and alignments a GPU run specializes on), compiles each distinct launch with
``triton.compile`` for ``sm_<arch>`` and reads ``ptxas -v`` (the ptxas shipped with triton) for registers and
spills, and derives the occupancy (resident warps per SM) from registers, shared memory and warps.

A kernel module takes part by defining:

* ``AOT_KERNELS``: the names of its kernel globals (Triton JIT functions called as ``kernel[grid](...)``);
* ``aot_jobs(matrix) -> list[dict]``: JSON-able jobs for ``matrix`` in ``("default", "table", "full")``;
* ``aot_record(job) -> list[(kernel, grid, args, kwargs)]``: runs the module's host code for one job on CPU
  stand-in tensors inside :func:`recording` and returns the recorded launches;
* optionally ``aot_describe(kernel, kwargs) -> str``: a short name of a launch (role flags), for tables.

The scan kernels' jobs are written here (``record_scan_launches``: one layer's forward and backward through the
real host code; ``scan_aot_jobs``, ``scan_aot_record``, ``describe_scan_launch``; ``recorded_scan_plan`` reads a
recorded scan launch's programs and chunk iterations); ``mamba/ops/scan_triton.py`` delegates its protocol to them.

Used by ``tests/ops/test_scan_triton_aot.py`` (fails on any spill), ``scripts/profile_block.py`` and
``scripts/tune_tiles.py`` (``ptxas_usage``: the one reader of registers and spills).
Importing this module needs triton; compiling needs ``TRITON_INTERPRET`` unset when the kernel module was imported.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time

import torch

__all__ = ["LaunchRecorder", "recording", "is_recording", "compile_launch", "ptxas_usage", "launch_key",
           "kernel_name", "occupancy", "aot_report", "SM_LIMITS", "record_scan_launches", "recorded_scan_plan",
           "describe_scan_launch", "scan_aot_jobs", "scan_aot_record", "SCAN_VARIANTS", "SCAN_LAYOUTS",
           "SCAN_ENTRIES"]

# per-SM limits used for occupancy: registers, shared memory (bytes usable by blocks), warps, blocks
SM_LIMITS = {
    80: dict(registers=65536, shared=167936, warps=64, blocks=32),  # A100: 164 KiB
    90: dict(registers=65536, shared=232448, warps=64, blocks=32),  # H100 / H200: 227 KiB
}
_REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256


class LaunchRecorder:
    """Stands in for a kernel: records ``kernel[grid](*args, **kwargs)`` instead of running it."""

    def __init__(self, kernel, calls):
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.kernel, grid, args, kwargs))


_depth = 0


def is_recording() -> bool:
    """True inside :func:`recording` (host code may then accept CPU tensors: nothing executes)."""
    return _depth > 0


@contextlib.contextmanager
def recording(*modules):
    """Replace every kernel named in each module's ``AOT_KERNELS`` by a recorder; yields the list of launches
    ``(kernel, grid, args, kwargs)`` in call order. The host code runs as on a GPU, on CPU tensors."""
    global _depth
    calls = []
    saved = []
    for mod in modules:
        for name in mod.AOT_KERNELS:
            kernel = getattr(mod, name)
            saved.append((mod, name, kernel))
            setattr(mod, name, LaunchRecorder(kernel, calls))
    _depth += 1
    try:
        yield calls
    finally:
        _depth -= 1
        for mod, name, kernel in saved:
            setattr(mod, name, kernel)


def kernel_name(kernel) -> str:
    return getattr(kernel, "fn", kernel).__name__


def compile_launch(kernel, args, kwargs, arch: int):
    """``triton.compile`` of one recorded launch for ``sm_<arch>``, specialized as the JIT would at launch
    (argument types, divisibility, constexprs, num_warps). Needs no GPU and no driver."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    if not isinstance(kernel, JITFunction):
        raise RuntimeError(f"{kernel!r} is not a compiled-mode kernel: ahead-of-time compilation needs "
                           "TRITON_INTERPRET unset when the kernel module is imported")
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def ptxas_usage(ptx: str) -> dict:
    """``ptxas -v`` of a PTX text (the ptxas shipped with triton) for the arch named on its ``.target`` line
    (sm_90a for sm_90). Returns gpu, registers, spill_stores / spill_loads / stack bytes."""
    from triton.backends.nvidia.compiler import get_ptxas

    m = re.search(r"^\s*\.target\s+(sm_(\d+)\w*)", ptx, re.M)
    if m is None:
        raise ValueError("no .target line in the PTX")
    gpu, cap = m.group(1), int(m.group(2))
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(cap).path, "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}", src,
               "-o", src + ".o"]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ptxas failed ({' '.join(cmd)}):\n{r.stderr}")
    log = r.stderr

    def num(pattern):
        found = re.findall(pattern, log)
        if not found:
            raise RuntimeError(f"no {pattern!r} in the ptxas log:\n{log}")
        return max(int(x) for x in found)

    return dict(gpu=gpu, registers=num(r"Used (\d+) registers"), spill_stores=num(r"(\d+) bytes spill stores"),
                spill_loads=num(r"(\d+) bytes spill loads"), stack=num(r"(\d+) bytes stack frame"))


def occupancy(registers: int, num_warps: int, shared: int, arch: int) -> dict:
    """Resident blocks and warps per SM for a kernel using ``registers`` per thread, ``shared`` bytes of shared
    memory per block and ``num_warps`` warps per block, on ``sm_<arch>`` (the CUDA occupancy rules: registers
    allocated per warp in units of 256, block limits by warps, shared memory and the block cap)."""
    lim = SM_LIMITS[arch]
    regs_per_warp = -(-max(registers, 1) * 32 // _REG_ALLOC_UNIT) * _REG_ALLOC_UNIT
    by_regs = lim["registers"] // (regs_per_warp * num_warps)
    by_warps = lim["warps"] // num_warps
    by_shared = lim["shared"] // shared if shared > 0 else lim["blocks"]
    blocks = min(by_regs, by_warps, by_shared, lim["blocks"])
    limiter = min((("registers", by_regs), ("warps", by_warps), ("shared", by_shared), ("blocks", lim["blocks"])),
                  key=lambda kv: kv[1])[0]
    return dict(blocks_per_sm=blocks, warps_per_sm=blocks * num_warps, limiter=limiter)


def launch_key(kernel, args, kwargs) -> tuple:
    """What a launch specializes on, for de-duplication: kernel, constexprs and num_warps, argument dtypes,
    which integers are 1 or divisible by 16 and which pointers are 16-byte aligned."""
    def spec(a):
        if isinstance(a, torch.Tensor):
            return (str(a.dtype), a.data_ptr() % 16 == 0)
        if isinstance(a, bool) or not isinstance(a, int):
            return type(a).__name__
        return ("int", a == 1, a % 16 == 0)

    return (kernel_name(kernel), tuple(sorted((k, str(v)) for k, v in kwargs.items())), tuple(spec(a) for a in args))


def aot_report(modules, matrix: str = "default", archs=(80, 90), *, log=None) -> list:
    """Compile every distinct launch of every module's ``aot_jobs(matrix)`` for each arch and measure it.

    Launches that specialize identically (``launch_key``) are compiled once per arch. Returns one dict per
    compiled launch: module, arch, gpu, name, kernel (the module's ``aot_describe`` or the name), job, num_warps,
    registers, spill_stores, spill_loads, stack, shared, blocks_per_sm, warps_per_sm, limiter, seconds.
    ``log``: called with each row as it is done.
    """
    rows, seen = [], set()
    for mod in modules:
        describe = getattr(mod, "aot_describe", lambda kernel, kwargs: kernel_name(kernel))
        for job in mod.aot_jobs(matrix):
            calls = mod.aot_record(job)
            for arch in archs:
                for kernel, _grid, args, kwargs in calls:
                    key = (mod.__name__, arch, launch_key(kernel, args, kwargs))
                    if key in seen:
                        continue
                    seen.add(key)
                    t0 = time.perf_counter()
                    compiled = compile_launch(kernel, args, kwargs, arch)
                    usage = ptxas_usage(compiled.asm["ptx"])
                    num_warps = int(kwargs.get("num_warps", 4))
                    shared = int(getattr(compiled.metadata, "shared", 0) or 0)
                    occ = occupancy(usage["registers"], num_warps, shared, arch)
                    row = dict(module=mod.__name__, arch=arch, name=kernel_name(kernel),
                               kernel=describe(kernel, kwargs), job=job, num_warps=num_warps, **usage,
                               shared=shared, **occ, seconds=round(time.perf_counter() - t0, 2))
                    rows.append(row)
                    if log is not None:
                        log(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# the selective scan's jobs (``mamba.ops.scan_triton`` delegates its aot_jobs / aot_record / aot_describe here)

def recorded_scan_plan(kernel, grid, args, kwargs) -> dict:
    """Programs and sequential chunk iterations of one recorded launch (:func:`recording`) of the scan
    kernels (``mamba.ops.scan_triton``): read from the launch itself (grid, the NCHUNK argument, the NDIR and CHUNK constexprs)."""
    names = kernel.arg_names
    nchunk = args[names.index("NCHUNK")]
    programs = 1
    for g in grid:
        programs *= g
    return dict(kernel=kernel_name(kernel), programs=programs, chunk=kwargs["CHUNK"],
                chunks_per_direction=nchunk, chunk_iterations=kwargs["NDIR"] * nchunk)



# VideoMambaPro flag combinations of one bidirectional layer ("gate": z given). Per-direction residual options
# launch kernels with the same constexpr sets as these.
SCAN_VARIANTS = {
    f"{name}{'+dropD' if drop else ''}{'' if gate else '-nogate'}": dict(
        residual=(res, res), masked=(False, mask), mask_drops_D=drop, gate=gate)
    for name, res, mask in (("videomambapro", True, True), ("videomamba", False, False),
                            ("mask-only", False, True), ("residual-only", True, False))
    for drop in ((False, True) if mask else (False,))
    for gate in (True, False)
}
# tensor layouts of the scan inputs: "mixer" = feature-major (channels, b * l) rows as the fused mixer passes them
# (per-batch views with strides (l, b * l, 1)); "contiguous" = dense (b, ., l)
SCAN_LAYOUTS = ("mixer", "contiguous")
# entries: "mixer" = bi_scan_fwd / bi_scan_bwd with W_dt @ dt_low, A_log, out_z and destinations (the trained path);
# "bi" = bi_selective_scan_triton (delta tensor, A); "single" = selective_scan_triton with return_last_state
SCAN_ENTRIES = ("mixer", "bi", "single")


def _scan_inputs(b, E, N, l, R, dtype, layout, gate, low_rank):
    """CPU stand-ins for one layer's scan inputs (both directions) with the strides a real call has."""
    M = b * l

    def rows(buf):  # (C, M) feature-major -> per-batch view (b, C, l) with strides (l, M, 1)
        return buf.view(buf.shape[0], b, l).permute(1, 0, 2)

    def dense(c, dt=dtype):
        return torch.zeros(b, c, l, dtype=dt)

    if layout == "mixer":
        ub = torch.zeros(2, E, M, dtype=dtype)
        dbc = torch.zeros(2, R + 2 * N, M, dtype=dtype)
        u = [rows(ub[i]) for i in range(2)]
        dt = [rows(dbc[i, :R]) if low_rank else rows(torch.zeros(E, M, dtype=dtype)) for i in range(2)]
        B = [rows(dbc[i, R:R + N]) for i in range(2)]
        C = [rows(dbc[i, R + N:]) for i in range(2)]
        z = rows(torch.zeros(2 * E, M, dtype=dtype)[E:]) if gate else None
    elif layout == "contiguous":
        u = [dense(E) for _ in range(2)]
        dt = [dense(R if low_rank else E) for _ in range(2)]
        B = [dense(N) for _ in range(2)]
        C = [dense(N) for _ in range(2)]
        z = dense(E) if gate else None
    else:
        raise ValueError(f"layout must be one of {SCAN_LAYOUTS}, got {layout!r}")
    A = [-torch.ones(E, N) for _ in range(2)]
    D = [torch.ones(E) for _ in range(2)]
    bias = [torch.zeros(E) for _ in range(2)]
    W = [torch.zeros(E, R) for _ in range(2)] if low_rank else None
    return u, dt, A, B, C, D, bias, z, W


def record_scan_launches(variant, *, tile=None, dtype=torch.bfloat16, layout="mixer", entry="mixer", b=2, E=384, N=16,
                    l=1569, dt_rank=12):
    """Every kernel launch (kernel, grid, args, kwargs) one forward + backward of a layer makes.

    ``variant`` is a key of SCAN_VARIANTS (or its dict); ``entry`` one of SCAN_ENTRIES. Runs the real host code on
    CPU tensors shaped like a VideoMamba-Ti layer at 8 frames (E = 384, l = 1569) with the kernels replaced by
    recorders, so the launches carry exactly the constexprs, dtypes, strides and alignments a GPU run would
    specialize on. ``single`` records the single-direction entry with the backward direction's options.
    """
    from . import scan_triton as st

    v = SCAN_VARIANTS[variant] if isinstance(variant, str) else variant
    if entry not in SCAN_ENTRIES:
        raise ValueError(f"entry must be one of {SCAN_ENTRIES}, got {entry!r}")
    low_rank = entry == "mixer"
    u, dt, A, B, C, D, bias, z, W = _scan_inputs(b, E, N, l, dt_rank, dtype, layout, v["gate"], low_rank)
    flags = dict(residual=v["residual"], masked=v["masked"])
    with contextlib.ExitStack() as stack:
        calls = stack.enter_context(recording(st))
        if tile is not None:
            stack.enter_context(st.triton_scan_config(**tile))
        if entry == "mixer":  # as the fused mixer calls it: destinations in its gradient buffers
            kw = dict(W_dt=W, a_log=True, drop_D=v["mask_drops_D"], **flags)
            y = torch.zeros(E, b * l, dtype=dtype).view(E, b, l).permute(1, 0, 2)
            out, states = st.bi_scan_fwd(u, dt, A, B, C, D, bias, z, out=y, save_states=True, **kw)
            M = b * l
            dxz = torch.zeros(2 * E, M, dtype=dtype)
            du = torch.zeros(2, E, M, dtype=dtype)
            ddbc = torch.zeros(2, dt_rank + 2 * N, M)

            def rows(buf):
                return buf.view(buf.shape[0], b, l).permute(1, 0, 2)

            st.bi_scan_bwd(u, dt, A, B, C, D, bias, z, out, states=states, want_out_z=True,
                        du=[rows(du[i]) for i in range(2)], ddt=[rows(ddbc[i, :dt_rank]) for i in range(2)],
                        dB=[rows(ddbc[i, dt_rank:dt_rank + N]) for i in range(2)],
                        dC=[rows(ddbc[i, dt_rank + N:]) for i in range(2)], dz=rows(dxz[E:]) if z is not None else None,
                        out_z=rows(torch.zeros(E, M, dtype=dtype)), **kw)
        else:
            leaves = [[x.requires_grad_() for x in seq] for seq in (u, dt, A, B, C, D, bias)]
            u, dt, A, B, C, D, bias = leaves
            if z is not None:
                z.requires_grad_()
            if entry == "bi":
                out = st.bi_selective_scan_triton(u, dt, A, B, C, D, z, bias, True, mask_drops_D=v["mask_drops_D"],
                                               **flags)
            else:
                out, _ = st.selective_scan_triton(u[0], dt[0], A[0], B[0], C[0], D[0], z, bias[0], True, True,
                                               residual=v["residual"][1], masked=v["masked"][1],
                                               mask_drops_D=v["mask_drops_D"])
            out.backward(torch.zeros_like(out))
    return calls


_SCAN_ROLE_KEYS = ("RESIDUAL0", "MASKED0", "RESIDUAL1", "MASKED1", "DROP_D", "LOW_RANK", "A_LOG", "HAS_Z", "WANT_OZ",
              "SAVE_LAST")


def describe_scan_launch(kernel, kwargs) -> str:
    """Short name of a launch: kernel, directions and its set flags, e.g. ``bwd x2 RESIDUAL0+...+HAS_Z``."""
    flags = "+".join(k for k in _SCAN_ROLE_KEYS if kwargs.get(k) is True) or "-"
    name = kernel_name(kernel).replace("_scan_", "").replace("_kernel", "")
    return f"{name} x{kwargs.get('NDIR', 1)} {flags}"


def scan_aot_jobs(matrix: str) -> list:
    """AOT jobs (see ``mamba.ops.triton_aot``): ``default`` the default tile on the mixer entry's VideoMambaPro and
    VideoMamba layers (bf16, feature-major) and the public bidirectional entry on fp32 contiguous inputs; ``table``
    every other TILE_TABLE tile on the mixer's VideoMambaPro layer; ``full`` every flag combination x fp32/bf16 x
    entries x layouts on the default tile, and every flag combination of the mixer entry on every table tile."""
    from . import scan_triton as st

    other_tiles = [t for *_, t in st.TILE_TABLE if t != st.DEFAULT_TILE]
    if matrix == "default":
        return ([dict(variant=v) for v in ("videomambapro", "videomamba")]
                + [dict(variant="videomambapro", dtype="fp32", layout="contiguous", entry="bi")])
    if matrix == "table":
        return [dict(variant="videomambapro", tile=t) for t in other_tiles]
    if matrix == "full":
        return ([dict(variant=v, dtype=dt, layout=lay, entry=e) for v in SCAN_VARIANTS for dt in ("bf16", "fp32")
                 for lay in SCAN_LAYOUTS for e in SCAN_ENTRIES]
                + [dict(variant=v, tile=t, dtype=dt) for t in other_tiles for v in SCAN_VARIANTS
                   for dt in ("bf16", "fp32")])
    raise ValueError(f"matrix must be default, table or full, got {matrix!r}")


def scan_aot_record(job: dict) -> list:
    """The launches of one AOT job (see ``aot_jobs``)."""
    from . import scan_triton as st

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    tile = {**st.DEFAULT_TILE, **(job.get("tile") or {})}
    return record_scan_launches(job["variant"], tile=tile, dtype=dtypes[job.get("dtype", "bf16")],
                                layout=job.get("layout", "mixer"), entry=job.get("entry", "mixer"))
