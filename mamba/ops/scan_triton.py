"""Fused Triton kernels for the (bidirectional) VideoMambaPro selective scan (backend ``triton``).

Same semantics as :func:`mamba.ops.selective_scan.selective_scan_ref` / ``bi_scan_fwd_ref`` / ``bi_scan_bwd_ref``
(see that module's docstrings).

Design
------
One program per (batch row, group of ``block_d`` channels) runs BOTH directions, one after the other, in one
forward launch and one backward launch (grid ``(ceil(E / block_d), b)``). Time runs across the program's threads:
a chunk of ``chunk`` steps (2,048 for long clips) is a ``(block_d, chunk)`` tile, each thread holding
``chunk / (32 num_warps)`` consecutive steps, and the N states are a loop inside the program: per state the
chunk's linear recurrence ``h_t = a_t h_{t-1} + b_t`` is one ``tl.associative_scan`` across the threads, and
``y = sum_n C h`` (and every gradient sum over states) accumulates in registers. A chunk's start state comes
from memory: the forward stores every chunk-boundary state (fp32, ``(ndir, b, E, ceil(l / chunk), N)``: ~27 B
per token at Ti 64 frames) and they are the only thing the backward needs besides the inputs; the thread that
holds a chunk's last step stores the state and one barrier per chunk publishes it (no reduction to extract it).
delta is ``W_dt @ dt_low`` (a loop over the R low-rank rows, from fp32 ``W_dt``) or a delta tensor, then
``dt_bias`` and softplus; ``A = -exp(A_log)`` or A; D, the gate, the backward mask (``y -= delta u B.C`` folded
in as ``C . (h - b)``), the residual start (``h_{-1} = u_0``), ``drop_D`` and the scale are fused. Direction 0
writes its y to an fp32 scratch row that direction 1 (read in reverse, no flipped copies) adds to, then scales,
gates and stores once (deterministic, no atomics in the forward). The backward walks the chunks in reverse scan
order, recomputes the chunk's states from the saved boundary state (forward scan), and runs the adjoint
``g_t = C_t dy_t + a_{t+1} g_{t+1}`` as a reverse scan over triples ``(a_first, P, F)`` (no shifted load, no
second exp); ``a_t h_{t-1} = h_t - b_t`` gives the carried state without a shift. dB, dC and
``d(dt_low) = W_dt^T ddelta`` (shared by all channels of a batch row) are summed over the program's channels in
registers and added with relaxed fp32 atomics into caller-zeroed buffers (any strides: the rows of the x_proj
output gradient); dA, dD, d(dt_bias), dW_dt are reduced over steps in registers and over the batch with
atomics. Tiles: chunk 2048 on 16 warps for long clips (4 steps per thread; 14 chunk iterations and 3,072 programs
at Ti 64 frames, batch 8); Triton's scan lays a thread's steps out strided (one warp scan per step it holds).
Registers (ptxas, sm_80 / sm_90, ``tests/ops/test_scan_triton_aot.py``): forward 70-110, no spills; backward
~110-170 almost independent of the steps per thread (addresses and scalars), so at 16 warps it is capped at 128
(one 16-warp program per SM: 16 resident warps). Inside its state loop the B / C / dB / dC addresses are rebuilt
from an opaque copy of the step index (``_opaque``) instead of being kept as one 64-bit pointer per step and
tensor: 15 of the 24 mixer variants (12 flag sets x sm_80 / sm_90) then compile without spills (before: 1) and
the others spill 8-32 bytes (before: 8-64), at most one value reloaded per state (open).

Limits: grouped B/C ``(b, g, n, l)`` with g > 1 is rejected (use the torch backend); fp64 inputs are computed in
fp64 (the interpreter and gradcheck). On CPU the kernels run only through Triton's interpreter: set
``TRITON_INTERPRET=1`` before this module is imported (Triton reads it when the kernels are decorated).
"""
from __future__ import annotations

import contextlib
import os

import torch

from . import triton_aot
from ._util import check_triton_runs_on
from ._util import pair as _pair

try:  # triton is optional: the error below says what to install
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

__all__ = ["selective_scan_triton", "bi_selective_scan_triton", "bi_scan_fwd", "bi_scan_bwd", "triton_scan_config",
           "scan_tile", "scan_launch_plan", "DEFAULT_TILE", "TILE_TABLE"]

_INSTALL = (
    "the triton scan backend needs triton (pip install triton; it ships with CUDA builds of torch). "
    "Kernels need a CUDA GPU, or TRITON_INTERPRET=1 (set before import) to run on the CPU."
)

# Tiles: a program holds (block_d, chunk) tiles spread over num_warps warps, chunk / (32 num_warps) steps per
# thread. The chunk sets the sequential chain: 2 x ceil(l / chunk) chunk iterations per program (both directions);
# the grid is ceil(E / block_d) x b programs. ptxas (tests/ops/test_scan_triton_aot.py, sm_80 / sm_90, no GPU):
# the forward kernels use 70-110 registers and do not spill (see SCAN_FWD_MAXNREG); the backward needs ~110-170
# registers almost independently of the steps per thread (per-thread addresses and scalars), so at 16 warps
# (capped at 128 registers: one program of 16 warps per SM) some variants spill 8-32 bytes (see _opaque).
# `scripts/tune_tiles.py` times candidates on a GPU.
DEFAULT_TILE = {"block_d": 1, "chunk": 2048, "num_warps": 16}
# registers per thread the scan forward may use (ptxas's .maxnreg) at 4 and 8 warps: left to itself ptxas aims at
# a higher occupancy and spills (at 8 warps: 80 registers, 16 bytes of spills); under 128 it takes ~105 and does
# not spill, still >= 16 warps resident per SM. At 16 warps (128 at most anyway) ptxas's own choice (~80) spills
# nothing, and the cap would make it spill: none is given there, nor to the backward.
SCAN_FWD_MAXNREG = 128
# (max d, max l, tile), first matching row wins (None: unbounded)
TILE_TABLE = (
    (None, 256, {"block_d": 1, "chunk": 256, "num_warps": 4}),  # images (l = 197): one chunk
    (None, 2048, {"block_d": 1, "chunk": 512, "num_warps": 8}),  # 8-frame clips (l = 1569): 8 iterations
    (None, None, DEFAULT_TILE),  # 16 to 64 frames (l = 3137 to 12545): 4 to 14 iterations
)
_TILE_KEYS = ("block_d", "chunk", "num_warps")
_OVERRIDE: dict = {}  # set by triton_scan_config (tests, benchmarks) and VMP_TRITON_* variables


def _check_tile_value(k, v):
    if v < 1 or v & (v - 1):
        raise ValueError(f"{k} must be a power of two, got {v}")
    return v


def scan_tile(d: int, l: int) -> dict:
    """The tile the kernels use for ``d`` channels and ``l`` steps: TILE_TABLE's row, then any override."""
    tile = next((t for d_max, l_max, t in TILE_TABLE
                 if (d_max is None or d <= d_max) and (l_max is None or l <= l_max)), DEFAULT_TILE)
    return {**tile, **_OVERRIDE}


