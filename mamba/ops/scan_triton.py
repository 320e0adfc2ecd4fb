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

import torch

try:  # triton is optional: the error below says what to install
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

__all__ = ["selective_scan_triton", "bi_selective_scan_triton", "triton_scan_config"]

_INSTALL = (
    "the triton scan backend needs triton (pip install triton; it ships with CUDA builds of torch). "
    "Kernels need a CUDA GPU, or TRITON_INTERPRET=1 (set before import) to run on the CPU."
)

# Tile sizes; CHUNK must be a power of two. Changed by tests (small chunks) and by benchmarks.
_CFG = {"block_d": 16, "chunk": 32, "num_warps": 4}


@contextlib.contextmanager
def triton_scan_config(block_d: int | None = None, chunk: int | None = None, num_warps: int | None = None):
    """Temporarily change the kernels' tile sizes (powers of two)."""
    old = dict(_CFG)
    for k, v in (("block_d", block_d), ("chunk", chunk), ("num_warps", num_warps)):
        if v is not None:
            if v < 1 or v & (v - 1):
                raise ValueError(f"{k} must be a power of two, got {v}")
            _CFG[k] = v
    try:
        yield dict(_CFG)
    finally:
        _CFG.clear()
        _CFG.update(old)


def _require_triton():
    if triton is None:
        raise RuntimeError(_INSTALL)


