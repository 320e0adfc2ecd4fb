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

from ._util import pair as _pair
from .backend import resolve_backend

__all__ = ["selective_scan_fn", "selective_scan_ref", "bi_selective_scan_fn", "bi_selective_scan_ref",
           "bi_scan_fwd_ref", "bi_scan_bwd_ref"]


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


# ----------------------------------------------------------------------------------------------------
# The kernel-level API of the fused mixer (no autograd): both directions of one layer in one call, the
# low-rank delta projection and A = -exp(A_log) folded in, and the backward as an explicit function that
# returns every input gradient. ``bi_scan_fwd_ref`` / ``bi_scan_bwd_ref`` are its executable specification
# (the reference loop plus autograd; tests only); ``mamba.ops.scan_triton.bi_scan_fwd`` / ``bi_scan_bwd``
# implement the same contract with Triton kernels.


def _scan_api_inputs(u, dt, A, B, C, D, dt_bias, W_dt, a_log):
    """Per-direction (u, delta_raw, A) in the reference's terms: delta_raw = W_dt @ dt when W_dt is given."""
    ndir = len(u)
    if ndir not in (1, 2):
        raise ValueError(f"one or two directions, got {ndir}")
    for name, X in (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("dt_bias", dt_bias)):
        if len(X) != ndir:
            raise ValueError(f"{name} must have one entry per direction ({ndir}), got {len(X)}")
    if W_dt is not None and len(W_dt) != ndir:
        raise ValueError(f"W_dt must have one entry per direction ({ndir}), got {len(W_dt)}")
    deltas, As = [], []
    for i in range(ndir):
        if W_dt is None:
            deltas.append(dt[i])
        else:  # (E, R) @ (b, R, l) -> (b, E, l)
            deltas.append(torch.einsum("er,brl->bel", W_dt[i].to(dt[i].dtype), dt[i]))
        As.append(-torch.exp(A[i]) if a_log else A[i])
    return deltas, As


def bi_scan_fwd_ref(
    u, dt, A, B, C, D, dt_bias, z=None, *, W_dt=None, a_log=False, softplus=True,
    residual=(True, True), masked=(False, True), drop_D=False, scale=1.0,
):
    """The fused mixer's scan, forward: ``scale * sum_i y_i [* SiLU(z)]`` over the directions i.

    Every per-direction argument is a sequence with one entry per direction (one or two); direction 0 scans
    from the first token to the last, direction 1 from the last to the first; all tensors are in natural token
    order, any strides.

    * ``u: (b, E, l)``; ``dt``: the raw delta ``(b, E, l)`` (before ``dt_bias`` and softplus), or with
      ``W_dt[i]: (E, R)`` the low-rank ``(b, R, l)`` input of the delta projection, ``delta_raw = W_dt @ dt``;
    * ``A: (E, N)`` float32, or ``A_log`` when ``a_log`` (``A = -exp(A_log)``);
    * ``B, C: (b, N, l)``; ``D, dt_bias: (E,)`` float32 or None; ``z: (b, E, l)`` or None (shared);
    * ``residual``, ``masked``: per-direction flags (METHOD.md section 2); ``drop_D``: the mask also drops D u.

    Returns ``out (b, E, l)`` in u's dtype.
    """
    deltas, As = _scan_api_inputs(u, dt, A, B, C, D, dt_bias, W_dt, a_log)
    ct = torch.float64 if u[0].dtype == torch.float64 else torch.float32
    y = None
    for i in range(len(u)):
        flip = (lambda X: X.flip(-1)) if i == 1 else (lambda X: X)
        yi = selective_scan_ref(flip(u[i]), flip(deltas[i]), As[i], flip(B[i]), flip(C[i]), D[i], None, dt_bias[i],
                                softplus, residual=residual[i], masked=masked[i], mask_drops_D=drop_D)
        yi = flip(yi).to(ct)
        y = yi if y is None else y + yi
    y = y * scale
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(u[0].dtype)


def bi_scan_bwd_ref(
    u, dt, A, B, C, D, dt_bias, z, dout, *, W_dt=None, a_log=False, softplus=True,
    residual=(True, True), masked=(False, True), drop_D=False, scale=1.0, want_out_z=False,
):
    """The fused mixer's scan, backward: the gradient of ``bi_scan_fwd_ref(...)`` (same arguments) for the
    output gradient ``dout (b, E, l)``.

    Returns a dict: ``du, ddt, dA, dB, dC, dD, ddt_bias, dW_dt`` (tuples with one entry per direction, float32
    or float64 for float64 inputs, None where the input is None; ``dA`` is the gradient of ``A_log`` when ``a_log``), ``dz`` (or None) and, with
    ``want_out_z``, ``out_z``: the forward output recomputed (``bi_scan_fwd_ref``'s result, for the gradient of
    the projection that follows).
    """
    ndir = len(u)
    ct = torch.float64 if u[0].dtype == torch.float64 else torch.float32
    names = ("u", "dt", "A", "B", "C", "D", "dt_bias", "W_dt")
    W = W_dt if W_dt is not None else (None,) * ndir
    with torch.enable_grad():
        leaves = {n: tuple(None if X is None else X.detach().to(ct).requires_grad_() for X in seq)
                  for n, seq in zip(names, (u, dt, A, B, C, D, dt_bias, W))}
        lz = None if z is None else z.detach().to(ct).requires_grad_()
        out = bi_scan_fwd_ref(leaves["u"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], leaves["D"],
                              leaves["dt_bias"], lz, W_dt=leaves["W_dt"] if W_dt is not None else None, a_log=a_log,
                              softplus=softplus, residual=residual, masked=masked, drop_D=drop_D, scale=scale)
        flat = [X for n in names for X in leaves[n] if X is not None] + ([lz] if lz is not None else [])
        grads = iter(torch.autograd.grad(out, flat, dout.to(ct), allow_unused=True, materialize_grads=True))
    res = {}
    for n in names:
        res["d" + n] = tuple(None if X is None else next(grads) for X in leaves[n])
    res["dz"] = next(grads) if lz is not None else None
    if W_dt is None:
        res["dW_dt"] = None
    if want_out_z:
        res["out_z"] = out.detach().to(u[0].dtype)
    return res
