"""The ``cuda`` scan backend: mamba-ssm's compiled ``selective_scan_cuda`` kernel, plus the two
VideoMambaPro changes realised on top of it through the identities of METHOD.md section 2:

* residual start: one pseudo-step is prepended with ``u = u_0``, ``B = 1``, ``C = 0`` and an effective
  ``Delta = 1`` (the raw delta is ``softplus^-1(1) - delta_bias`` when softplus is on, ``1 - delta_bias``
  when off, so that the kernel's own bias + softplus gives exactly 1); its output is dropped. The
  state after it is ``u_0`` broadcast over n. Gradients flow through the prepended column by autograd,
  so ``u_0`` gets its extra gradient and the pseudo-step's share of ``d delta_bias`` cancels exactly.
* mask: the kernel runs without ``z``; ``Delta * u * sum_n(B * C)`` is subtracted from its output, then
  the gate ``SiLU(z)`` is applied (by autograd; ``O(b d l)``).

The kernel is imported lazily; without it a RuntimeError gives the install command. Both the
9-argument ``fwd`` of mamba-ssm 1.x/2.x and the newer one with a trailing ``cu_seqlens`` are supported.
Note: for bfloat16/float16 inputs the pseudo-step's raw delta is rounded to the input dtype, so its
effective Delta is 1 only to that precision.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .backend import INSTALL_HINTS

__all__ = ["selective_scan_cuda_fn", "load_selective_scan_cuda", "SelectiveScanCudaFn"]

_SOFTPLUS_INV_ONE = math.log(math.expm1(1.0))  # softplus(x) == 1
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
_extra_args: dict = {}  # kernel function -> trailing arguments it needs (() or (None,) for cu_seqlens)


def load_selective_scan_cuda():
    """Import mamba-ssm's compiled scan module, or raise a RuntimeError naming the pip command."""
    try:
        import selective_scan_cuda
    except ImportError as e:
        raise RuntimeError(
            "scan backend 'cuda' needs mamba-ssm's compiled selective_scan_cuda, which could not be imported "
            f"({e}): " + INSTALL_HINTS["cuda"]
        ) from e
    return selective_scan_cuda


def _kernel_call(fn, *args):
    """Call ``fwd``/``bwd``; newer mamba-ssm releases take one more trailing argument (cu_seqlens)."""
    extra = _extra_args.get(fn)
    if extra is not None:
        return fn(*args, *extra)
    try:
        res = fn(*args)
        _extra_args[fn] = ()
    except TypeError as first:
        try:
            res = fn(*args, None)
        except TypeError:
            raise first from None
        _extra_args[fn] = (None,)
    return res


def _contig(X):
    return X if X is None or X.stride(-1) == 1 else X.contiguous()


class SelectiveScanCudaFn(torch.autograd.Function):
    """The plain kernel (no z) as an autograd Function. ``B, C`` are ``(b, g, n, l)``.

    Returns ``out (b, d, l)`` and ``last_state (b, d, n)`` (not differentiable).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        mod = load_selective_scan_cuda()
        u, delta, B, C = _contig(u), _contig(delta), _contig(B), _contig(C)
        D = None if D is None else D.contiguous()
        delta_bias = None if delta_bias is None else delta_bias.contiguous()
        out, x, *_ = _kernel_call(mod.fwd, u, delta, A, B, C, D, None, delta_bias, delta_softplus)
        last_state = x[:, :, -1, 1::2].clone()  # x interleaves (real, imag) per chunk boundary
        ctx.delta_softplus = delta_softplus
        ctx.has_D, ctx.has_bias = D is not None, delta_bias is not None
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, _dlast):
        mod = load_selective_scan_cuda()
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *_ = _kernel_call(
            mod.bwd, u, delta, A, B, C, D, None, delta_bias, _contig(dout), x, None, None,
            ctx.delta_softplus, False,
        )
        return (du, ddelta, dA, dB, dC, dD if ctx.has_D else None, ddelta_bias if ctx.has_bias else None, None)


def selective_scan_cuda_fn(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, residual=False, masked=False, mask_drops_D=False,
):
    """Same signature and semantics as ``mamba.ops.selective_scan.selective_scan_ref``, on the CUDA kernel."""
    if u.dtype not in _SUPPORTED:
        raise ValueError(
            f"scan backend 'cuda' supports float32/float16/bfloat16 inputs, got {u.dtype}; "
            "use the 'torch' or 'reference' backend (e.g. for float64 gradcheck)"
        )
    dtype_in = u.dtype
    b, d, l = u.shape
    B4 = B if B.dim() == 4 else B.unsqueeze(1)
    C4 = C if C.dim() == 4 else C.unsqueeze(1)
    g, n = B4.shape[1], B4.shape[2]
    A32 = A.float()  # the kernel's weight type
    D32 = None if D is None or (masked and mask_drops_D) else D.float()
    bias32 = None if delta_bias is None else delta_bias.float()

    u_k, delta_k, B_k, C_k = u, delta, B4, C4
    if residual:  # pseudo-step: Delta = 1, B = 1, C = 0, u = u_0; output dropped
        c = _SOFTPLUS_INV_ONE if delta_softplus else 1.0
        raw = torch.full((d,), c, device=u.device, dtype=torch.float32)
        if bias32 is not None:
            raw = raw - bias32  # the kernel adds the bias back; autograd cancels its gradient share
        raw = raw.to(delta.dtype)[None, :, None].expand(b, d, 1)
        u_k = torch.cat([u[:, :, :1], u], dim=-1)
        delta_k = torch.cat([raw, delta], dim=-1)
        B_k = torch.cat([B4.new_ones(b, g, n, 1), B4], dim=-1)
        C_k = torch.cat([C4.new_zeros(b, g, n, 1), C4], dim=-1)
    out, last_state = SelectiveScanCudaFn.apply(u_k, delta_k, A32, B_k, C_k, D32, bias32, delta_softplus)
    y = out[:, :, 1:] if residual else out
    if masked or z is not None:
        y = y.float()
    if masked:  # subtract the diagonal term Delta_t u_t (B_t . C_t), before the gate
        dt = delta.float()
        if bias32 is not None:
            dt = dt + bias32[None, :, None]
        if delta_softplus:
            dt = F.softplus(dt)
        bc = (B4.float() * C4.float()).sum(2)  # (b, g, l)
        y = (y.reshape(b, g, d // g, l) - (dt * u.float()).reshape(b, g, d // g, l) * bc[:, :, None, :]).reshape(b, d, l)
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(dtype_in)
    return (out, last_state) if return_last_state else out