if triton is not None:

    @triton.jit
    def _lin_combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): x -> a2 * (a1 * x + b1) + b2
        return a1 * a2, b1 * a2 + b2

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
        mask_d = offs_d < DM
        mask_n = offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        u_base = u_ptr + pid_b * su_b + offs_d[:, None] * su_d
        dt_base = dt_ptr + pid_b * sdt_b + offs_d[:, None] * sdt_d
        B_base = B_ptr + pid_b * sB_b + offs_n[:, None] * sB_n
        C_base = C_ptr + pid_b * sC_b + offs_n[:, None] * sC_n
        io_off = pid_b * DM * L + offs_d[:, None] * L  # contiguous (b, d, l) acc / out
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
            offs_s = k * CHUNK + tl.arange(0, CHUNK)
            mask_s = offs_s < L
            if REVERSE:
                pos = L - 1 - offs_s
            else:
                pos = offs_s
            m2 = mask_d[:, None] & mask_s[None, :]
            u = tl.load(u_base + pos[None, :] * su_l, mask=m2, other=0.0).to(ACC)
            dt = tl.load(dt_base + pos[None, :] * sdt_l, mask=m2, other=0.0).to(ACC)
            if HAS_BIAS:
                dt = dt + bias[:, None]
            if SOFTPLUS:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            dt = tl.where(m2, dt, 0.0)  # padded steps: a = 1, b = 0, the state passes unchanged
            mns = mask_n[:, None] & mask_s[None, :]
            Bt = tl.load(B_base + pos[None, :] * sB_l, mask=mns, other=0.0).to(ACC)
            Ct = tl.load(C_base + pos[None, :] * sC_l, mask=mns, other=0.0).to(ACC)
            dA = tl.exp(dt[:, None, :] * A[:, :, None])
            dBu = (dt * u)[:, None, :] * Bt[None, :, :]
            cA, hs = tl.associative_scan((dA, dBu), 2, _lin_combine)
            hs = hs + cA * h[:, :, None]
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if MASKED:
                y = y - dt * u * tl.sum(Bt * Ct, axis=0)[None, :]
            if HAS_D:
                if not (MASKED and DROP_D):
                    y = y + Dv[:, None] * u
            is_last = (tl.arange(0, CHUNK) == CHUNK - 1)[None, None, :]
            h = tl.sum(tl.where(is_last, hs, 0.0), axis=2)
            if ACC_IN:
                y = y + tl.load(acc_ptr + io_off + pos[None, :], mask=m2, other=0.0).to(ACC)
            if WRITE_ACC:
                tl.store(acc_ptr + io_off + pos[None, :], y, mask=m2)
            else:
                y = y * scale
                if HAS_Z:
                    zt = tl.load(z_ptr + pid_b * sz_b + offs_d[:, None] * sz_d + pos[None, :] * sz_l,
                                 mask=m2, other=0.0).to(ACC)
                    y = y * zt * tl.sigmoid(zt)
                tl.store(out_ptr + io_off + pos[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)
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
        mask_d = offs_d < DM
        mask_n = offs_n < N
        mask_dn = mask_d[:, None] & mask_n[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
        u_base = u_ptr + pid_b * su_b + offs_d[:, None] * su_d
        dt_base = dt_ptr + pid_b * sdt_b + offs_d[:, None] * sdt_d
        B_base = B_ptr + pid_b * sB_b + offs_n[:, None] * sB_n
        C_base = C_ptr + pid_b * sC_b + offs_n[:, None] * sC_n
        io_off = pid_b * DM * L + offs_d[:, None] * L
        hb_off = (pid_b * DM + offs_d[:, None]) * NCHUNK * N + offs_n[None, :]
        part_off = ((pid_b * NDB + pid_d) * NP + offs_n[:, None]) * L  # (b, NDB, NP, L) partials
        g_next = tl.zeros((BLOCK_D, NP), dtype=ACC)  # dL/dh at the first step of the chunk after this one
        dA_acc = tl.zeros((BLOCK_D, NP), dtype=ACC)
        dD_acc = tl.zeros((BLOCK_D,), dtype=ACC)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=ACC)
        ar = tl.arange(0, CHUNK)
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
            m2 = mask_d[:, None] & mask_s[None, :]
            m21 = mask_d[:, None] & mask_s1[None, :]
            u = tl.load(u_base + pos[None, :] * su_l, mask=m2, other=0.0).to(ACC)
            dtr = tl.load(dt_base + pos[None, :] * sdt_l, mask=m2, other=0.0).to(ACC)
            dt1 = tl.load(dt_base + pos1[None, :] * sdt_l, mask=m21, other=0.0).to(ACC)
            if HAS_BIAS:
                dtr = dtr + bias[:, None]
                dt1 = dt1 + bias[:, None]
            if SOFTPLUS:
                dt = tl.where(dtr <= 20.0, tl.log(1.0 + tl.exp(dtr)), dtr)
                dt1 = tl.where(dt1 <= 20.0, tl.log(1.0 + tl.exp(dt1)), dt1)
            else:
                dt = dtr
            dt = tl.where(m2, dt, 0.0)
            dt1 = tl.where(m21, dt1, 0.0)
            mns = mask_n[:, None] & mask_s[None, :]
            Bt = tl.load(B_base + pos[None, :] * sB_l, mask=mns, other=0.0).to(ACC)
            Ct = tl.load(C_base + pos[None, :] * sC_l, mask=mns, other=0.0).to(ACC)
            # recompute the chunk's states from the saved boundary state
            h0 = tl.load(hbuf_ptr + hb_off + k * N, mask=mask_dn, other=0.0).to(ACC)
            dA = tl.exp(dt[:, None, :] * A[:, :, None])
            dBu = (dt * u)[:, None, :] * Bt[None, :, :]
            cA, hs = tl.associative_scan((dA, dBu), 2, _lin_combine)
            hs = hs + cA * h0[:, :, None]
            BC = tl.sum(Bt * Ct, axis=0)[None, :]
            dout = tl.load(dout_ptr + io_off + pos[None, :], mask=m2, other=0.0).to(ACC)
            if HAS_Z:
                zt = tl.load(z_ptr + pid_b * sz_b + offs_d[:, None] * sz_d + pos[None, :] * sz_l,
                             mask=m2, other=0.0).to(ACC)
                sig = tl.sigmoid(zt)
                y = tl.sum(hs * Ct[None, :, :], axis=1)
                if MASKED:
                    y = y - dt * u * BC
                if HAS_D:
                    if not (MASKED and DROP_D):
                        y = y + Dv[:, None] * u
                dz = dout * scale * y * sig * (1.0 + zt * (1.0 - sig))
                if DZ_ACC:
                    dz = dz + tl.load(dz_ptr + io_off + pos[None, :], mask=m2, other=0.0).to(ACC)
                tl.store(dz_ptr + io_off + pos[None, :], dz, mask=m2)
                dy = dout * scale * zt * sig
            else:
                dy = dout * scale
            # adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1} (reverse scan), plus the next chunk's carry
            a1 = tl.exp(dt1[:, None, :] * A[:, :, None])
            beta = Ct[None, :, :] * dy[:, None, :]
            P, G = tl.associative_scan((a1, beta), 2, _lin_combine, reverse=True)
            g = G + P * g_next[:, :, None]
            g_next = tl.sum(tl.where((ar == 0)[None, None, :], g, 0.0), axis=2)
            ah = hs - dBu  # a_t * h_{t-1}
            ddt = tl.sum(g * (A[:, :, None] * ah + Bt[None, :, :] * u[:, None, :]), axis=1)
            du = tl.sum(g * Bt[None, :, :], axis=1) * dt
            dA_acc += tl.sum(g * ah * dt[:, None, :], axis=2)
            dyu = dy * dt * u
            if MASKED:
                ddt = ddt - dy * u * BC
                du = du - dy * dt * BC
            if HAS_D:
                if not (MASKED and DROP_D):
                    du = du + Dv[:, None] * dy
                    dD_acc += tl.sum(dy * u, axis=1)
            if RESIDUAL:
                # h_{-1} = u_0 broadcast: dL/du_0 += sum_n a_0 g_0 (scan step 0 only)
                du = du + tl.where((offs_s == 0)[None, :], tl.sum(dA * g, axis=1), 0.0)
            dBp = tl.sum(g * (dt * u)[:, None, :], axis=0)
            dCp = tl.sum(hs * dy[:, None, :], axis=0)
            if MASKED:
                s_dyu = tl.sum(dyu, axis=0)[None, :]
                dBp = dBp - s_dyu * Ct
                dCp = dCp - s_dyu * Bt
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(dtr)
            ddt = tl.where(m2, ddt, 0.0)
            if HAS_BIAS:
                dbias_acc += tl.sum(ddt, axis=1)
            tl.store(du_ptr + io_off + pos[None, :], du, mask=m2)
            tl.store(ddt_ptr + io_off + pos[None, :], ddt, mask=m2)
            mp = (offs_n[:, None] < NP) & mask_s[None, :]
            tl.store(dB_ptr + part_off + pos[None, :], dBp, mask=mp)
            tl.store(dC_ptr + part_off + pos[None, :], dCp, mask=mp)
        tl.store(dA_ptr + (pid_b * DM + offs_d[:, None]) * N + offs_n[None, :], dA_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dD_ptr + pid_b * DM + offs_d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + pid_b * DM + offs_d, dbias_acc, mask=mask_d)


# ----------------------------------------------------------------------------------------------------
# host side


def _check_runs_here(u: torch.Tensor):
    _require_triton()
    if u.device.type != "cuda":
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


def _launch_fwd(s, z, acc, out, hbuf, last, *, reverse, softplus, drop_D, acc_in, write_acc, scale, ct):
    u = s["u"]
    b, d, l = u.shape
    n = s["A"].shape[1]
    bd, chunk = _CFG["block_d"], _CFG["chunk"]
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
        HAS_Z=z is not None, RESIDUAL=s["residual"], MASKED=s["masked"], DROP_D=bool(drop_D),
        ACC_IN=acc_in, WRITE_ACC=write_acc, SAVE_STATES=hbuf is not None, SAVE_LAST=last is not None,
        BLOCK_D=bd, NP=triton.next_power_of_2(n), CHUNK=chunk, ACC=_tl_acc(ct), num_warps=_CFG["num_warps"],
    )


