"""Triton kernels for the pre-norm block's fused add + RMSNorm: one launch forward, one launch backward (plus one
sum of a fixed number of per-program weight-gradient partials).

Same contract as :func:`mamba.ops.rms_norm.rms_norm_fn`'s autograd node (``_AddRMSNorm``)::

    r   = x + residual            (x alone when residual is None), in float32 (float64 for float64 x)
    out = r * rstd * weight,       rstd = 1 / sqrt(mean(r ** 2) + eps)      (out in x's dtype)

The forward reads ``x`` (e.g. the bf16 mixer output) and the float32 residual stream once, writes ``out``, ``r``
(the new residual stream) and ``rstd``; only ``r`` and ``rstd`` are saved. The backward reads the output gradient,
the residual stream's gradient, ``r`` and ``rstd`` once and writes the input gradients in their own dtypes
(``x``'s and the residual's) and each program's partial weight gradient: ``NORM_BWD_PROGRAMS`` programs at most,
each walking its rows and summing in registers, so the weight gradient is one small sum, with no atomics and no
``(rows, d)`` buffer. Rows are the flattened leading dims of contiguous tensors; a program holds a
``(BLOCK_M, BLOCK_D)`` tile, ``BLOCK_D`` the next power of two of ``d``. On the CPU the kernels run through
Triton's interpreter (``TRITON_INTERPRET=1`` set before import).
"""
from __future__ import annotations

import torch

from ._util import check_triton_runs_on, save_norm

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

__all__ = ["add_rms_norm_triton", "AddRMSNormTriton", "NORM_BWD_PROGRAMS", "norm_tile"]

NORM_BWD_PROGRAMS = 1024  # the backward's programs at most (about 8 per SM of an H100 / H200)


def norm_tile(d: int) -> dict:
    """Rows per program and warps for width ``d`` (about 1,024 elements per program, 4 warps)."""
    block_d = triton.next_power_of_2(d)
    return dict(BLOCK_D=block_d, BLOCK_M=max(1, 1024 // block_d), num_warps=4 if block_d <= 1024 else 8)


if triton is not None:

    @triton.jit
    def _norm_fwd_kernel(x_ptr, res_ptr, w_ptr, out_ptr, r_ptr, rstd_ptr, M, D, eps,
                         HAS_RES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
        cols = tl.arange(0, BLOCK_D)[None, :]
        m = (rows < M) & (cols < D)
        offs = rows.to(tl.int64) * D + cols
        r = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        if HAS_RES:
            r += tl.load(res_ptr + offs, mask=m, other=0.0).to(ACC)
        rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=1) / D + eps)
        w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(ACC)
        tl.store(r_ptr + offs, r.to(r_ptr.dtype.element_ty), mask=m)
        tl.store(rstd_ptr + rows, rstd[:, None], mask=rows < M)
        tl.store(out_ptr + offs, (r * rstd[:, None] * w).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _norm_bwd_kernel(g_ptr, gr_ptr, r_ptr, rstd_ptr, w_ptr, dx_ptr, dres_ptr, dwp_ptr, M, D, rows_per_prog,
                         HAS_GR: tl.constexpr, HAS_DRES: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_D: tl.constexpr, ACC: tl.constexpr):
        """dr = rstd (g w) - r rstd^3 mean(g w r) (+ the residual stream's gradient); dw = sum_rows g r rstd."""
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_D)[None, :]
        mc = cols < D
        w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(ACC)
        dw = tl.zeros((BLOCK_D,), dtype=ACC)
        start = pid * rows_per_prog
        end = tl.minimum(start + rows_per_prog, M)
        for i in range(0, rows_per_prog, BLOCK_M):
            rows = start + i + tl.arange(0, BLOCK_M)[:, None]
            mr = rows < end
            m = mr & mc
            offs = rows.to(tl.int64) * D + cols
            g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC)
            r = tl.load(r_ptr + offs, mask=m, other=0.0).to(ACC)
            rstd = tl.load(rstd_ptr + rows, mask=mr, other=0.0).to(ACC)
            gw = g * w
            c = tl.sum(gw * r, axis=1)[:, None] / D
            dr = rstd * gw - r * (rstd * rstd * rstd) * c
            if HAS_GR:
                dr += tl.load(gr_ptr + offs, mask=m, other=0.0).to(ACC)
            tl.store(dx_ptr + offs, dr.to(dx_ptr.dtype.element_ty), mask=m)
            if HAS_DRES:
                tl.store(dres_ptr + offs, dr.to(dres_ptr.dtype.element_ty), mask=m)
            dw += tl.sum(g * r * rstd, axis=0)
        tl.store(dwp_ptr + pid.to(tl.int64) * D + cols, dw[None, :], mask=mc)


def _require(x):
    if triton is None:
        raise RuntimeError("the triton RMSNorm needs triton (pip install triton; it ships with CUDA builds of torch)")
    check_triton_runs_on(x, _norm_fwd_kernel, "RMSNorm", __name__)


def _acc(ct):
    return tl.float64 if ct == torch.float64 else tl.float32


