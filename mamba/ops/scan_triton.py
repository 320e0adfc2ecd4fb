"""Fused Triton kernels for the (bidirectional) VideoMambaPro selective scan (backend ``triton``).

Same semantics as :func:`mamba.ops.selective_scan.selective_scan_ref` (see that module's docstring).

Design
------
* One program per (batch, block of ``BLOCK_D`` channels) holds the state ``h: (BLOCK_D, N)`` in fp32
  (fp64 for fp64 inputs) and walks the sequence in chunks of ``CHUNK`` steps; inside a chunk the
  linear recurrence ``h_t = a_t h_{t-1} + b_t`` is an associative scan (``tl.associative_scan``), the
  chunk's first state comes from the previous chunk.
* Everything is fused: delta_bias, softplus, ``D``, the ``SiLU(z)`` gate, the diagonal mask (subtract
  ``delta * u * sum_n(B * C)``) and the residual start (``h_{-1} = u_0``).
* A direction is scanned forward or in reverse (``REVERSE``) by reading the tensors at ``l - 1 - s``:
  the bidirectional entry makes no flipped copy of u, delta, B, C or z. It runs the forward direction
  into an fp32 accumulator and the backward direction on top of it, then scales (``average``) and
  gates once (gate after the sum).
* The forward kernel stores the state at every chunk start (``(b, d, n_chunks, N)``, i.e. 1/CHUNK of
  the (b, d, l, N) states); the backward kernel walks the chunks in reverse, recomputes the chunk's
  states from that boundary state and runs the adjoint recurrence
  ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` as a reverse associative scan (``a_{t+1}`` is read from memory
  one step ahead, so no register shift is needed).
* dB / dC need a sum over channels: each program writes its partial ``(N, l)`` slice to a
  ``(b, n_dblocks, N, l)`` buffer that is summed afterwards (deterministic, no atomics); dA, dD and
  d(delta_bias) are reduced over the batch the same way.

Limits: grouped B/C ``(b, g, n, l)`` with g > 1 is rejected (use the torch backend); fp64 inputs are
computed in fp64 (works in the interpreter and on GPUs, slowly: it exists for gradcheck).
On CPU the kernels run only through Triton's interpreter: set ``TRITON_INTERPRET=1`` before this
module is imported (Triton reads it when the kernels are decorated).
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch

from . import triton_aot

try:  # triton is optional: the error below says what to install
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

__all__ = ["selective_scan_triton", "bi_selective_scan_triton", "triton_scan_config", "scan_tile", "DEFAULT_TILE",
           "TILE_TABLE"]

_INSTALL = (
    "the triton scan backend needs triton (pip install triton; it ships with CUDA builds of torch). "
    "Kernels need a CUDA GPU, or TRITON_INTERPRET=1 (set before import) to run on the CPU."
)

# Tiles: one program holds a (chunk, block_d, N) working set in registers, spread over num_warps warps. With
# block_d = 2 x num_warps, Triton's layout puts the 16 states on 16 lanes and the channels on 2 lanes x the
# warps, so each thread keeps its whole chunk of steps (scans and carries in-thread). Every tile in
# DEFAULT_TILE and TILE_TABLE compiles with 0 bytes of register spills (forward and backward kernels, sm_80
# and sm_90, fp32 and bf16 inputs, every VideoMambaPro flag combination): tests/ops/test_scan_triton_aot.py
# checks that ahead of time with ptxas, without a GPU. Chunk 32 sits at 255 registers in the backward and
# spills in some variants; the former 16 x 32 x 4 warps tile spilled ~2 KB per thread backward.
DEFAULT_TILE = {"block_d": 8, "chunk": 16, "num_warps": 4}
# (max d, max l, tile), first matching row wins (None: unbounded). The grid is (d / block_d) x batch programs
# and long clips train at a small per-GPU batch (Ti at 64 frames, batch 2: 96 programs of 8 channels for
# ~132 SMs), so from 16 frames on a program takes 4 channels on 2 warps (same per-thread work, twice the
# programs). `scripts/bench_gpu.py --sweep` times candidates on a GPU.
TILE_TABLE = (
    (None, 2048, DEFAULT_TILE),  # images (l = 197) and 8-frame clips (l = 1569)
    (None, None, {"block_d": 4, "chunk": 16, "num_warps": 2}),  # 16 to 64 frames (l = 3137 to 12545)
)
# Register budget of the forward kernel (ptxas .maxnreg). It needs 80-125 registers; without a budget ptxas on
# sm_90 packs some variants into 80 registers for occupancy and spills 4-12 bytes to get there.
FWD_MAXNREG = 128
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


def _require_triton():
    if triton is None:
        raise RuntimeError(_INSTALL)


if triton is not None:

    @triton.jit
    def _lin_combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): x -> a2 * (a1 * x + b1) + b2
        return a1 * a2, b1 * a2 + b2

    # Tiles are laid out (CHUNK, BLOCK_D, NP): with the chunk axis first, Triton's default layout keeps a
    # thread's steps of one (channel, state) pair in its own registers, so the associative scans and the
    # per-chunk carries run sequentially inside a thread (no shuffles); the reductions over states
    # (y, du, ddelta) are warp shuffles and those over channels (dB, dC) cross warps.

    @triton.jit
    def _scan_fwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr,
        acc_ptr, out_ptr, hbuf_ptr, last_ptr,
        L, DM, N, NCHUNK,
        su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
        scale,
        REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
        HAS_Z: tl.constexpr, RESIDUAL: tl.constexpr, MASKED: tl.constexpr, DROP_D: tl.constexpr,
        ACC_IN: tl.constexpr, WRITE_ACC: tl.constexpr, SAVE_STATES: tl.constexpr, SAVE_LAST: tl.constexpr,
        BLOCK_D: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr,
    ):
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, NP)
        ar = tl.arange(0, CHUNK)
        mask_d = offs_d < DM
        mask_n = offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)  # (BD, NP)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        u_base = u_ptr + pid_b * su_b + offs_d[None, :] * su_d  # (1, BD): + step * stride -> (CHUNK, BD)
        dt_base = dt_ptr + pid_b * sdt_b + offs_d[None, :] * sdt_d
        B_base = B_ptr + pid_b * sB_b + offs_n[None, :] * sB_n  # (1, NP)
        C_base = C_ptr + pid_b * sC_b + offs_n[None, :] * sC_n
        io_off = pid_b * DM * L + offs_d[None, :] * L  # contiguous (b, d, l) acc / out
        if RESIDUAL:
            first = L - 1 if REVERSE else 0
            u0 = tl.load(u_ptr + pid_b * su_b + offs_d * su_d + first * su_l, mask=mask_d, other=0.0).to(ACC)
            h = tl.zeros((BLOCK_D, NP), dtype=ACC) + u0[:, None]
        else:
            h = tl.zeros((BLOCK_D, NP), dtype=ACC)
        hb_off = (pid_b * DM + offs_d[:, None]) * NCHUNK * N + offs_n[None, :]
        for k in range(0, NCHUNK):
            if SAVE_STATES:
                tl.store(hbuf_ptr + hb_off + k * N, h, mask=mask_dn)
            offs_s = k * CHUNK + ar
            mask_s = offs_s < L
            if REVERSE:
                pos = L - 1 - offs_s
            else:
                pos = offs_s
            m2 = mask_s[:, None] & mask_d[None, :]  # (CHUNK, BD)
            u = tl.load(u_base + pos[:, None] * su_l, mask=m2, other=0.0).to(ACC)
            dt = tl.load(dt_base + pos[:, None] * sdt_l, mask=m2, other=0.0).to(ACC)
            if HAS_BIAS:
                dt = dt + bias[None, :]
            if SOFTPLUS:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            dt = tl.where(m2, dt, 0.0)  # padded steps: a = 1, b = 0, the state passes unchanged
            mns = mask_s[:, None] & mask_n[None, :]  # (CHUNK, NP)
            Bt = tl.load(B_base + pos[:, None] * sB_l, mask=mns, other=0.0).to(ACC)
            Ct = tl.load(C_base + pos[:, None] * sC_l, mask=mns, other=0.0).to(ACC)
            dA = tl.exp(dt[:, :, None] * A[None, :, :])  # (CHUNK, BD, NP)
            dBu = (dt * u)[:, :, None] * Bt[:, None, :]
            cA, hs = tl.associative_scan((dA, dBu), 0, _lin_combine)
            hs = hs + cA * h[None, :, :]
            y = tl.sum(hs * Ct[:, None, :], axis=2)  # (CHUNK, BD)
            if MASKED:
                y = y - dt * u * tl.sum(Bt * Ct, axis=1)[:, None]
            if HAS_D:
                if not (MASKED and DROP_D):
                    y = y + Dv[None, :] * u
            h = tl.sum(tl.where((ar == CHUNK - 1)[:, None, None], hs, 0.0), axis=0)
            if ACC_IN:
                y = y + tl.load(acc_ptr + io_off + pos[:, None], mask=m2, other=0.0).to(ACC)
            if WRITE_ACC:
                tl.store(acc_ptr + io_off + pos[:, None], y, mask=m2)
            else:
                y = y * scale
                if HAS_Z:
                    zt = tl.load(z_ptr + pid_b * sz_b + offs_d[None, :] * sz_d + pos[:, None] * sz_l,
                                 mask=m2, other=0.0).to(ACC)
                    y = y * zt * tl.sigmoid(zt)
                tl.store(out_ptr + io_off + pos[:, None], y.to(out_ptr.dtype.element_ty), mask=m2)
        if SAVE_LAST:
            tl.store(last_ptr + (pid_b * DM + offs_d[:, None]) * N + offs_n[None, :], h, mask=mask_dn)

    @triton.jit
    def _scan_bwd_kernel(
        u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, dout_ptr, hbuf_ptr,
        du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr,
        L, DM, N, NCHUNK, NDB,
        su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
        scale,
        REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
        HAS_Z: tl.constexpr, RESIDUAL: tl.constexpr, MASKED: tl.constexpr, DROP_D: tl.constexpr,
        DZ_ACC: tl.constexpr,
        BLOCK_D: tl.constexpr, NP: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr,
    ):
        pid_d = tl.program_id(0)
        pid_b = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, NP)
        ar = tl.arange(0, CHUNK)
        mask_d = offs_d < DM
        mask_n = offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        u_base = u_ptr + pid_b * su_b + offs_d[None, :] * su_d
        dt_base = dt_ptr + pid_b * sdt_b + offs_d[None, :] * sdt_d
        B_base = B_ptr + pid_b * sB_b + offs_n[None, :] * sB_n
        C_base = C_ptr + pid_b * sC_b + offs_n[None, :] * sC_n
        io_off = pid_b * DM * L + offs_d[None, :] * L
        hb_off = (pid_b * DM + offs_d[:, None]) * NCHUNK * N + offs_n[None, :]
        part_off = ((pid_b * NDB + pid_d) * NP + offs_n[None, :]) * L  # (b, NDB, NP, L) partials
        g_next = tl.zeros((BLOCK_D, NP), dtype=ACC)  # dL/dh at the first step of the chunk after this one
        dA_acc = tl.zeros((BLOCK_D, NP), dtype=ACC)
        dD_acc = tl.zeros((BLOCK_D,), dtype=ACC)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=ACC)
        for kk in range(0, NCHUNK):
            k = NCHUNK - 1 - kk
            offs_s = k * CHUNK + ar
            mask_s = offs_s < L
            mask_s1 = (offs_s + 1) < L
            if REVERSE:
                pos = L - 1 - offs_s
                pos1 = pos - 1
            else:
                pos = offs_s
                pos1 = pos + 1
            m2 = mask_s[:, None] & mask_d[None, :]
            m21 = mask_s1[:, None] & mask_d[None, :]
            u = tl.load(u_base + pos[:, None] * su_l, mask=m2, other=0.0).to(ACC)
            dtr = tl.load(dt_base + pos[:, None] * sdt_l, mask=m2, other=0.0).to(ACC)
            dt1 = tl.load(dt_base + pos1[:, None] * sdt_l, mask=m21, other=0.0).to(ACC)
            if HAS_BIAS:
                dtr = dtr + bias[None, :]
                dt1 = dt1 + bias[None, :]
            if SOFTPLUS:
                dt = tl.where(dtr <= 20.0, tl.log(1.0 + tl.exp(dtr)), dtr)
                dsp = tl.sigmoid(dtr)  # softplus'
                dt1 = tl.where(dt1 <= 20.0, tl.log(1.0 + tl.exp(dt1)), dt1)
            else:
                dt = dtr
            dt = tl.where(m2, dt, 0.0)
            dt1 = tl.where(m21, dt1, 0.0)
            mns = mask_s[:, None] & mask_n[None, :]
            Bt = tl.load(B_base + pos[:, None] * sB_l, mask=mns, other=0.0).to(ACC)
            Ct = tl.load(C_base + pos[:, None] * sC_l, mask=mns, other=0.0).to(ACC)
            # recompute the chunk's states from the saved boundary state
            h0 = tl.load(hbuf_ptr + hb_off + k * N, mask=mask_dn, other=0.0).to(ACC)
            dtu = dt * u
            dBu = dtu[:, :, None] * Bt[:, None, :]
            cA, hs = tl.associative_scan((tl.exp(dt[:, :, None] * A[None, :, :]), dBu), 0, _lin_combine)
            hs = hs + cA * h0[None, :, :]
            if MASKED:
                BC = tl.sum(Bt * Ct, axis=1)[:, None]  # (CHUNK, 1)
            dout = tl.load(dout_ptr + io_off + pos[:, None], mask=m2, other=0.0).to(ACC)
            if HAS_Z:
                zt = tl.load(z_ptr + pid_b * sz_b + offs_d[None, :] * sz_d + pos[:, None] * sz_l,
                             mask=m2, other=0.0).to(ACC)
                sig = tl.sigmoid(zt)
                y = tl.sum(hs * Ct[:, None, :], axis=2)
                if MASKED:
                    y = y - dtu * BC
                if HAS_D:
                    if not (MASKED and DROP_D):
                        y = y + Dv[None, :] * u
                dz = dout * scale * y * sig * (1.0 + zt * (1.0 - sig))
                if DZ_ACC:
                    dz = dz + tl.load(dz_ptr + io_off + pos[:, None], mask=m2, other=0.0).to(ACC)
                tl.store(dz_ptr + io_off + pos[:, None], dz, mask=m2)
                dy = dout * scale * zt * sig
            else:
                dy = dout * scale
            # each result is stored as soon as it is final (short live ranges); what needs the states
            # themselves comes first, afterwards only a_t h_{t-1} stays live
            if HAS_D:
                if not (MASKED and DROP_D):
                    dD_acc += tl.sum(dy * u, axis=0)
            mp = mask_s[:, None] & (offs_n < NP)[None, :]
            dCp = tl.sum(hs * dy[:, :, None], axis=1)  # (CHUNK, NP)
            if MASKED:
                s_dyu = tl.sum(dy * dtu, axis=1)[:, None]
                dCp = dCp - s_dyu * Bt
            tl.store(dC_ptr + part_off + pos[:, None], dCp, mask=mp)
            ah = hs - dBu  # a_t * h_{t-1}
            # adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1} (reverse scan), plus the next chunk's carry
            P, G = tl.associative_scan((tl.exp(dt1[:, :, None] * A[None, :, :]), Ct[:, None, :] * dy[:, :, None]),
                                       0, _lin_combine, reverse=True)
            g = G + P * g_next[None, :, :]
            g_next = tl.sum(tl.where((ar == 0)[:, None, None], g, 0.0), axis=0)
            dBp = tl.sum(g * dtu[:, :, None], axis=1)  # (CHUNK, NP)
            if MASKED:
                dBp = dBp - s_dyu * Ct
            tl.store(dB_ptr + part_off + pos[:, None], dBp, mask=mp)
            dA_acc += tl.sum(g * ah * dt[:, :, None], axis=0)
            ddt = tl.sum(g * (A[None, :, :] * ah + Bt[:, None, :] * u[:, :, None]), axis=2)
            if MASKED:
                ddt = ddt - dy * u * BC
            if SOFTPLUS:
                ddt = ddt * dsp
            ddt = tl.where(m2, ddt, 0.0)
            if HAS_BIAS:
                dbias_acc += tl.sum(ddt, axis=0)
            tl.store(ddt_ptr + io_off + pos[:, None], ddt, mask=m2)
            du = tl.sum(g * Bt[:, None, :], axis=2) * dt
            if MASKED:
                du = du - dy * dt * BC
            if HAS_D:
                if not (MASKED and DROP_D):
                    du = du + Dv[None, :] * dy
            if RESIDUAL:
                # h_{-1} = u_0 broadcast: dL/du_0 += sum_n a_0 g_0. g_next now holds g at this chunk's first
                # step; only the chunk holding scan step 0 uses it (2-D work, no (chunk, d, n) tensor kept)
                dt0 = tl.sum(tl.where((ar == 0)[:, None], dt, 0.0), axis=0)
                du0 = tl.sum(tl.exp(dt0[:, None] * A) * g_next, axis=1)
                du = du + tl.where((offs_s == 0)[:, None], du0[None, :], 0.0)
            tl.store(du_ptr + io_off + pos[:, None], du, mask=m2)
        tl.store(dA_ptr + (pid_b * DM + offs_d[:, None]) * N + offs_n[None, :], dA_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dD_ptr + pid_b * DM + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + pid_b * DM + offs_d, dbias_acc, mask=mask_d)


# ----------------------------------------------------------------------------------------------------
# host side


def _check_runs_here(u: torch.Tensor):
    _require_triton()
    if u.device.type != "cuda" and not triton_aot.is_recording():
        from triton.runtime.interpreter import InterpretedFunction

        if not isinstance(_scan_fwd_kernel, InterpretedFunction):
            raise RuntimeError(
                f"the triton scan got tensors on {u.device.type}: Triton kernels run on CUDA GPUs, or on the CPU "
                "through the interpreter when TRITON_INTERPRET=1 is set before mamba.ops.scan_triton is imported"
            )


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


def _dir_spec(u, delta, A, B, C, D, delta_bias, residual, masked):
    """Validated per-direction tensors (B/C ungrouped, A/D/bias contiguous)."""
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (b, d, l); got {tuple(u.shape)} and {tuple(delta.shape)}")
    b, d, l = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n), got {tuple(A.shape)}")
    n = A.shape[1]
    B = _prep_bc(B, "B", b, n, l)
    C = _prep_bc(C, "C", b, n, l)
    for nm, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and tuple(X.shape) != (d,):
            raise ValueError(f"{nm} must be (d={d},), got {tuple(X.shape)}")
    return dict(u=u, delta=delta, A=A.contiguous(), B=B, C=C,
                D=None if D is None else D.contiguous(), bias=None if delta_bias is None else delta_bias.contiguous(),
                residual=bool(residual), masked=bool(masked))


def _strides(s):
    return (*s["u"].stride(), *s["delta"].stride(), *s["B"].stride(), *s["C"].stride())


def _launch_fwd(s, z, acc, out, hbuf, last, *, reverse, softplus, drop_D, acc_in, write_acc, scale, ct, tile):
    u = s["u"]
    b, d, l = u.shape
    n = s["A"].shape[1]
    bd, chunk = tile["block_d"], tile["chunk"]
    nchunk = triton.cdiv(l, chunk)
    dummy = u
    zz = z if z is not None else dummy
    grid = (triton.cdiv(d, bd), b)
    _scan_fwd_kernel[grid](
        u, s["delta"], s["A"], s["B"], s["C"],
        s["D"] if s["D"] is not None else dummy, s["bias"] if s["bias"] is not None else dummy, zz,
        acc if acc is not None else dummy, out if out is not None else dummy,
        hbuf if hbuf is not None else dummy, last if last is not None else dummy,
        l, d, n, nchunk, *_strides(s), *zz.stride(), float(scale),
        REVERSE=reverse, SOFTPLUS=bool(softplus), HAS_D=s["D"] is not None, HAS_BIAS=s["bias"] is not None,
        HAS_Z=z is not None, RESIDUAL=s["residual"], MASKED=s["masked"], DROP_D=bool(drop_D) and s["masked"],
        ACC_IN=acc_in, WRITE_ACC=write_acc, SAVE_STATES=hbuf is not None, SAVE_LAST=last is not None,
        BLOCK_D=bd, NP=triton.next_power_of_2(n), CHUNK=chunk, ACC=_tl_acc(ct), num_warps=tile["num_warps"],
        maxnreg=FWD_MAXNREG,
    )


def _launch_bwd(s, z, dout, hbuf, dz, dz_acc, *, reverse, softplus, drop_D, scale, ct, tile):
    """One direction's backward. Returns (du, ddelta, dA, dB, dC, dD, dbias) in float ``ct``."""
    chunk, bd = tile["chunk"], tile["block_d"]
    u = s["u"]
    b, d, l = u.shape
    n = s["A"].shape[1]
    NP = triton.next_power_of_2(n)
    nchunk = triton.cdiv(l, chunk)
    ndb = triton.cdiv(d, bd)
    dev = u.device
    du = torch.empty(b, d, l, device=dev, dtype=ct)
    ddt = torch.empty(b, d, l, device=dev, dtype=ct)
    dA = torch.empty(b, d, n, device=dev, dtype=ct)
    dBp = torch.empty(b, ndb, NP, l, device=dev, dtype=ct)
    dCp = torch.empty(b, ndb, NP, l, device=dev, dtype=ct)
    dD = torch.empty(b, d, device=dev, dtype=ct) if s["D"] is not None else None
    dbias = torch.empty(b, d, device=dev, dtype=ct) if s["bias"] is not None else None
    dummy = du
    zz = z if z is not None else u
    _scan_bwd_kernel[(ndb, b)](
        u, s["delta"], s["A"], s["B"], s["C"],
        s["D"] if s["D"] is not None else dummy, s["bias"] if s["bias"] is not None else dummy, zz,
        dout, hbuf, du, ddt, dA, dBp, dCp,
        dD if dD is not None else dummy, dbias if dbias is not None else dummy, dz if dz is not None else dummy,
        l, d, n, nchunk, ndb, *_strides(s), *zz.stride(), float(scale),
        REVERSE=reverse, SOFTPLUS=bool(softplus), HAS_D=s["D"] is not None, HAS_BIAS=s["bias"] is not None,
        HAS_Z=z is not None, RESIDUAL=s["residual"], MASKED=s["masked"], DROP_D=bool(drop_D) and s["masked"],
        DZ_ACC=dz_acc,
        BLOCK_D=bd, NP=NP, CHUNK=chunk, ACC=_tl_acc(ct), num_warps=tile["num_warps"],
    )
    dB = dBp.sum(1)[:, :n]
    dC = dCp.sum(1)[:, :n]
    return (du, ddt, dA.sum(0), dB, dC, None if dD is None else dD.sum(0), None if dbias is None else dbias.sum(0))