def _launch_bwd(s, z, dout, hbuf, dz, dz_acc, *, reverse, softplus, drop_D, scale, ct, chunk, bd):
    """One direction's backward. Returns (du, ddelta, dA, dB, dC, dD, dbias) in float ``ct``."""
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
        HAS_Z=z is not None, RESIDUAL=s["residual"], MASKED=s["masked"], DROP_D=bool(drop_D), DZ_ACC=dz_acc,
        BLOCK_D=bd, NP=NP, CHUNK=chunk, ACC=_tl_acc(ct), num_warps=_CFG["num_warps"],
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
        chunk, bd = _CFG["chunk"], _CFG["block_d"]
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
                acc_in=i > 0, write_acc=not is_final, scale=cfg["scale"] if is_final else 1.0, ct=ct,
            )
            hbufs.append(hbuf)
        ctx.cfg, ctx.chunk, ctx.bd, ctx.ct = cfg, chunk, bd, ct
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
                drop_D=cfg["drop_D"], scale=cfg["scale"], ct=ctx.ct, chunk=ctx.chunk, bd=ctx.bd,
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


if os.environ.get("VMP_TRITON_BLOCK_D"):  # benchmark / tuning override
    _CFG["block_d"] = int(os.environ["VMP_TRITON_BLOCK_D"])
if os.environ.get("VMP_TRITON_CHUNK"):
    _CFG["chunk"] = int(os.environ["VMP_TRITON_CHUNK"])
