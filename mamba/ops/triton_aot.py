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

Used by ``tests/ops/test_scan_triton_aot.py`` (fails on any spill) and ``scripts/profile_block.py``.
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
           "kernel_name", "occupancy", "aot_report", "SM_LIMITS"]

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