def _cast_grad(g, like):
    if g is None or like is None:
        return None
    return g.to(like.dtype)


def _grad_bc(g, X):
    return g.view(X.shape).to(X.dtype) if X.dim() == 4 else g.to(X.dtype)


class _BiScanFn(torch.autograd.Function):
    """k in {1, 2} directions summed into one output: out = (sum_k y_k) * scale [* SiLU(z)]."""

    @staticmethod
    def forward(ctx, cfg, z, *flat):
        nd = cfg["ndir"]
        tensors = [flat[i * 7:(i + 1) * 7] for i in range(nd)]  # (u, delta, A, B, C, D, bias) per direction
        specs = [_dir_spec(*t, residual=cfg["residual"][i], masked=cfg["masked"][i]) for i, t in enumerate(tensors)]
        u0 = specs[0]["u"]
        _check_runs_here(u0)
        b, d, l = u0.shape
        ct = _acc_dtype(u0)
        tile = scan_tile(d, l)
        chunk = tile["chunk"]
        out = torch.empty(b, d, l, device=u0.device, dtype=u0.dtype)
        acc = torch.empty(b, d, l, device=u0.device, dtype=ct) if nd > 1 else None
        hbufs, last = [], None
        for i, s in enumerate(specs):
            n = s["A"].shape[1]
            hbuf = torch.empty(b, d, triton.cdiv(l, chunk), n, device=u0.device, dtype=ct)
            is_final = i == nd - 1
            if is_final and cfg["return_last_state"]:
                last = torch.empty(b, d, n, device=u0.device, dtype=ct)
            _launch_fwd(
                s, z if is_final else None, acc, out if is_final else None, hbuf, last if is_final else None,
                reverse=cfg["reverse"][i], softplus=cfg["softplus"], drop_D=cfg["drop_D"],
                acc_in=i > 0, write_acc=not is_final, scale=cfg["scale"] if is_final else 1.0, ct=ct, tile=tile,
            )
            hbufs.append(hbuf)
        ctx.cfg, ctx.tile, ctx.ct = cfg, tile, ct  # the backward walks the states saved every tile["chunk"]
        ctx.save_for_backward(z, *flat, *hbufs)
        ctx.mark_non_differentiable(*([last] if last is not None else []))
        return (out, last) if last is not None else out

    @staticmethod
    def backward(ctx, dout, *unused):
        cfg = ctx.cfg
        nd = cfg["ndir"]
        z, *rest = ctx.saved_tensors
        flat, hbufs = rest[: 7 * nd], rest[7 * nd:]
        tensors = [flat[i * 7:(i + 1) * 7] for i in range(nd)]
        specs = [_dir_spec(*t, residual=cfg["residual"][i], masked=cfg["masked"][i]) for i, t in enumerate(tensors)]
        dout = dout.contiguous()
        b, d, l = specs[0]["u"].shape
        dz = torch.empty(b, d, l, device=dout.device, dtype=ctx.ct) if z is not None else None
        grads = []
        for i, s in enumerate(specs):
            du, ddt, dA, dB, dC, dD, dbias = _launch_bwd(
                s, z, dout, hbufs[i], dz, i > 0, reverse=cfg["reverse"][i], softplus=cfg["softplus"],
                drop_D=cfg["drop_D"], scale=cfg["scale"], ct=ctx.ct, tile=ctx.tile,
            )
            u, delta, A, B, C, D, bias = tensors[i]
            grads += [du.to(u.dtype), ddt.to(delta.dtype), dA.to(A.dtype), _grad_bc(dB, B), _grad_bc(dC, C),
                      _cast_grad(dD, D), _cast_grad(dbias, bias)]
        return (None, None if dz is None else dz.to(z.dtype), *grads)


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, residual=False, masked=False, mask_drops_D=False,
):
    """Selective scan on the fused Triton kernels; same semantics as ``selective_scan_ref``.

    Returns ``out`` (u's dtype) [and ``last_state (b, d, n)`` in float32 (float64 for float64 input)].
    """
    _require_triton()
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    cfg = dict(ndir=1, residual=(residual,), masked=(masked,), reverse=(False,), softplus=delta_softplus,
               drop_D=mask_drops_D, scale=1.0, return_last_state=bool(return_last_state))
    return _BiScanFn.apply(cfg, z, u, delta, A, B, C, D, delta_bias)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def bi_selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
    *, residual=(True, True), masked=(False, True), mask_drops_D=False, average=False,
):
    """Both directions of a bidirectional layer in one autograd node; same semantics as ``bi_selective_scan_ref``.

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
    cfg = dict(ndir=2, residual=residual, masked=masked, reverse=(False, True), softplus=delta_softplus,
               drop_D=mask_drops_D, scale=0.5 if average else 1.0, return_last_state=False)
    flat = []
    for i in range(2):
        flat += [u[i], delta[i], A[i], B[i], C[i], D[i], delta_bias[i]]
    return _BiScanFn.apply(cfg, z, *flat)


# ----------------------------------------------------------------------------------------------------
# ahead-of-time compilation for real GPUs, without one (tests/ops/test_scan_triton_aot.py, bench_gpu.py)

# VideoMambaPro flag combinations of one bidirectional layer (bi_selective_scan_triton keyword arguments;
# "gate": z given). Per-direction residual options ("forward" / "backward") launch kernels with the same
# constexpr sets as these, direction by direction.
AOT_VARIANTS = {
    f"{name}{'+dropD' if drop else ''}{'' if gate else '-nogate'}": dict(
        residual=(res, res), masked=(False, mask), mask_drops_D=drop, gate=gate)
    for name, res, mask in (("videomambapro", True, True), ("videomamba", False, False),
                            ("mask-only", False, True), ("residual-only", True, False))
    for drop in ((False, True) if mask else (False,))
    for gate in (True, False)
}
# tensor layouts of the scan inputs: "model" = as mamba.modules.bimamba passes them (delta, B, C, z are
# transposed views of (b, l, .) projections, so their channel stride is 1); "contiguous" = (b, ., l) dense
AOT_LAYOUTS = ("model", "contiguous")


def _aot_inputs(b, E, N, l, dtype, layout, gate, dt_rank):
    """CPU stand-ins for one layer's scan inputs, with the strides and offsets a real call has."""
    def leaf(x):
        return x.requires_grad_()

    if layout == "model":
        def direction():
            u = torch.zeros(b, E, l, dtype=dtype)  # causal conv output
            delta = torch.zeros(b, l, E, dtype=dtype).transpose(1, 2)  # (dt @ W^T).transpose(1, 2)
            dbc = torch.zeros(b, l, dt_rank + 2 * N, dtype=dtype)  # x_proj output, split and transposed
            B, C = dbc[..., dt_rank:dt_rank + N].transpose(1, 2), dbc[..., dt_rank + N:].transpose(1, 2)
            return [leaf(u), leaf(delta), B.detach().requires_grad_(), C.detach().requires_grad_()]
        # in_proj output (b, l, 2E).transpose(1, 2), second half
        z = torch.zeros(b, l, 2 * E, dtype=dtype).transpose(1, 2)[:, E:].detach().requires_grad_() if gate else None
    elif layout == "contiguous":
        def direction():
            return [leaf(torch.zeros(b, E, l, dtype=dtype)), leaf(torch.zeros(b, E, l, dtype=dtype)),
                    leaf(torch.zeros(b, N, l, dtype=dtype)), leaf(torch.zeros(b, N, l, dtype=dtype))]
        z = leaf(torch.zeros(b, E, l, dtype=dtype)) if gate else None
    else:
        raise ValueError(f"layout must be one of {AOT_LAYOUTS}, got {layout!r}")
    f, r = direction(), direction()
    A = tuple(leaf(-torch.ones(E, N)) for _ in range(2))
    D = tuple(leaf(torch.ones(E)) for _ in range(2))
    bias = tuple(leaf(torch.zeros(E)) for _ in range(2))
    return (f[0], r[0]), (f[1], r[1]), A, (f[2], r[2]), (f[3], r[3]), D, z, bias


