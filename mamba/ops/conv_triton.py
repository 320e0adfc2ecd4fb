"""Triton kernels for both directions of the bimamba mixer's depthwise causal conv1d + SiLU, in one launch each way.

``bi_conv_fwd(x, (w_f, w_b), (b_f, b_b))`` returns ``(u_f, u_b)`` with (same meaning as
:func:`mamba.ops.causal_conv1d.causal_conv1d_ref`, ``activation="silu"``)::

    u_f[t] = SiLU(b_f + sum_k w_f[k] x[t - (W-1) + k])      the causal conv (left pad W-1)
    u_b[t] = SiLU(b_b + sum_k w_b[k] x[t + (W-1) - k])      the anti-causal one: flip(conv_b(flip(x)))

reading ``x`` once for both, the reversed direction in place (no flipped copy). ``bi_conv_bwd`` recomputes the
pre-activations from ``x`` (nothing of the forward is saved) and returns ``dx`` (both directions summed) and each
direction's weight and bias gradients. Tensors are ``(b, E, l)`` of any strides (coalesced when ``stride(-1) ==
1``), and outputs may be given, so that a caller writes them where the next GEMM reads them (e.g. an ``(E, b, l)``
buffer seen as ``(b, E, l)``: then ``(E, b * l)`` is one GEMM operand without a copy). Weight and bias gradients
are float32 (float64 for float64 inputs), reduced over the tile's steps in registers and over tiles and the batch
with atomics, into caller-zeroed buffers when given.

A program holds a ``(BLOCK_C, BLOCK_T)`` tile (channels x steps); the grid is
``(ceil(l / BLOCK_T), ceil(E / BLOCK_C), b)``. The shifted reads of the conv window hit the cache: each element
is read from memory about once per launch. On the CPU the kernels run through Triton's interpreter
(``TRITON_INTERPRET=1`` set before import), like :mod:`mamba.ops.scan_triton`.
"""
from __future__ import annotations

import torch

from ._util import check_triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

__all__ = ["bi_conv_fwd", "bi_conv_bwd", "CONV_TILE", "CONV_BWD_TILE", "conv_launch_plan"]

# (channels, steps) per program and warps, per launch; the backward holds ~2x the live values per element
CONV_TILE = {"BLOCK_C": 4, "BLOCK_T": 256, "num_warps": 4}
CONV_BWD_TILE = {"BLOCK_C": 4, "BLOCK_T": 128, "num_warps": 8}


