"""RMSNorm with mamba_ssm's fused add+norm semantics (``layer_norm_fn(..., is_rms_norm=True)``).

``rms_norm_fn(x, weight, eps=1e-5, residual=None, prenorm=False, residual_in_fp32=True)``::

    r   = x + residual            (x alone when residual is None)
    out = r / sqrt(mean(r**2, -1) + eps) * weight

Math in float32 (float64 for float64 input); ``out`` has x's dtype. With ``prenorm=True`` returns ``(out, r)`` where r is float32
when ``residual_in_fp32`` (else x's dtype): the Add -> Norm of a pre-norm block, keeping the
residual stream in full precision.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["rms_norm_fn", "RMSNorm"]


def rms_norm_fn(x, weight, eps=1e-5, residual=None, prenorm=False, residual_in_fp32=True):
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"weight must be ({x.shape[-1]},), got {tuple(weight.shape)}")
    dtype = x.dtype
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    r = x.to(ct)
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
        r = r + residual.to(ct)
    out = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.to(ct)
    out = out.to(dtype)
    if not prenorm:
        return out
    return out, (r if residual_in_fp32 else r.to(dtype))


class RMSNorm(nn.Module):
    """``RMSNorm(dim, eps=1e-5)`` with a single parameter ``weight`` (initialised to ones)."""

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=True):
        return rms_norm_fn(x, self.weight, self.eps, residual, prenorm, residual_in_fp32)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
