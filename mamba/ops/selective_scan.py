"""The selective scan with the two VideoMambaPro changes (METHOD.md section 2), and its dispatch.

Shapes follow mamba_ssm: ``u, delta, z: (b, d, l)``; ``A: (d, n)``; ``B, C: (b, n, l)`` or grouped
``(b, g, n, l)`` (d divisible by g); ``D, delta_bias: (d,)``.

Per channel c, state n, step t, with ``Abar_t = exp(Delta_t * A)``::

    h_{-1} = rho * u_0                      (residual=True: rho = 1, the elemental residual)
    h_t    = Abar_t * h_{t-1} + Delta_t * B_t * u_t
    y_t    = C_t . h_t - mu * Delta_t * u_t * (B_t . C_t) + D * u_t     (masked=True: mu = 1)
    out_t  = y_t * SiLU(z_t)                (when z is given)

``mask_drops_D=True`` (ablation, only with masked) also removes the ``D * u_t`` term.

``selective_scan_ref`` is the executable specification: a plain loop that computes the masked output
in its defining form ``y_t = C_t . (Abar_t * h_{t-1}) + D u_t``. It is used by tests only; the fast
backends use the cheap identities of METHOD.md and are tested against it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .backend import resolve_backend

__all__ = ["selective_scan_fn", "selective_scan_ref", "bi_selective_scan_fn", "bi_selective_scan_ref"]


def _expand_groups(X: torch.Tensor, d: int) -> torch.Tensor:
    """(b, n, l) or (b, g, n, l) -> (b, d, n, l)."""
    if X.dim() == 3:
        return X.unsqueeze(1).expand(X.shape[0], d, X.shape[1], X.shape[2])
    b, g, n, l = X.shape
    if d % g != 0:
        raise ValueError(f"d={d} is not divisible by the number of B/C groups g={g}")
    return X.repeat_interleave(d // g, dim=1)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"u must be (b, d, l), got {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, X in (("B", B), ("C", C)):
        ok = (X.dim() == 3 and X.shape == (b, n, l)) or (
            X.dim() == 4 and X.shape[0] == b and X.shape[2:] == (n, l) and d % X.shape[1] == 0
        )
        if not ok:
            raise ValueError(f"{name} must be (b, n, l)=({b}, {n}, {l}) or (b, g, n, l), got {tuple(X.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    for name, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and X.shape != (d,):
            raise ValueError(f"{name} must be (d={d},), got {tuple(X.shape)}")


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, residual=False, masked=False, mask_drops_D=False,
):
    """The executable spec (a plain loop over l). Computes in float64 for float64 inputs, else float32.

    Returns ``out`` of u's dtype, and ``last_state (b, d, n)`` (float32/float64) if return_last_state.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    b, d, l = u.shape
    Bx = _expand_groups(B.to(ct), d)
    Cx = _expand_groups(C.to(ct), d)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    n = A.shape[1]
    if residual:
        h = u[:, :, 0, None].expand(b, d, n)  # h_{-1} = u_0, broadcast over the state
    else:
        h = u.new_zeros(b, d, n)
    ys = []
    for t in range(l):
        dA = torch.exp(delta[:, :, t, None] * A)
        carried = dA * h
        h = carried + delta[:, :, t, None] * Bx[:, :, :, t] * u[:, :, t, None]
        # masked: the token's own (diagonal) contribution is left out, at every step, t = 0 included
        y = ((carried if masked else h) * Cx[:, :, :, t]).sum(-1)
        ys.append(y)
    y = torch.stack(ys, dim=-1)
    if D is not None and not (masked and mask_drops_D):
        y = y + D.to(ct)[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out


def selective_scan_fn(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, residual=False, masked=False, mask_drops_D=False,
):
    """Selective scan with the VideoMambaPro options, on the backend chosen by ``mamba.ops.backend``.

    Same signature and semantics as :func:`selective_scan_ref` (see the module docstring).
    """
    kw = dict(residual=residual, masked=masked, mask_drops_D=mask_drops_D)
    backend = resolve_backend(u.device.type)
    if backend == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, **kw)
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if backend == "torch":
        from .scan_torch import selective_scan_torch as impl
    elif backend == "cuda":
        from .scan_cuda import selective_scan_cuda_fn as impl
    elif backend == "triton":
        from .scan_triton import selective_scan_triton as impl
    else:  # pragma: no cover - resolve_backend only returns the names above
        raise AssertionError(backend)
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, **kw)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def bi_selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
    *, residual=(True, True), masked=(False, True), mask_drops_D=False, average=False, scan=selective_scan_ref,
):
    """Both directions of one bidirectional layer, summed.

    ``u, delta, A, B, C, D, delta_bias`` are pairs ``(forward, backward)``. Both directions' tensors are
    in natural token order; the backward direction is scanned from the last token to the first. Returns
    ``(y_f + y_b) [/ 2 if average] [* SiLU(z)]`` in natural order. ``residual`` and ``masked`` are bools
    or per-direction pairs; the VideoMambaPro default is residual in both, mask on the backward one.
    """
    residual, masked = _pair(residual), _pair(masked)
    D, delta_bias = _pair(D), _pair(delta_bias)
    y_f = scan(u[0], delta[0], A[0], B[0], C[0], D[0], None, delta_bias[0], delta_softplus,
               residual=residual[0], masked=masked[0], mask_drops_D=mask_drops_D)
    y_b = scan(u[1].flip(-1), delta[1].flip(-1), A[1], B[1].flip(-1), C[1].flip(-1), D[1], None, delta_bias[1],
               delta_softplus, residual=residual[1], masked=masked[1], mask_drops_D=mask_drops_D).flip(-1)
    y = y_f + y_b
    if average:
        y = y * 0.5
    if z is not None:
        y = y * F.silu(z)
    return y


def bi_selective_scan_fn(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
    *, residual=(True, True), masked=(False, True), mask_drops_D=False, average=False,
):
    """Fused bidirectional scan where the backend has one (triton), else two ``selective_scan_fn`` calls.

    Same arguments as :func:`bi_selective_scan_ref`.
    """
    backend = resolve_backend(u[0].device.type)
    kw = dict(residual=residual, masked=masked, mask_drops_D=mask_drops_D, average=average)
    if backend == "triton":
        from .scan_triton import bi_selective_scan_triton

        return bi_selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **kw)
    if backend == "torch":
        from .scan_torch import bi_selective_scan_torch

        return bi_selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **kw)
    scan = selective_scan_ref if backend == "reference" else selective_scan_fn
    return bi_selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, scan=scan, **kw)