def record_launches(variant, *, tile=None, dtype=torch.bfloat16, layout="model", bidirectional=True,
                    b=2, E=384, N=16, l=1569, dt_rank=12):
    """Every kernel launch (kernel, grid, args, kwargs) one forward + backward of a layer makes.

    ``variant`` is a key of AOT_VARIANTS (or its dict). Runs the real host code on CPU tensors shaped like
    a VideoMamba-Ti layer at 8 frames (E = 384, l = 1569) with the kernels replaced by recorders, so the
    launches carry exactly the constexprs, dtypes, strides and alignments a GPU run would specialize on.
    ``bidirectional=False`` records the single-direction entry instead (forward direction's options).
    """
    v = AOT_VARIANTS[variant] if isinstance(variant, str) else variant
    u, delta, A, B, C, D, z, bias = _aot_inputs(b, E, N, l, dtype, layout, v["gate"], dt_rank)
    with contextlib.ExitStack() as stack:
        calls = stack.enter_context(triton_aot.recording(sys.modules[__name__]))
        if tile is not None:
            stack.enter_context(triton_scan_config(**tile))
        if bidirectional:
            out = bi_selective_scan_triton(u, delta, A, B, C, D, z, bias, True, residual=v["residual"],
                                           masked=v["masked"], mask_drops_D=v["mask_drops_D"])
        else:  # the single-direction entry: the backward direction's options on a forward scan
            out, _ = selective_scan_triton(u[0], delta[0], A[0], B[0], C[0], D[0], z, bias[0], True, True,
                                           residual=v["residual"][1], masked=v["masked"][1],
                                           mask_drops_D=v["mask_drops_D"])
        out.backward(torch.zeros_like(out))
    return calls


