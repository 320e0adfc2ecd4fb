"""RMSNorm with mamba_ssm's fused add+norm semantics (``layer_norm_fn(..., is_rms_norm=True)``).

``rms_norm_fn(x, weight, eps=1e-5, residual=None, prenorm=False, residual_in_fp32=True)``::

    r   = x + residual            (x alone when residual is None)
    out = r / sqrt(mean(r**2, -1) + eps) * weight

Math in float32 (float64 for float64 input); ``out`` has x's dtype. With ``prenorm=True`` returns ``(out, r)``
where r is float32 when ``residual_in_fp32`` (else x's dtype): the Add -> Norm of a pre-norm block, keeping the
residual stream in full precision. With the triton backend (``resolve_backend(device) == "triton"``, as the scan
and the fused mixer) it runs on the Triton kernels of :mod:`mamba.ops.rms_norm_triton` (one launch each way),
else as the torch autograd node below; ``backend`` is a model's own scan backend (None: the scope / global switch).

``RMSNorm`` is ``torch.nn.RMSNorm`` with mamba_ssm's default eps (1e-5): the parameter holder of the fused
add + norm (``rms_norm_fn(x, norm.weight, norm.eps, ...)``) and a plain norm where nothing is added.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._util import save_norm

__all__ = ["rms_norm_fn", "RMSNorm"]


class _AddRMSNorm(torch.autograd.Function):
    """r = x + residual (x alone when residual is None); out = r * rstd * w. Saves only r (the compute dtype) and rstd, not the ~6 intermediates
    eager autograd keeps; the backward is the closed form
    dr = rstd * (g * w) - r * rstd^3 * mean(g * w * r) (+ the gradient of the returned residual)."""

    @staticmethod
    def forward(ctx, x, residual, weight, eps, ct):
        r = x.to(ct, copy=True) if residual is None else x.to(ct) + residual.to(ct)
        rstd = torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)
        out = (r * rstd * weight.to(ct)).to(x.dtype)
        save_norm(ctx, r, rstd, weight, x, residual)
        return out, r

    @staticmethod
    def backward(ctx, g_out, g_r):
        r, rstd, weight = ctx.saved_tensors
        g = g_out.to(r.dtype)
        gw = g * weight.to(r.dtype)
        dr = rstd * gw - r * rstd.pow(3) * (gw * r).mean(-1, keepdim=True)
        if g_r is not None:
            dr = dr + g_r.to(r.dtype)
        dweight = (g * r * rstd).reshape(-1, r.shape[-1]).sum(0).to(weight.dtype) if ctx.needs_input_grad[2] \
            else None
        dres = None if ctx.dtypes[1] is None else dr.to(ctx.dtypes[1])
        return dr.to(ctx.dtypes[0]), dres, dweight, None, None


def _triton_norm(x, backend=None) -> bool:
    """The Triton kernels with the triton backend (the whole block on Triton: see mamba.ops.backend), else torch."""
    from .backend import resolve_backend

    return resolve_backend(x.device.type, backend) == "triton"


def rms_norm_fn(x, weight, eps=1e-5, residual=None, prenorm=False, residual_in_fp32=True, backend=None):
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"weight must be ({x.shape[-1]},), got {tuple(weight.shape)}")
    dtype = x.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    fn = _AddRMSNorm
    if _triton_norm(x, backend):
        from .rms_norm_triton import AddRMSNormTriton as fn
    out, r = fn.apply(x, residual, weight, eps, ct)
    if not prenorm:
        return out
    return out, (r if residual_in_fp32 else r.to(dtype))


class RMSNorm(nn.RMSNorm):
    """``torch.nn.RMSNorm(dim, eps=1e-5)``: one parameter ``weight`` (ones); torch's default eps would be the
    dtype's machine epsilon, mamba_ssm's (and VideoMamba's) is 1e-5."""

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__(dim, eps=eps, device=device, dtype=dtype)