def _bwd_split(M: int, block_m: int):
    """Programs and rows per program of the backward: at most NORM_BWD_PROGRAMS, rows a multiple of BLOCK_M."""
    tiles = -(-M // block_m)
    per = -(-tiles // min(tiles, NORM_BWD_PROGRAMS)) * block_m
    return -(-M // per), per


class AddRMSNormTriton(torch.autograd.Function):
    """``(x, residual, weight, eps, ct) -> (out, r)`` on the Triton kernels; saves r and rstd (cf. ``_AddRMSNorm``)."""

    @staticmethod
    def forward(ctx, x, residual, weight, eps, ct):
        _require(x)
        d = x.shape[-1]
        xc = x.contiguous()
        res = residual.contiguous() if residual is not None else None
        M = xc.numel() // d
        out = torch.empty_like(xc)
        r = torch.empty(xc.shape, device=x.device, dtype=ct)
        rstd = torch.empty(xc.shape[:-1] + (1,), device=x.device, dtype=ct)
        tile = norm_tile(d)
        _norm_fwd_kernel[(-(-M // tile["BLOCK_M"]),)](
            xc, res if res is not None else xc, weight, out, r, rstd, M, d, float(eps), HAS_RES=res is not None,
            BLOCK_M=tile["BLOCK_M"], BLOCK_D=tile["BLOCK_D"], ACC=_acc(ct), num_warps=tile["num_warps"])
        save_norm(ctx, r, rstd, weight, x, residual)
        return out, r

    @staticmethod
    def backward(ctx, g_out, g_r):
        r, rstd, weight = ctx.saved_tensors
        d = r.shape[-1]
        M = r.numel() // d
        g = g_out.contiguous()
        gr = g_r.contiguous() if g_r is not None else None
        dx = torch.empty(r.shape, device=r.device, dtype=ctx.dtypes[0])
        dres = torch.empty(r.shape, device=r.device, dtype=ctx.dtypes[1]) if ctx.dtypes[1] is not None else None
        tile = norm_tile(d)
        progs, per = _bwd_split(M, tile["BLOCK_M"])
        partial = torch.empty(progs, d, device=r.device, dtype=r.dtype)
        _norm_bwd_kernel[(progs,)](
            g, gr if gr is not None else g, r, rstd, weight, dx, dres if dres is not None else dx, partial, M, d, per,
            HAS_GR=gr is not None, HAS_DRES=dres is not None, BLOCK_M=tile["BLOCK_M"], BLOCK_D=tile["BLOCK_D"],
            ACC=_acc(r.dtype), num_warps=tile["num_warps"])
        dweight = None
        if ctx.needs_input_grad[2]:
            dweight = partial.sum(0)
            dweight = dweight if dweight.dtype == weight.dtype else dweight.to(weight.dtype)
        return dx, dres, dweight, None, None


def add_rms_norm_triton(x, residual, weight, eps, ct):
    return AddRMSNormTriton.apply(x, residual, weight, eps, ct)


# ----------------------------------------------------------------------------------------------------
# ahead-of-time compilation (see mamba.ops.triton_aot)

AOT_KERNELS = ("_norm_fwd_kernel", "_norm_bwd_kernel")


def aot_jobs(matrix: str) -> list:
    """``default``: the blocks' norm (bf16 input, float32 residual stream) at Ti and M widths, and float32 at S;
    ``table``: none; ``full``: every dtype x width x with / without residual."""
    if matrix == "default":
        return [dict(dtype="bf16", d=192), dict(dtype="bf16", d=576), dict(dtype="fp32", d=384)]
    if matrix == "table":
        return []
    if matrix == "full":
        return [dict(dtype=dt, d=d, residual=res) for dt in ("bf16", "fp32") for d in (192, 384, 576)
                for res in (True, False)]
    raise ValueError(f"matrix must be default, table or full, got {matrix!r}")


def aot_record(job: dict, rows: int = 8 * 3137) -> list:
    """The forward and backward launches of one job, as a block makes them: x in the job's dtype, the float32
    residual stream, gradients of both outputs."""
    from . import triton_aot

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[job.get("dtype", "bf16")]
    d, has_res = int(job.get("d", 192)), bool(job.get("residual", True))
    x = torch.empty(rows, d, dtype=dt, requires_grad=True)
    res = torch.empty(rows, d, dtype=torch.float32, requires_grad=True) if has_res else None
    w = torch.empty(d, requires_grad=True)
    with triton_aot.recording(__import__(__name__, fromlist=["_"])) as calls:
        out, r = AddRMSNormTriton.apply(x, res, w, 1e-5, torch.float32)
        torch.autograd.backward([out, r], [torch.empty_like(out), torch.empty_like(r)])
    return calls


def aot_describe(kernel, kwargs) -> str:
    name = getattr(kernel, "fn", kernel).__name__.strip("_").replace("_kernel", "")
    flags = [k for k in ("HAS_RES", "HAS_GR", "HAS_DRES") if kwargs.get(k)]
    return f"{name} d<={kwargs.get('BLOCK_D')} {'+'.join(flags)}"