_ROLE_KEYS = ("REVERSE", "RESIDUAL", "MASKED", "DROP_D", "HAS_Z", "ACC_IN", "WRITE_ACC", "SAVE_LAST", "DZ_ACC")


def describe_launch(kernel, kwargs) -> str:
    """Short name of a launch: kernel and its set flags, e.g. ``bwd REVERSE+MASKED+HAS_Z+DZ_ACC bf16``."""
    flags = "+".join(k for k in _ROLE_KEYS if kwargs.get(k) is True) or "-"
    return f"{triton_aot.kernel_name(kernel).replace('_scan_', '').replace('_kernel', '')} {flags}"


AOT_KERNELS = ("_scan_fwd_kernel", "_scan_bwd_kernel")


def aot_jobs(matrix: str) -> list:
    """AOT jobs (see ``mamba.ops.triton_aot``): ``default`` the default tile on the VideoMambaPro and VideoMamba
    layers (bf16, the mixer's layout) and fp32 contiguous inputs; ``table`` every other TILE_TABLE tile on the
    VideoMambaPro layer; ``full`` every flag combination x fp32/bf16 x layouts x entries x table tiles."""
    other_tiles = [t for *_, t in TILE_TABLE if t != DEFAULT_TILE]
    if matrix == "default":
        return ([dict(variant=v) for v in ("videomambapro", "videomamba")]
                + [dict(variant="videomambapro", dtype="fp32", layout="contiguous")])
    if matrix == "table":
        return [dict(variant="videomambapro", tile=t) for t in other_tiles]
    if matrix == "full":
        return [dict(variant=v, tile=t, dtype=dt, layout=lay, bidirectional=bi)
                for *_, t in TILE_TABLE for v in AOT_VARIANTS for dt in ("bf16", "fp32")
                for lay in AOT_LAYOUTS for bi in (True, False)]
    raise ValueError(f"matrix must be default, table or full, got {matrix!r}")


def aot_record(job: dict) -> list:
    """The launches of one AOT job (see ``aot_jobs``)."""
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    tile = {**DEFAULT_TILE, **(job.get("tile") or {})}
    return record_launches(job["variant"], tile=tile, dtype=dtypes[job.get("dtype", "bf16")],
                           layout=job.get("layout", "model"), bidirectional=job.get("bidirectional", True))


aot_describe = describe_launch


for _k in _TILE_KEYS:  # VMP_TRITON_BLOCK_D / _CHUNK / _NUM_WARPS: force a tile (benchmarks, tuning)
    if os.environ.get(f"VMP_TRITON_{_k.upper()}"):
        _OVERRIDE[_k] = _check_tile_value(_k, int(os.environ[f"VMP_TRITON_{_k.upper()}"]))