def _cdiv(a, b):
    return -(-a // b)


def conv_launch_plan(b: int, E: int, l: int, backward: bool = False) -> dict:
    """Grid and programs of one conv launch (the forward, or the backward) at ``(b, E, l)``."""
    tile = CONV_BWD_TILE if backward else CONV_TILE
    grid = (_cdiv(l, tile["BLOCK_T"]), _cdiv(E, tile["BLOCK_C"]), b)
    return dict(grid=grid, programs=grid[0] * grid[1] * grid[2], num_warps=tile["num_warps"])


if triton is not None:

    @triton.jit
    def _silu(p):
        return p / (1.0 + tl.exp(-p))

    @triton.jit
    def _pre(x_ptr, base, sx_l, w_ptr, bias, offs_c, mask_c, t, L, SHIFT: tl.constexpr, SIGN: tl.constexpr,
             W: tl.constexpr, ACC: tl.constexpr):
        """Pre-activation at steps ``t + SHIFT`` of one direction (SIGN 1: causal, -1: anti-causal)."""
        p = tl.zeros(t.shape, dtype=ACC) + bias[:, None]
        for k in tl.static_range(W):
            s = t + SHIFT + SIGN * (k - (W - 1))
            m = mask_c[:, None] & (s >= 0) & (s < L)
            xk = tl.load(x_ptr + base + s * sx_l, mask=m, other=0.0).to(ACC)
            wk = tl.load(w_ptr + offs_c * W + k, mask=mask_c, other=0.0).to(ACC)
            p += wk[:, None] * xk
        return p

    @triton.jit
    def _tile(sx_b, sx_c, L, E, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
        """The program's tile (grid (steps, channels, batch)): batch row, BLOCK_C channels, BLOCK_T steps (2-D),
        the channel and tile masks and x's row offsets."""
        pid_b = tl.program_id(2)
        offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)[None, :]
        mask_c = offs_c < E
        m = mask_c[:, None] & (t < L)
        base = pid_b * sx_b + offs_c[:, None] * sx_c
        return pid_b, offs_c, t, mask_c, m, base

    @triton.jit
    def _bias(b_ptr, offs_c, mask_c, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
        return tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(ACC) if HAS_BIAS else tl.zeros((BLOCK_C,), ACC)

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, sx_b, sx_c, sx_l, w0_ptr, b0_ptr, w1_ptr, b1_ptr,
        o0_ptr, so0_b, so0_c, so0_l, o1_ptr, so1_b, so1_c, so1_l, L, E,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, NDIR: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_T: tl.constexpr, ACC: tl.constexpr,
    ):
        pid_b, offs_c, t, mask_c, m, base = _tile(sx_b, sx_c, L, E, BLOCK_C, BLOCK_T)
        bias0 = _bias(b0_ptr, offs_c, mask_c, HAS_BIAS, BLOCK_C, ACC)
        p0 = _pre(x_ptr, base, sx_l, w0_ptr, bias0, offs_c, mask_c, t, L, 0, 1, W, ACC)
        tl.store(o0_ptr + pid_b * so0_b + offs_c[:, None] * so0_c + t * so0_l,
                 _silu(p0).to(o0_ptr.dtype.element_ty), mask=m)
        if NDIR == 2:
            bias1 = _bias(b1_ptr, offs_c, mask_c, HAS_BIAS, BLOCK_C, ACC)
            p1 = _pre(x_ptr, base, sx_l, w1_ptr, bias1, offs_c, mask_c, t, L, 0, -1, W, ACC)
            tl.store(o1_ptr + pid_b * so1_b + offs_c[:, None] * so1_c + t * so1_l,
                     _silu(p1).to(o1_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _conv_bwd_dir(x_ptr, base, sx_l, g_ptr, gbase, sg_l, w_ptr, bias, dw_ptr, db_ptr, offs_c, mask_c, t, L,
                      dx, SIGN: tl.constexpr, W: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr):
        """One direction's share of dx at steps t, plus its weight / bias gradients over the tile (atomics).

        dx[s] = sum_k w[k] gp[s + SIGN (W-1-k)], gp = du * SiLU'(pre); dw[k] = sum_t gp[t] x[t + SIGN (k-(W-1))].
        """
        for j in tl.static_range(W):  # gp at t + SIGN * j, the output that x[t] reaches through tap W-1-j
            sh = SIGN * j
            p = _pre(x_ptr, base, sx_l, w_ptr, bias, offs_c, mask_c, t, L, sh, SIGN, W, ACC)
            s = t + sh
            ms = mask_c[:, None] & (s >= 0) & (s < L)
            g = tl.load(g_ptr + gbase + s * sg_l, mask=ms, other=0.0).to(ACC)
            sig = 1.0 / (1.0 + tl.exp(-p))
            gp = tl.where(ms, g * sig * (1.0 + p * (1.0 - sig)), 0.0)
            wj = tl.load(w_ptr + offs_c * W + (W - 1 - j), mask=mask_c, other=0.0).to(ACC)
            dx += wj[:, None] * gp
            if j == 0:  # the tile's own outputs: weight and bias gradients
                for k in tl.static_range(W):
                    sk = t + SIGN * (k - (W - 1))
                    mk = mask_c[:, None] & (sk >= 0) & (sk < L)
                    xk = tl.load(x_ptr + base + sk * sx_l, mask=mk, other=0.0).to(ACC)
                    tl.atomic_add(dw_ptr + offs_c * W + k, tl.sum(gp * xk, axis=1), mask=mask_c, sem="relaxed")
                if HAS_BIAS:
                    tl.atomic_add(db_ptr + offs_c, tl.sum(gp, axis=1), mask=mask_c, sem="relaxed")
        return dx

    @triton.jit
    def _conv_bwd_kernel(
        x_ptr, sx_b, sx_c, sx_l, w0_ptr, b0_ptr, w1_ptr, b1_ptr,
        g0_ptr, sg0_b, sg0_c, sg0_l, g1_ptr, sg1_b, sg1_c, sg1_l, dx_ptr, sdx_b, sdx_c, sdx_l,
        dw0_ptr, db0_ptr, dw1_ptr, db1_ptr, L, E,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, NDIR: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_T: tl.constexpr, ACC: tl.constexpr,
    ):
        pid_b, offs_c, t, mask_c, m, base = _tile(sx_b, sx_c, L, E, BLOCK_C, BLOCK_T)
        dx = tl.zeros((BLOCK_C, BLOCK_T), dtype=ACC)
        bias0 = _bias(b0_ptr, offs_c, mask_c, HAS_BIAS, BLOCK_C, ACC)
        dx = _conv_bwd_dir(x_ptr, base, sx_l, g0_ptr, pid_b * sg0_b + offs_c[:, None] * sg0_c, sg0_l, w0_ptr, bias0,
                           dw0_ptr, db0_ptr, offs_c, mask_c, t, L, dx, 1, W, HAS_BIAS, ACC)
        if NDIR == 2:
            bias1 = _bias(b1_ptr, offs_c, mask_c, HAS_BIAS, BLOCK_C, ACC)
            dx = _conv_bwd_dir(x_ptr, base, sx_l, g1_ptr, pid_b * sg1_b + offs_c[:, None] * sg1_c, sg1_l, w1_ptr,
                               bias1, dw1_ptr, db1_ptr, offs_c, mask_c, t, L, dx, -1, W, HAS_BIAS, ACC)
        tl.store(dx_ptr + pid_b * sdx_b + offs_c[:, None] * sdx_c + t * sdx_l, dx.to(dx_ptr.dtype.element_ty),
                 mask=m)


def _require(x):
    if triton is None:
        raise RuntimeError("the triton conv needs triton (pip install triton; it ships with CUDA builds of torch)")
    check_triton_runs_on(x, _conv_fwd_kernel, "conv", __name__)


def _acc(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(x, weights, biases, name="x"):
    if x.dim() != 3:
        raise ValueError(f"{name} must be (b, E, l), got {tuple(x.shape)}")
    if not 1 <= len(weights) <= 2 or len(biases) != len(weights):
        raise ValueError("one or two directions: a weight and a bias (or None) per direction")
    E = x.shape[1]
    W = weights[0].shape[-1]
    for i, w in enumerate(weights):
        if w.dim() != 2 or tuple(w.shape) != (E, W):
            raise ValueError(f"weight[{i}] must be (E={E}, W={W}), got {tuple(w.shape)}")
    has_bias = biases[0] is not None
    for i, bb in enumerate(biases):
        if (bb is not None) != has_bias or (bb is not None and tuple(bb.shape) != (E,)):
            raise ValueError(f"bias[{i}] must be (E={E},) in every direction or None in every one")
    return E, W, has_bias


def _out(X, shape, dtype, dev, name):
    if X is None:
        return torch.empty(shape, device=dev, dtype=dtype)
    if tuple(X.shape) != tuple(shape):
        raise ValueError(f"{name} must be {tuple(shape)}, got {tuple(X.shape)}")
    return X


def _grid(b, E, l, tile=CONV_TILE):
    return (_cdiv(l, tile["BLOCK_T"]), _cdiv(E, tile["BLOCK_C"]), b)


def bi_conv_fwd(x, weights, biases, out=None):
    """``(u_f[, u_b])``: SiLU of the causal [and anti-causal] depthwise conv of ``x (b, E, l)`` in one launch.

    ``weights``: one ``(E, W)`` per direction; ``biases``: one ``(E,)`` (or None) per direction; ``out``: optional
    destinations (one ``(b, E, l)`` tensor per direction, any strides and float dtype; default x's dtype).
    """
    _require(x)
    weights, biases = tuple(weights), tuple(biases)
    E, W, has_bias = _check(x, weights, biases)
    b, _, l = x.shape
    nd = len(weights)
    out = tuple(out) if out is not None else (None,) * nd
    o = [_out(out[i], (b, E, l), x.dtype, x.device, f"out[{i}]") for i in range(nd)]
    ws = [w.contiguous() for w in weights]
    bs = [bb.contiguous() if bb is not None else ws[0] for bb in biases]
    j = 1 if nd == 2 else 0
    _conv_fwd_kernel[_grid(b, E, l)](
        x, *x.stride(), ws[0], bs[0], ws[j], bs[j], o[0], *o[0].stride(), o[j], *o[j].stride(), l, E,
        W=W, HAS_BIAS=has_bias, NDIR=nd, BLOCK_C=CONV_TILE["BLOCK_C"], BLOCK_T=CONV_TILE["BLOCK_T"],
        ACC=tl.float64 if _acc(x) == torch.float64 else tl.float32, num_warps=CONV_TILE["num_warps"],
    )
    return tuple(o)


def bi_conv_bwd(x, weights, biases, grads, dx=None, dweights=None, dbiases=None):
    """Gradients of :func:`bi_conv_fwd` for the output gradients ``grads`` (one ``(b, E, l)`` per direction).

    Returns ``(dx, dweights, dbiases)``: ``dx (b, E, l)`` (written; given or x's dtype) and per-direction fp32
    ``(E, W)`` / ``(E,)`` gradients (None for no bias), ACCUMULATED into the given buffers (pass them zeroed).
    """
    _require(x)
    weights, biases, grads = tuple(weights), tuple(biases), tuple(grads)
    E, W, has_bias = _check(x, weights, biases)
    b, _, l = x.shape
    nd = len(weights)
    if len(grads) != nd:
        raise ValueError(f"one output gradient per direction ({nd}), got {len(grads)}")
    for i, g in enumerate(grads):
        if tuple(g.shape) != (b, E, l):
            raise ValueError(f"grads[{i}] must be {(b, E, l)}, got {tuple(g.shape)}")
    ct = _acc(x)
    dx = _out(dx, (b, E, l), x.dtype, x.device, "dx")
    dws = list(dweights) if dweights is not None else [torch.zeros(E, W, device=x.device, dtype=ct) for _ in range(nd)]
    dbs = list(dbiases) if dbiases is not None else [torch.zeros(E, device=x.device, dtype=ct) if has_bias else None
                                                     for _ in range(nd)]
    for i in range(nd):
        if tuple(dws[i].shape) != (E, W) or dws[i].dtype != ct or not dws[i].is_contiguous():
            raise ValueError(f"dweights[{i}] must be a contiguous {ct} ({E}, {W}) buffer (accumulated into)")
        if has_bias and (dbs[i] is None or tuple(dbs[i].shape) != (E,) or dbs[i].dtype != ct
                         or not dbs[i].is_contiguous()):
            raise ValueError(f"dbiases[{i}] must be a contiguous {ct} ({E},) buffer (accumulated into)")
    ws = [w.contiguous() for w in weights]
    bs = [bb.contiguous() if bb is not None else ws[0] for bb in biases]
    dbp = [dbs[i] if has_bias else dws[i] for i in range(nd)]
    j = 1 if nd == 2 else 0
    _conv_bwd_kernel[_grid(b, E, l, CONV_BWD_TILE)](
        x, *x.stride(), ws[0], bs[0], ws[j], bs[j], grads[0], *grads[0].stride(), grads[j], *grads[j].stride(),
        dx, *dx.stride(), dws[0], dbp[0], dws[j], dbp[j], l, E,
        W=W, HAS_BIAS=has_bias, NDIR=nd, BLOCK_C=CONV_BWD_TILE["BLOCK_C"], BLOCK_T=CONV_BWD_TILE["BLOCK_T"],
        ACC=tl.float64 if ct == torch.float64 else tl.float32, num_warps=CONV_BWD_TILE["num_warps"],
    )
    return dx, tuple(dws), tuple(dbs if has_bias else [None] * nd)


# ----------------------------------------------------------------------------------------------------
# ahead-of-time compilation (see mamba.ops.triton_aot)

AOT_KERNELS = ("_conv_fwd_kernel", "_conv_bwd_kernel")


def aot_jobs(matrix: str) -> list:
    """``default``: the mixer's launches (both directions, bias) in bf16 and fp32; ``table``: none (one tile);
    ``full``: every dtype x bias x directions combination."""
    if matrix == "default":
        return [dict(dtype=dt) for dt in ("bf16", "fp32")]
    if matrix == "table":
        return []
    if matrix == "full":
        return [dict(dtype=dt, bias=bias, ndir=nd) for dt in ("bf16", "fp32") for bias in (True, False)
                for nd in (1, 2)]
    raise ValueError(f"matrix must be default, table or full, got {matrix!r}")


def aot_record(job: dict, b: int = 2, E: int = 384, l: int = 3137, W: int = 4) -> list:
    """The forward and backward launches of one job, in the fused mixer's layout: x is the first half of an
    ``(2E, b, l)`` in_proj output, outputs and gradients ``(E, b, l)`` buffers, all seen as ``(b, E, l)``."""
    from . import triton_aot

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[job.get("dtype", "bf16")]
    nd, bias = int(job.get("ndir", 2)), bool(job.get("bias", True))
    ct = _acc(torch.empty(0, dtype=dt))
    xz = torch.empty(2 * E, b, l, dtype=dt)
    x = xz[:E].permute(1, 0, 2)
    ws = [torch.empty(E, W) for _ in range(nd)]
    bs = [torch.empty(E) if bias else None for _ in range(nd)]
    bufs = [torch.empty(E, b, l, dtype=dt).permute(1, 0, 2) for _ in range(2 * nd)]
    with triton_aot.recording(__import__(__name__, fromlist=["_"])) as calls:
        bi_conv_fwd(x, ws, bs, out=bufs[:nd])
        bi_conv_bwd(x, ws, bs, bufs[nd:], dx=torch.empty(2 * E, b, l, dtype=dt)[:E].permute(1, 0, 2),
                    dweights=[torch.zeros(E, W, dtype=ct) for _ in range(nd)],
                    dbiases=[torch.zeros(E, dtype=ct) for _ in range(nd)] if bias else None)
    return calls


def aot_describe(kernel, kwargs) -> str:
    name = getattr(kernel, "fn", kernel).__name__.strip("_").replace("_kernel", "")
    return f"{name} ndir={kwargs.get('NDIR')} bias={int(bool(kwargs.get('HAS_BIAS')))}"