@contextlib.contextmanager
def triton_scan_config(block_d: int | None = None, chunk: int | None = None, num_warps: int | None = None):
    """Temporarily force the kernels' tile sizes (powers of two) over the table. Yields the overrides."""
    old = dict(_OVERRIDE)
    for k, v in zip(_TILE_KEYS, (block_d, chunk, num_warps)):
        if v is not None:
            _OVERRIDE[k] = _check_tile_value(k, v)
    try:
        yield dict(_OVERRIDE)
    finally:
        _OVERRIDE.clear()
        _OVERRIDE.update(old)


def _cdiv(a, b):
    return -(-a // b)


def scan_launch_plan(b: int, E: int, l: int, ndir: int = 2) -> dict:
    """What the host code launches for one layer's scan at ``(b, E, l)`` with ``ndir`` directions (the tile
    ``scan_tile(E, l)`` picks, overrides included): ``programs`` per launch, ``grid``, ``chunk``,
    ``chunks_per_direction``, ``chunk_iterations`` (sequential chunk iterations of a program: both directions),
    ``launches`` (forward, backward) and the tile."""
    tile = scan_tile(E, l)
    k = _cdiv(l, tile["chunk"])
    grid = (_cdiv(E, tile["block_d"]), b)
    return dict(programs=grid[0] * grid[1], grid=grid, chunk=tile["chunk"], chunks_per_direction=k,
                chunk_iterations=ndir * k, launches=dict(fwd=1, bwd=1), tile=tile)


def _require_triton():
    if triton is None:
        raise RuntimeError(_INSTALL)


if triton is not None:

    @triton.jit
    def _fwd_combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): x -> a2 * (a1 * x + b1) + b2
        return a1 * a2, b1 * a2 + b2

    @triton.jit
    def _adj_combine(a_r, p_r, f_r, a_l, p_l, f_l):
        # reverse scan of g_t = c_t + a_{t+1} g_{t+1}; a segment [s..e] is (a_s, P = a_{s+1}...a_e, F) with
        # g_s = F + P * a_{e+1} g_{e+1}; Triton's reverse scan combines (right segment, left segment)
        t = p_l * a_r
        return a_l, t * p_r, f_l + t * f_r

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        @triton.jit
        def _opaque(x):
            return x
    else:
        @triton.jit
        def _opaque(x):
            # the same int32 values, but a fresh value the compiler cannot trace back: addresses built from it
            # inside a loop are computed there instead of being hoisted out of it as one 64-bit pointer per
            # step and tensor (8 registers each at 4 steps per thread). In the scan backward's state loop this
            # takes the mixer variants' spills at the 128-register budget from 8-64 bytes (23 of 24) to 0-32
            # (9 of 24; sm_80 / sm_90). Numerically the identity; the interpreter gets the identity itself
            return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32, is_pure=False, pack=1)

    @triton.jit
    def _softplus(x):
        return tl.where(x <= 20.0, tl.log(1.0 + tl.exp(x)), x)

    @triton.jit
    def _load_delta(dt_ptr, sdt_b, sdt_c, sdt_l, W_ptr, bias, pid_b, offs_c, mask_c, pos, ms, m2, R,
                    LOW_RANK: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                    BLOCK_C: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr):
        """delta (0 at padded steps) of a (BLOCK_C, CHUNK) tile."""
        if LOW_RANK:  # delta_raw = W_dt @ dt_low: one row of dt_low (shared by the channels) per rank
            x = tl.zeros((BLOCK_C, CHUNK), dtype=ACC)
            for r in range(0, R):
                w = tl.load(W_ptr + offs_c * R + r, mask=mask_c, other=0.0).to(ACC)
                dl = tl.load(dt_ptr + pid_b * sdt_b + r * sdt_c + pos * sdt_l, mask=ms, other=0.0).to(ACC)
                x += w[:, None] * dl
        else:
            x = tl.load(dt_ptr + pid_b * sdt_b + offs_c[:, None] * sdt_c + pos * sdt_l, mask=m2,
                        other=0.0).to(ACC)
        if HAS_BIAS:
            x += bias[:, None]
        if SOFTPLUS:
            x = _softplus(x)
        return tl.where(m2, x, 0.0)  # padded steps: a = 1, b = 0, the state passes unchanged

    @triton.jit
    def _scan_fwd_kernel(
        u0_ptr, su0_b, su0_c, su0_l, dt0_ptr, sdt0_b, sdt0_c, sdt0_l, B0_ptr, sB0_b, sB0_n, sB0_l,
        C0_ptr, sC0_b, sC0_n, sC0_l, W0_ptr, A0_ptr, D0_ptr, bias0_ptr,
        u1_ptr, su1_b, su1_c, su1_l, dt1_ptr, sdt1_b, sdt1_c, sdt1_l, B1_ptr, sB1_b, sB1_n, sB1_l,
        C1_ptr, sC1_b, sC1_n, sC1_l, W1_ptr, A1_ptr, D1_ptr, bias1_ptr,
        z_ptr, sz_b, sz_c, sz_l, out_ptr, so_b, so_c, so_l, y_ptr, st_ptr, last_ptr,
        L, E, N, R, NCHUNK, scale,
        NDIR: tl.constexpr, RESIDUAL0: tl.constexpr, MASKED0: tl.constexpr, RESIDUAL1: tl.constexpr,
        MASKED1: tl.constexpr, DROP_D: tl.constexpr, LOW_RANK: tl.constexpr, A_LOG: tl.constexpr,
        SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
        SAVE_LAST: tl.constexpr, BLOCK_C: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr,
    ):
        pid_b = tl.program_id(1)
        offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < E
        ar = tl.arange(0, CHUNK)[None, :]  # (1, CHUNK): every time-indexed tensor is 2-D (no layout changes)
        offs_n = tl.arange(0, NP)
        mask_cn = mask_c[:, None] & (offs_n < N)[None, :]
        last_col = (ar == CHUNK - 1) & mask_c[:, None]
        y_off = ((pid_b * E + offs_c) * L)[:, None]  # fp32 scratch (b, E, l): direction 0's y
        # one code body for both directions (a runtime loop: registers as for one direction); direction 1 is
        # read from the last token to the first
        for dr in tl.static_range(NDIR):
            if dr == 0:
                u_ptr, su_b, su_c, su_l = u0_ptr, su0_b, su0_c, su0_l
                dt_ptr, sdt_b, sdt_c, sdt_l = dt0_ptr, sdt0_b, sdt0_c, sdt0_l
                B_ptr, sB_b, sB_n, sB_l = B0_ptr, sB0_b, sB0_n, sB0_l
                C_ptr, sC_b, sC_n, sC_l = C0_ptr, sC0_b, sC0_n, sC0_l
                W_ptr, A_ptr, D_ptr, bias_ptr = W0_ptr, A0_ptr, D0_ptr, bias0_ptr
            else:
                u_ptr, su_b, su_c, su_l = u1_ptr, su1_b, su1_c, su1_l
                dt_ptr, sdt_b, sdt_c, sdt_l = dt1_ptr, sdt1_b, sdt1_c, sdt1_l
                B_ptr, sB_b, sB_n, sB_l = B1_ptr, sB1_b, sB1_n, sB1_l
                C_ptr, sC_b, sC_n, sC_l = C1_ptr, sC1_b, sC1_n, sC1_l
                W_ptr, A_ptr, D_ptr, bias_ptr = W1_ptr, A1_ptr, D1_ptr, bias1_ptr
            rev = dr == 1
            res_on = tl.where(dr == 0, RESIDUAL0, RESIDUAL1)
            mask_on = tl.where(dr == 0, MASKED0, MASKED1)
            mk = tl.where(mask_on, 1.0, 0.0)  # the backward mask: y_t = C_t . (h_t - b_t) = C_t . (a_t h_{t-1})
            st_c = ((dr * tl.num_programs(1) + pid_b) * E + offs_c) * NCHUNK * N  # states (ndir, b, E, NCHUNK, N)
            # h_{-1} = u_0 (the first token of this direction) with the residual start, else 0
            first = tl.where(rev, L - 1, 0)
            u0 = tl.load(u_ptr + pid_b * su_b + offs_c * su_c + first * su_l, mask=mask_c & res_on, other=0.0)
            tl.store(st_ptr + st_c[:, None] + offs_n[None, :], tl.zeros((BLOCK_C, NP), dtype=ACC) + u0.to(ACC)[:, None],
                     mask=mask_cn)
            if HAS_BIAS:
                bias = tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
            else:
                bias = tl.zeros((BLOCK_C,), dtype=ACC)
            if HAS_D:
                Dv = tl.load(D_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
                if DROP_D:
                    Dv = Dv * (1.0 - mk)
            tl.debug_barrier()
            for k in range(0, NCHUNK):
                s = k * CHUNK + ar
                ms = s < L
                pos = tl.where(rev, L - 1 - s, s)
                m2 = mask_c[:, None] & ms
                u = tl.load(u_ptr + pid_b * su_b + offs_c[:, None] * su_c + pos * su_l, mask=m2, other=0.0).to(ACC)
                delta = _load_delta(dt_ptr, sdt_b, sdt_c, sdt_l, W_ptr, bias, pid_b, offs_c, mask_c, pos, ms, m2, R,
                                    LOW_RANK, HAS_BIAS, SOFTPLUS, BLOCK_C, CHUNK, ACC)
                dtu = delta * u
                y = tl.zeros((BLOCK_C, CHUNK), dtype=ACC)
                for n in range(0, N):
                    A_n = tl.load(A_ptr + offs_c * N + n, mask=mask_c, other=0.0).to(ACC)
                    if A_LOG:
                        A_n = -tl.exp(A_n)
                    h0 = tl.load(st_ptr + st_c + k * N + n, mask=mask_c, other=0.0)
                    Bn = tl.load(B_ptr + pid_b * sB_b + n * sB_n + pos * sB_l, mask=ms, other=0.0).to(ACC)
                    Cn = tl.load(C_ptr + pid_b * sC_b + n * sC_n + pos * sC_l, mask=ms, other=0.0).to(ACC)
                    a = tl.exp(delta * A_n[:, None])
                    bb = dtu * Bn
                    # the chunk's start state enters through its first step: b_0 + a_0 h_{-1}
                    _ac, h = tl.associative_scan((a, bb + tl.where(ar == 0, a * h0[:, None], 0.0)), 1, _fwd_combine)
                    if MASKED0 or MASKED1:
                        y += Cn * (h - mk * bb)
                    else:
                        y += Cn * h
                    # the chunk's end state (padded steps pass it unchanged) starts the next chunk: stored by the
                    # thread that holds it, published by the barrier at the end of the chunk
                    if k + 1 < NCHUNK:
                        tl.store((st_ptr + st_c + (k + 1) * N + n)[:, None] + 0 * ar, h,
                                 mask=last_col)
                    else:
                        if SAVE_LAST:
                            tl.store((last_ptr + (pid_b * E + offs_c) * N + n)[:, None] + 0 * ar, h, mask=last_col)
                if HAS_D:
                    y += Dv[:, None] * u
                if dr == NDIR - 1:
                    if dr > 0:
                        y += tl.load(y_ptr + y_off + pos, mask=m2, other=0.0)
                    y = y * scale
                    if HAS_Z:
                        zt = tl.load(z_ptr + pid_b * sz_b + offs_c[:, None] * sz_c + pos * sz_l, mask=m2,
                                     other=0.0).to(ACC)
                        y = y * zt * tl.sigmoid(zt)
                    tl.store(out_ptr + pid_b * so_b + offs_c[:, None] * so_c + pos * so_l,
                             y.to(out_ptr.dtype.element_ty), mask=m2)
                else:
                    tl.store(y_ptr + y_off + pos, y, mask=m2)
                tl.debug_barrier()  # publishes the chunk-end states (and direction 0's y) to the other threads

    @triton.jit
    def _scan_bwd_kernel(
        u0_ptr, su0_b, su0_c, su0_l, dt0_ptr, sdt0_b, sdt0_c, sdt0_l, B0_ptr, sB0_b, sB0_n, sB0_l,
        C0_ptr, sC0_b, sC0_n, sC0_l, W0_ptr, A0_ptr, D0_ptr, bias0_ptr,
        du0_ptr, sdu0_b, sdu0_c, sdu0_l, ddt0_ptr, sddt0_b, sddt0_c, sddt0_l, dB0_ptr, sdB0_b, sdB0_n, sdB0_l,
        dC0_ptr, sdC0_b, sdC0_n, sdC0_l, dA0_ptr, dD0_ptr, dbias0_ptr, dW0_ptr,
        u1_ptr, su1_b, su1_c, su1_l, dt1_ptr, sdt1_b, sdt1_c, sdt1_l, B1_ptr, sB1_b, sB1_n, sB1_l,
        C1_ptr, sC1_b, sC1_n, sC1_l, W1_ptr, A1_ptr, D1_ptr, bias1_ptr,
        du1_ptr, sdu1_b, sdu1_c, sdu1_l, ddt1_ptr, sddt1_b, sddt1_c, sddt1_l, dB1_ptr, sdB1_b, sdB1_n, sdB1_l,
        dC1_ptr, sdC1_b, sdC1_n, sdC1_l, dA1_ptr, dD1_ptr, dbias1_ptr, dW1_ptr,
        z_ptr, sz_b, sz_c, sz_l, dout_ptr, sdo_b, sdo_c, sdo_l, dz_ptr, sdz_b, sdz_c, sdz_l,
        oz_ptr, soz_b, soz_c, soz_l, y_ptr, st_ptr, q_ptr,
        L, E, N, R, NCHUNK, scale,
        NDIR: tl.constexpr, RESIDUAL0: tl.constexpr, MASKED0: tl.constexpr, RESIDUAL1: tl.constexpr,
        MASKED1: tl.constexpr, DROP_D: tl.constexpr, LOW_RANK: tl.constexpr, A_LOG: tl.constexpr,
        SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
        WANT_OZ: tl.constexpr, BLOCK_C: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr,
    ):
        pid_b = tl.program_id(1)
        offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < E
        ar = tl.arange(0, CHUNK)[None, :]
        offs_n = tl.arange(0, NP)
        mask_cn = mask_c[:, None] & (offs_n < N)[None, :]
        first_col = (ar == 0) & mask_c[:, None]
        q_c = (pid_b * E + offs_c) * 2 * N  # adjoint carries a_s g_s, double-buffered (b, E, 2, N)
        y_off = ((pid_b * E + offs_c) * L)[:, None]
        for dr in tl.static_range(NDIR):
            if dr == 0:
                u_ptr, su_b, su_c, su_l = u0_ptr, su0_b, su0_c, su0_l
                dt_ptr, sdt_b, sdt_c, sdt_l = dt0_ptr, sdt0_b, sdt0_c, sdt0_l
                B_ptr, sB_b, sB_n, sB_l = B0_ptr, sB0_b, sB0_n, sB0_l
                C_ptr, sC_b, sC_n, sC_l = C0_ptr, sC0_b, sC0_n, sC0_l
                W_ptr, A_ptr, D_ptr, bias_ptr = W0_ptr, A0_ptr, D0_ptr, bias0_ptr
                du_ptr, sdu_b, sdu_c, sdu_l = du0_ptr, sdu0_b, sdu0_c, sdu0_l
                ddt_ptr, sddt_b, sddt_c, sddt_l = ddt0_ptr, sddt0_b, sddt0_c, sddt0_l
                dB_ptr, sdB_b, sdB_n, sdB_l = dB0_ptr, sdB0_b, sdB0_n, sdB0_l
                dC_ptr, sdC_b, sdC_n, sdC_l = dC0_ptr, sdC0_b, sdC0_n, sdC0_l
                dA_ptr, dD_ptr, dbias_ptr, dW_ptr = dA0_ptr, dD0_ptr, dbias0_ptr, dW0_ptr
            else:
                u_ptr, su_b, su_c, su_l = u1_ptr, su1_b, su1_c, su1_l
                dt_ptr, sdt_b, sdt_c, sdt_l = dt1_ptr, sdt1_b, sdt1_c, sdt1_l
                B_ptr, sB_b, sB_n, sB_l = B1_ptr, sB1_b, sB1_n, sB1_l
                C_ptr, sC_b, sC_n, sC_l = C1_ptr, sC1_b, sC1_n, sC1_l
                W_ptr, A_ptr, D_ptr, bias_ptr = W1_ptr, A1_ptr, D1_ptr, bias1_ptr
                du_ptr, sdu_b, sdu_c, sdu_l = du1_ptr, sdu1_b, sdu1_c, sdu1_l
                ddt_ptr, sddt_b, sddt_c, sddt_l = ddt1_ptr, sddt1_b, sddt1_c, sddt1_l
                dB_ptr, sdB_b, sdB_n, sdB_l = dB1_ptr, sdB1_b, sdB1_n, sdB1_l
                dC_ptr, sdC_b, sdC_n, sdC_l = dC1_ptr, sdC1_b, sdC1_n, sdC1_l
                dA_ptr, dD_ptr, dbias_ptr, dW_ptr = dA1_ptr, dD1_ptr, dbias1_ptr, dW1_ptr
            rev = dr == 1
            res_on = tl.where(dr == 0, RESIDUAL0, RESIDUAL1)
            mask_on = tl.where(dr == 0, MASKED0, MASKED1)
            mk = tl.where(mask_on, 1.0, 0.0)
            st_c = ((dr * tl.num_programs(1) + pid_b) * E + offs_c) * NCHUNK * N
            tl.store(q_ptr + q_c[:, None] + (NCHUNK % 2) * N + offs_n[None, :], tl.zeros((BLOCK_C, NP), dtype=ACC),
                     mask=mask_cn)
            if HAS_BIAS:
                bias = tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
            else:
                bias = tl.zeros((BLOCK_C,), dtype=ACC)
            if HAS_D:
                Dv = tl.load(D_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
                if DROP_D:
                    Dv = Dv * (1.0 - mk)
            dD_acc = tl.zeros((BLOCK_C,), dtype=ACC)
            dbias_acc = tl.zeros((BLOCK_C,), dtype=ACC)
            tl.debug_barrier()
            # chunks in reverse scan order: the adjoint runs from the direction's last step to its first
            for kk in range(0, NCHUNK):
                k = NCHUNK - 1 - kk
                s = k * CHUNK + ar
                ms = s < L
                pos = tl.where(rev, L - 1 - s, s)
                m2 = mask_c[:, None] & ms
                u = tl.load(u_ptr + pid_b * su_b + offs_c[:, None] * su_c + pos * su_l, mask=m2, other=0.0).to(ACC)
                delta = _load_delta(dt_ptr, sdt_b, sdt_c, sdt_l, W_ptr, bias, pid_b, offs_c, mask_c, pos, ms, m2, R,
                                    LOW_RANK, HAS_BIAS, SOFTPLUS, BLOCK_C, CHUNK, ACC)
                dout = tl.load(dout_ptr + pid_b * sdo_b + offs_c[:, None] * sdo_c + pos * sdo_l, mask=m2,
                               other=0.0).to(ACC)
                if HAS_Z:
                    zt = tl.load(z_ptr + pid_b * sz_b + offs_c[:, None] * sz_c + pos * sz_l, mask=m2,
                                 other=0.0).to(ACC)
                    dy = dout * scale * zt * tl.sigmoid(zt)
                else:
                    dy = dout * scale
                dtu = delta * u  # u itself is reloaded after the state loop (fewer registers live across it)
                # sums over the states: wsum = sum_n B gm (du = delta wsum, ddelta = u wsum + vsum),
                # vsum = sum_n A g a h_{t-1}; du0 the residual start's term
                wsum = tl.zeros((BLOCK_C, CHUNK), dtype=ACC)
                vsum = tl.zeros((BLOCK_C, CHUNK), dtype=ACC)
                if RESIDUAL0 or RESIDUAL1:
                    du0 = tl.zeros((BLOCK_C, CHUNK), dtype=ACC)
                if HAS_Z or WANT_OZ:
                    y = tl.zeros((BLOCK_C, CHUNK), dtype=ACC)
                for n in range(0, N):
                    pos = _opaque(pos)  # B, C, dB, dC addresses built per state, not kept across the loop
                    A_n = tl.load(A_ptr + offs_c * N + n, mask=mask_c, other=0.0).to(ACC)
                    if A_LOG:
                        A_n = -tl.exp(A_n)
                    h0 = tl.load(st_ptr + st_c + k * N + n, mask=mask_c, other=0.0)
                    q = tl.load(q_ptr + q_c + ((k + 1) % 2) * N + n, mask=mask_c, other=0.0)
                    Bn = tl.load(B_ptr + pid_b * sB_b + n * sB_n + pos * sB_l, mask=ms, other=0.0).to(ACC)
                    Cn = tl.load(C_ptr + pid_b * sC_b + n * sC_n + pos * sC_l, mask=ms, other=0.0).to(ACC)
                    a = tl.exp(delta * A_n[:, None])
                    bb = dtu * Bn
                    ac, hc = tl.associative_scan((a, bb), 1, _fwd_combine)  # the chunk's states, recomputed
                    h = hc + ac * h0[:, None]
                    ah = h - bb  # a_t h_{t-1}
                    c = Cn * dy
                    if MASKED0 or MASKED1:
                        hm = h - mk * bb  # what C_t multiplies in y_t (a_t h_{t-1} when masked)
                    else:
                        hm = h
                    if HAS_Z or WANT_OZ:
                        y += Cn * hm
                    # dC now: h is dead during the reverse scan (fewer registers)
                    tl.atomic_add(dC_ptr + pid_b * sdC_b + n * sdC_n + pos * sdC_l,
                                  tl.sum(dy * hm, axis=0, keep_dims=True), mask=ms, sem="relaxed")
                    _af, P, F = tl.associative_scan((a, tl.full((BLOCK_C, CHUNK), 1.0, ACC), c), 1, _adj_combine,
                                                    reverse=True)
                    g = F + P * q[:, None]  # dL/dh_t
                    ag = a * g  # a_t g_t: the carry into step t - 1 (the previous chunk's boundary term)
                    tl.store((q_ptr + q_c + (k % 2) * N + n)[:, None] + 0 * ar, ag,
                             mask=first_col)
                    if RESIDUAL0 or RESIDUAL1:  # h_{-1} = u_0 broadcast: dL/du_0 += sum_n a_0 g_0
                        du0 += tl.where((s == 0) & res_on, ag, 0.0)
                    if MASKED0 or MASKED1:  # the mask removes delta u B.C dy from y: b_t sees g - C dy
                        gm = g - mk * c
                    else:
                        gm = g
                    tl.atomic_add(dB_ptr + pid_b * sdB_b + n * sdB_n + pos * sdB_l,
                                  tl.sum(dtu * gm, axis=0, keep_dims=True), mask=ms, sem="relaxed")
                    wsum += Bn * gm
                    vsum += A_n[:, None] * g * ah
                    # dA: summed over the chunk here, over chunks and batch rows by atomics (b x chunks per address)
                    dA_n = tl.sum(g * delta * ah, axis=1)
                    if A_LOG:  # dL/dA_log = dL/dA * A
                        dA_n = dA_n * A_n
                    tl.atomic_add(dA_ptr + offs_c * N + n, dA_n, mask=mask_c, sem="relaxed")
                u = tl.load(u_ptr + pid_b * su_b + offs_c[:, None] * su_c + pos * su_l, mask=m2, other=0.0).to(ACC)
                du = delta * wsum
                ddl = vsum + u * wsum
                if RESIDUAL0 or RESIDUAL1:
                    du += du0
                if HAS_D:
                    du += Dv[:, None] * dy
                    if DROP_D:
                        dD_acc += tl.sum(dy * u, axis=1) * (1.0 - mk)
                    else:
                        dD_acc += tl.sum(dy * u, axis=1)
                    if HAS_Z or WANT_OZ:
                        y += Dv[:, None] * u
                if SOFTPLUS:  # softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)) (Taylor where that cancels)
                    ddl = ddl * tl.where(delta < 0.03, delta * (1.0 - delta * (0.5 - delta * (1.0 / 6.0))),
                                         1.0 - tl.exp(-delta))
                ddl = tl.where(m2, ddl, 0.0)  # d delta_raw
                if HAS_BIAS:
                    dbias_acc += tl.sum(ddl, axis=1)
                tl.store(du_ptr + pid_b * sdu_b + offs_c[:, None] * sdu_c + pos * sdu_l,
                         du.to(du_ptr.dtype.element_ty), mask=m2)
                if LOW_RANK:  # d dt_low = W_dt^T d delta_raw (over the channels), dW_dt = d delta_raw dt_low^T
                    for r in range(0, R):
                        w = tl.load(W_ptr + offs_c * R + r, mask=mask_c, other=0.0).to(ACC)
                        dl = tl.load(dt_ptr + pid_b * sdt_b + r * sdt_c + pos * sdt_l, mask=ms, other=0.0).to(ACC)
                        tl.atomic_add(ddt_ptr + pid_b * sddt_b + r * sddt_c + pos * sddt_l,
                                      tl.sum(w[:, None] * ddl, axis=0, keep_dims=True), mask=ms, sem="relaxed")
                        tl.atomic_add(dW_ptr + offs_c * R + r, tl.sum(ddl * dl, axis=1), mask=mask_c, sem="relaxed")
                else:
                    tl.store(ddt_ptr + pid_b * sddt_b + offs_c[:, None] * sddt_c + pos * sddt_l,
                             ddl.to(ddt_ptr.dtype.element_ty), mask=m2)
                if HAS_Z or WANT_OZ:  # dz and out_z need y_0 + y_1: direction 0 leaves y_0 in the fp32 scratch
                    if dr == NDIR - 1:
                        if dr > 0:
                            y += tl.load(y_ptr + y_off + pos, mask=m2, other=0.0)
                        y = y * scale
                        if HAS_Z:  # z again (a cache hit): fewer registers live across the state loop
                            zt = tl.load(z_ptr + pid_b * sz_b + offs_c[:, None] * sz_c + pos * sz_l, mask=m2,
                                         other=0.0).to(ACC)
                            sig = tl.sigmoid(zt)
                            dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
                            tl.store(dz_ptr + pid_b * sdz_b + offs_c[:, None] * sdz_c + pos * sdz_l,
                                     dz.to(dz_ptr.dtype.element_ty), mask=m2)
                            y = y * zt * sig
                        if WANT_OZ:
                            tl.store(oz_ptr + pid_b * soz_b + offs_c[:, None] * soz_c + pos * soz_l,
                                     y.to(oz_ptr.dtype.element_ty), mask=m2)
                    else:
                        tl.store(y_ptr + y_off + pos, y, mask=m2)
                tl.debug_barrier()  # publishes the adjoint carries (and direction 0's y) to the other threads
            if HAS_D:
                tl.atomic_add(dD_ptr + offs_c, dD_acc, mask=mask_c, sem="relaxed")
            if HAS_BIAS:
                tl.atomic_add(dbias_ptr + offs_c, dbias_acc, mask=mask_c, sem="relaxed")


# ----------------------------------------------------------------------------------------------------
# host side


def _check_runs_here(u: torch.Tensor):
    _require_triton()
    check_triton_runs_on(u, _scan_fwd_kernel, "scan", __name__)


def _acc_dtype(x: torch.Tensor):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _tl_acc(ct):
    return tl.float64 if ct == torch.float64 else tl.float32


def _prep_bc(X: torch.Tensor, name: str, b: int, n: int, l: int) -> torch.Tensor:
    if X.dim() == 4:
        if X.shape[1] != 1:
            raise NotImplementedError(
                f"the triton scan does not support grouped {name} (b, g, n, l) with g={X.shape[1]} > 1; "
                "use VMP_SCAN_BACKEND=torch (or cuda) for grouped B/C"
            )
        X = X[:, 0]
    if tuple(X.shape) != (b, n, l):
        raise ValueError(f"{name} must be (b, n, l)=({b}, {n}, {l}), got {tuple(X.shape)}")
    return X


def _normalize(u, dt, A, B, C, D, dt_bias, z, W_dt, a_log, residual, masked):
    """Validated per-direction inputs of bi_scan_fwd / bi_scan_bwd (see there) as a dict of tuples."""
    if not isinstance(u, (tuple, list)):
        raise ValueError("u must be a sequence with one (b, E, l) tensor per direction")
    ndir = len(u)
    if ndir not in (1, 2):
        raise ValueError(f"one or two directions, got {ndir}")
    seqs = {}
    for name, X in (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("dt_bias", dt_bias), ("W_dt", W_dt)):
        if name == "W_dt" and X is None:
            seqs[name] = (None,) * ndir
            continue
        if not isinstance(X, (tuple, list)) or len(X) != ndir:
            raise ValueError(f"{name} must be a sequence with one entry per direction ({ndir})")
        seqs[name] = tuple(X)
    residual, masked = _pair(residual, ndir), _pair(masked, ndir)
    if len(residual) != ndir or len(masked) != ndir:
        raise ValueError(f"residual and masked need one flag per direction ({ndir})")
    if u[0].dim() != 3:
        raise ValueError(f"u must be (b, E, l), got {tuple(u[0].shape)}")
    b, E, l = u[0].shape
    low_rank = W_dt is not None
    ct = _acc_dtype(u[0])
    out = dict(u=[], dt=[], A=[], B=[], C=[], D=[], dt_bias=[], W_dt=[])
    N = R = None
    for i in range(ndir):
        ui = u[i]
        if tuple(ui.shape) != (b, E, l):
            raise ValueError(f"u[{i}] must be (b, E, l)=({b}, {E}, {l}), got {tuple(ui.shape)}")
        Ai = seqs["A"][i]
        if Ai.dim() != 2 or Ai.shape[0] != E or (N is not None and Ai.shape[1] != N):
            raise ValueError(f"A[{i}] must be (E={E}, N), one N for both directions, got {tuple(Ai.shape)}")
        N = Ai.shape[1]
        dti = seqs["dt"][i]
        if low_rank:
            Wi = seqs["W_dt"][i]
            if Wi.dim() != 2 or Wi.shape[0] != E or (R is not None and Wi.shape[1] != R):
                raise ValueError(f"W_dt[{i}] must be (E={E}, R), one R for both directions, got {tuple(Wi.shape)}")
            R = Wi.shape[1]
            if tuple(dti.shape) != (b, R, l):
                raise ValueError(f"dt[{i}] must be (b, R, l)=({b}, {R}, {l}) with W_dt, got {tuple(dti.shape)}")
            out["W_dt"].append(Wi.detach().to(ct).contiguous())
        else:
            if tuple(dti.shape) != (b, E, l):
                raise ValueError(f"delta (dt[{i}]) must have u's shape {(b, E, l)}, got {tuple(dti.shape)}")
            out["W_dt"].append(None)
        out["u"].append(ui)
        out["dt"].append(dti)
        out["A"].append(Ai.detach().to(ct).contiguous())
        out["B"].append(_prep_bc(seqs["B"][i], "B", b, N, l))
        out["C"].append(_prep_bc(seqs["C"][i], "C", b, N, l))
        for nm in ("D", "dt_bias"):
            X = seqs[nm][i]
            if X is not None and tuple(X.shape) != (E,):
                raise ValueError(f"{nm} must be (d={E},), got {tuple(X.shape)}")
            out[nm].append(None if X is None else X.detach().to(ct).contiguous())
    if z is not None and tuple(z.shape) != (b, E, l):
        raise ValueError(f"z must have u's shape {(b, E, l)}, got {tuple(z.shape)}")
    return dict(out, z=z, ndir=ndir, b=b, E=E, l=l, N=N, R=R or 1, low_rank=low_rank, a_log=bool(a_log), ct=ct,
                residual=tuple(bool(x) for x in residual), masked=tuple(bool(x) for x in masked),
                has_D=any(x is not None for x in out["D"]), has_bias=any(x is not None for x in out["dt_bias"]))


def _param(p, i, name, E, ct, dev):
    """A direction's D / dt_bias, or zeros where only the other direction has one (the kernel flag is shared)."""
    X = p[name][i]
    return X if X is not None else torch.zeros(E, device=dev, dtype=ct)


def _dir_args(p, i):
    """Pointer and stride arguments of direction i (the kernel's u.., dt.., B.., C.., W, A, D, bias block)."""
    dev, E, ct = p["u"][0].device, p["E"], p["ct"]
    u, dt, B, C = p["u"][i], p["dt"][i], p["B"][i], p["C"][i]
    W = p["W_dt"][i] if p["low_rank"] else u
    return [u, *u.stride(), dt, *dt.stride(), B, *B.stride(), C, *C.stride(), W, p["A"][i],
            _param(p, i, "D", E, ct, dev) if p["has_D"] else u, _param(p, i, "dt_bias", E, ct, dev) if p["has_bias"]
            else u]


def _flags(p, drop_D, softplus):
    residual, masked = p["residual"] + (False,), p["masked"] + (False,)
    return dict(NDIR=p["ndir"], RESIDUAL0=residual[0], MASKED0=masked[0], RESIDUAL1=residual[1], MASKED1=masked[1],
                DROP_D=bool(drop_D), LOW_RANK=p["low_rank"], A_LOG=p["a_log"], SOFTPLUS=bool(softplus),
                HAS_D=p["has_D"], HAS_BIAS=p["has_bias"], HAS_Z=p["z"] is not None)


def _check_dest(X, name, shape, dtype=None):
    if X is None:
        return None
    if tuple(X.shape) != tuple(shape):
        raise ValueError(f"{name} must be {tuple(shape)}, got {tuple(X.shape)}")
    if dtype is not None and X.dtype != dtype:
        raise ValueError(f"{name} must be {dtype} (it is accumulated into), got {X.dtype}")
    return X


def _forward(p, *, softplus, drop_D, scale, out=None, last=None, tile=None):
    """One forward launch: returns (out, states)."""
    u0 = p["u"][0]
    _check_runs_here(u0)
    b, E, l, N, ndir, ct = p["b"], p["E"], p["l"], p["N"], p["ndir"], p["ct"]
    tile = tile or scan_tile(E, l)
    chunk, bd = tile["chunk"], tile["block_d"]
    nchunk = _cdiv(l, chunk)
    dev = u0.device
    if out is None:
        out = torch.empty(b, E, l, device=dev, dtype=u0.dtype)
    _check_dest(out, "out", (b, E, l))
    z = p["z"]
    zz = z if z is not None else u0
    states = torch.empty(ndir, b, E, nchunk, N, device=dev, dtype=ct)
    ybuf = torch.empty(b, E, l, device=dev, dtype=ct) if ndir == 2 else states
    d1 = _dir_args(p, 1) if ndir == 2 else _dir_args(p, 0)
    grid = (_cdiv(E, bd), b)
    _scan_fwd_kernel[grid](
        *_dir_args(p, 0), *d1, zz, *zz.stride(), out, *out.stride(), ybuf, states,
        last if last is not None else states, l, E, N, p["R"], nchunk, float(scale),
        **_flags(p, drop_D, softplus), SAVE_LAST=last is not None, BLOCK_C=bd, NP=triton.next_power_of_2(N),
        CHUNK=chunk, ACC=_tl_acc(ct), num_warps=tile["num_warps"],
        maxnreg=SCAN_FWD_MAXNREG if tile["num_warps"] < 16 else None,
    )
    return out, states


_GRAD_NAMES = ("du", "ddt", "dA", "dB", "dC", "dD", "ddt_bias", "dW_dt")


def _states_tile(E, l, states):
    """The tile for a backward over ``states``: the table's, or (states saved under another tile) one with the chunk
    that gives the states' chunk count and as many steps per thread as the table's tile."""
    tile = scan_tile(E, l)
    k = states.shape[3] if states.dim() == 5 else None
    if k is None or k == _cdiv(l, tile["chunk"]):
        return tile
    chunk = triton.next_power_of_2(max(_cdiv(l, max(k, 1)), 1))
    if k < 1 or _cdiv(l, chunk) != k:
        return tile  # no chunk gives k chunks: the shape check reports it
    steps = max(tile["chunk"] // (32 * tile["num_warps"]), 1)
    return {**tile, "chunk": chunk, "num_warps": max(1, min(16, chunk // (32 * steps)))}


def _backward(p, dout, states, *, softplus, drop_D, scale, want_out_z, dest, tile=None):
    """One backward launch; ``dest``: destination tensors by name (per-direction tuples, or dz / out_z)."""
    u0 = p["u"][0]
    _check_runs_here(u0)
    b, E, l, N, R, ndir, ct = p["b"], p["E"], p["l"], p["N"], p["R"], p["ndir"], p["ct"]
    tile = tile or _states_tile(E, l, states)
    chunk, bd = tile["chunk"], tile["block_d"]
    nchunk = _cdiv(l, chunk)
    dev = u0.device
    if tuple(dout.shape) != (b, E, l):
        raise ValueError(f"dout must be (b, E, l)=({b}, {E}, {l}), got {tuple(dout.shape)}")
    if tuple(states.shape) != (ndir, b, E, nchunk, N) or states.dtype != ct:
        raise ValueError(f"states must be the forward's ({ndir}, {b}, {E}, {nchunk}, {N}) {ct} boundary states for "
                         f"chunk {chunk}, got {tuple(states.shape)} {states.dtype}: run the forward and the backward "
                         "with the same tile")
    z = p["z"]
    shapes = dict(du=(b, E, l), ddt=(b, R, l) if p["low_rank"] else (b, E, l), dA=(E, N), dB=(b, N, l),
                  dC=(b, N, l), dD=(E,), ddt_bias=(E,), dW_dt=(E, R))
    accumulated = {"dA", "dB", "dC", "dD", "ddt_bias", "dW_dt"} | ({"ddt"} if p["low_rank"] else set())
    g = {}
    for name in _GRAD_NAMES:
        given = dest.get(name)
        given = _pair(given, ndir) if given is not None else (None,) * ndir
        if len(given) != ndir:
            raise ValueError(f"{name} must have one destination per direction ({ndir})")
        acc = name in accumulated
        g[name] = tuple(
            _check_dest(X, f"{name}[{i}]", shapes[name], ct if acc else None) if X is not None
            else (torch.zeros if acc else torch.empty)(shapes[name], device=dev, dtype=ct)
            for i, X in enumerate(given))
    dz = out_z = None
    if z is not None:
        dz = _check_dest(dest.get("dz"), "dz", (b, E, l))
        if dz is None:
            dz = torch.empty(b, E, l, device=dev, dtype=ct)
    if want_out_z:
        out_z = _check_dest(dest.get("out_z"), "out_z", (b, E, l))
        if out_z is None:
            out_z = torch.empty(b, E, l, device=dev, dtype=u0.dtype)
    zz = z if z is not None else u0
    dzz = dz if dz is not None else u0
    ozz = out_z if out_z is not None else u0
    ybuf = torch.empty(b, E, l, device=dev, dtype=ct) if ndir == 2 and (z is not None or want_out_z) else states
    qbuf = torch.empty(b, E, 2, N, device=dev, dtype=ct)

    def grads(i):
        return [g["du"][i], *g["du"][i].stride(), g["ddt"][i], *g["ddt"][i].stride(), g["dB"][i],
                *g["dB"][i].stride(), g["dC"][i], *g["dC"][i].stride(), g["dA"][i], g["dD"][i], g["ddt_bias"][i],
                g["dW_dt"][i]]

    j = 1 if ndir == 2 else 0
    grid = (_cdiv(E, bd), b)
    _scan_bwd_kernel[grid](
        *_dir_args(p, 0), *grads(0), *_dir_args(p, j), *grads(j), zz, *zz.stride(), dout, *dout.stride(),
        dzz, *dzz.stride(), ozz, *ozz.stride(), ybuf, states, qbuf, l, E, N, R, nchunk, float(scale),
        **_flags(p, drop_D, softplus), WANT_OZ=bool(want_out_z), BLOCK_C=bd, NP=triton.next_power_of_2(N),
        CHUNK=chunk, ACC=_tl_acc(ct), num_warps=tile["num_warps"],
    )
    res = {}
    for name in _GRAD_NAMES:
        src = {"dD": "D", "ddt_bias": "dt_bias", "dW_dt": "W_dt"}.get(name)
        res[name] = tuple(None if src is not None and p[src][i] is None else g[name][i] for i in range(ndir))
    if not p["low_rank"]:
        res["dW_dt"] = None
    res["dz"] = dz
    if want_out_z:
        res["out_z"] = out_z
    return res


def bi_scan_fwd(
    u, dt, A, B, C, D, dt_bias, z=None, *, W_dt=None, a_log=False, softplus=True,
    residual=(True, True), masked=(False, True), drop_D=False, scale=1.0, out=None, save_states=False,
):
    """The fused mixer's scan, forward, in ONE kernel launch: ``scale * sum_i y_i [* SiLU(z)]`` over the directions.

    Arguments and meaning as :func:`mamba.ops.selective_scan.bi_scan_fwd_ref` (one or two directions, direction 1
    read from the last token to the first in place; ``(b, ., l)`` tensors of any strides, coalesced when
    ``stride(-1) == 1``; with ``W_dt`` the delta is ``W_dt @ dt`` computed in the kernel from fp32 ``W_dt``).
    Kernel-only extras:

    * ``out``: the destination ``(b, E, l)`` (any strides and float dtype; the default is a new tensor of u's dtype);
    * ``save_states``: also return the chunk-boundary states (an fp32 tensor ``(ndir, b, E, ceil(l / chunk), N)``,
      opaque: hand it to :func:`bi_scan_bwd` unchanged, under the same tile).

    Returns ``out``, or ``(out, states)`` with ``save_states``.
    """
    p = _normalize(u, dt, A, B, C, D, dt_bias, z, W_dt, a_log, residual, masked)
    out, states = _forward(p, softplus=softplus, drop_D=drop_D, scale=scale, out=out)
    return (out, states) if save_states else out


def bi_scan_bwd(
    u, dt, A, B, C, D, dt_bias, z, dout, *, W_dt=None, a_log=False, softplus=True,
    residual=(True, True), masked=(False, True), drop_D=False, scale=1.0, want_out_z=False,
    states=None, du=None, ddt=None, dA=None, dB=None, dC=None, dD=None, ddt_bias=None, dW_dt=None, dz=None,
    out_z=None,
):
    """The fused mixer's scan, backward, in ONE kernel launch (two without ``states``: the forward is rerun to get
    them). Same arguments and result as :func:`mamba.ops.selective_scan.bi_scan_bwd_ref` (a dict ``du, ddt, dA, dB,
    dC, dD, ddt_bias, dW_dt`` of per-direction tuples, ``dz``, and ``out_z`` with ``want_out_z``), plus:

    * ``states``: the forward's boundary states (``bi_scan_fwd(..., save_states=True)``);
    * destinations, each a per-direction sequence (or one tensor for ``dz`` / ``out_z``) with the gradient's shape,
      any strides. ``du``, ``ddt`` (delta given as a tensor), ``dz``, ``out_z`` are written (any float dtype);
      ``ddt`` with ``W_dt`` (the d(dt_low) rows), ``dB``, ``dC``, ``dA``, ``dD``, ``ddt_bias``, ``dW_dt`` are fp32
      (fp64 for fp64 inputs) and ACCUMULATED into (atomics over channels and batch rows): pass them zeroed, e.g.
      the rows of one zeroed x_proj-output gradient buffer, so the caller gets it assembled without a copy.

    Gradients not given are new tensors (fp32, fp64 for fp64 inputs; ``out_z`` in u's dtype). The result holds the
    destinations themselves.
    """
    return _bwd(_normalize(u, dt, A, B, C, D, dt_bias, z, W_dt, a_log, residual, masked), dout, states,
                dict(du=du, ddt=ddt, dA=dA, dB=dB, dC=dC, dD=dD, ddt_bias=ddt_bias, dW_dt=dW_dt, dz=dz, out_z=out_z),
                softplus=softplus, drop_D=drop_D, scale=scale, want_out_z=want_out_z)


def _bwd(p, dout, states, dest, *, softplus, drop_D, scale, want_out_z, tile=None):
    kw = dict(softplus=softplus, drop_D=drop_D, scale=scale)
    if states is None:
        tile = tile or scan_tile(p["E"], p["l"])
        _, states = _forward(p, tile=tile, **kw)
    return _backward(p, dout, states, want_out_z=want_out_z, dest=dest, tile=tile, **kw)


def _grad_bc(g, X):
    return g.view(X.shape).to(X.dtype) if X.dim() == 4 else g.to(X.dtype)


class _ScanFn(torch.autograd.Function):
    """One or two directions summed into one output: out = (sum_i y_i) * scale [* SiLU(z)] (public entries)."""

    @staticmethod
    def forward(ctx, cfg, z, *flat):
        nd = cfg["ndir"]
        t = [flat[i * 7:(i + 1) * 7] for i in range(nd)]  # (u, delta, A, B, C, D, bias) per direction
        p = _normalize([x[0] for x in t], [x[1] for x in t], [x[2] for x in t], [x[3] for x in t], [x[4] for x in t],
                       [x[5] for x in t], [x[6] for x in t], z, None, False, cfg["residual"], cfg["masked"])
        last = None
        if cfg["return_last_state"]:
            last = torch.empty(p["b"], p["E"], p["N"], device=p["u"][0].device, dtype=p["ct"])
        tile = scan_tile(p["E"], p["l"])
        out, states = _forward(p, softplus=cfg["softplus"], drop_D=cfg["drop_D"], scale=cfg["scale"], last=last,
                               tile=tile)
        ctx.cfg, ctx.tile = cfg, tile  # the backward walks the chunks of the forward's tile
        ctx.save_for_backward(z, states, *flat)
        ctx.mark_non_differentiable(*([last] if last is not None else []))
        return (out, last) if last is not None else out

    @staticmethod
    def backward(ctx, dout, *unused):
        cfg = ctx.cfg
        nd = cfg["ndir"]
        z, states, *flat = ctx.saved_tensors
        t = [flat[i * 7:(i + 1) * 7] for i in range(nd)]
        p = _normalize([x[0] for x in t], [x[1] for x in t], [x[2] for x in t], [x[3] for x in t],
                       [x[4] for x in t], [x[5] for x in t], [x[6] for x in t], z, None, False, cfg["residual"],
                       cfg["masked"])
        res = _bwd(p, dout, states, {}, softplus=cfg["softplus"], drop_D=cfg["drop_D"], scale=cfg["scale"],
                   want_out_z=False, tile=ctx.tile)
        grads = []
        for i, (u, delta, A, B, C, D, bias) in enumerate(t):
            grads += [res["du"][i].to(u.dtype), res["ddt"][i].to(delta.dtype), res["dA"][i].to(A.dtype),
                      _grad_bc(res["dB"][i], B), _grad_bc(res["dC"][i], C),
                      None if D is None else res["dD"][i].to(D.dtype),
                      None if bias is None else res["ddt_bias"][i].to(bias.dtype)]
        dz = None if z is None else res["dz"].to(z.dtype)
        return (None, dz, *grads)


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, residual=False, masked=False, mask_drops_D=False,
):
    """Selective scan on the fused Triton kernels; same semantics as ``selective_scan_ref``.

    Returns ``out`` (u's dtype) [and ``last_state (b, d, n)`` in float32 (float64 for float64 input)].
    """
    _require_triton()
    if u.dim() == 3 and z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    cfg = dict(ndir=1, residual=(residual,), masked=(masked,), softplus=delta_softplus, drop_D=mask_drops_D,
               scale=1.0, return_last_state=bool(return_last_state))
    return _ScanFn.apply(cfg, z, u, delta, A, B, C, D, delta_bias)


def bi_selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
    *, residual=(True, True), masked=(False, True), mask_drops_D=False, average=False,
):
    """Both directions of a bidirectional layer in one autograd node (one forward and one backward launch); same
    semantics as ``bi_selective_scan_ref``.

    ``u, delta, A, B, C, D, delta_bias`` are (forward, backward) pairs in natural token order; the backward
    direction is read in reverse inside the kernel. Returns ``(y_f + y_b) [* 0.5] [* SiLU(z)]``.
    """
    _require_triton()
    u, delta, A, B, C = (_pair(x) for x in (u, delta, A, B, C))
    D, delta_bias = _pair(D), _pair(delta_bias)
    residual, masked = _pair(residual), _pair(masked)
    if u[1].shape != u[0].shape:
        raise ValueError(f"forward and backward u must have one shape, got {tuple(u[0].shape)}, {tuple(u[1].shape)}")
    if z is not None and z.shape != u[0].shape:
        raise ValueError(f"z must have u's shape {tuple(u[0].shape)}, got {tuple(z.shape)}")
    cfg = dict(ndir=2, residual=residual, masked=masked, softplus=delta_softplus, drop_D=mask_drops_D,
               scale=0.5 if average else 1.0, return_last_state=False)
    flat = []
    for i in range(2):
        flat += [u[i], delta[i], A[i], B[i], C[i], D[i], delta_bias[i]]
    return _ScanFn.apply(cfg, z, *flat)


# ----------------------------------------------------------------------------------------------------
# ahead-of-time compilation (the kernel-module protocol of ``mamba.ops.triton_aot``, where the scan's jobs live)

AOT_KERNELS = ("_scan_fwd_kernel", "_scan_bwd_kernel")


def aot_jobs(matrix: str) -> list:
    """AOT jobs of the scan kernels: ``triton_aot.scan_aot_jobs``."""
    return triton_aot.scan_aot_jobs(matrix)


def aot_record(job: dict) -> list:
    """The launches of one AOT job: ``triton_aot.scan_aot_record``."""
    return triton_aot.scan_aot_record(job)


def aot_describe(kernel, kwargs) -> str:
    return triton_aot.describe_scan_launch(kernel, kwargs)


for _k in _TILE_KEYS:  # VMP_TRITON_BLOCK_D / _CHUNK / _NUM_WARPS: force a tile (benchmarks, tuning)
    if os.environ.get(f"VMP_TRITON_{_k.upper()}"):
        _OVERRIDE[_k] = _check_tile_value(_k, int(os.environ[f"VMP_TRITON_{_k.upper()}"]))
