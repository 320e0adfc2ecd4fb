"""Triton selective-scan kernels vs the reference loop: values and every input gradient.

Without a GPU the kernels run through Triton's interpreter (TRITON_INTERPRET=1, set here before the
kernels are decorated) at small shapes with small tiles, so that several chunks and channel blocks are
crossed. Full-size checks are marked ``gpu`` and skipped without CUDA.
"""
import importlib
import os
import subprocess
import sys

import pytest
import torch
from triton_interp import HAS_CUDA, interpreted, interpreter_guards, runs_in_process, use_interpreter

use_interpreter()  # without CUDA: TRITON_INTERPRET=1 before the first `import triton`

import mamba.ops.scan_triton as st  # noqa: E402
from mamba.ops.backend import set_scan_backend  # noqa: E402
from mamba.ops.selective_scan import (  # noqa: E402
    bi_scan_bwd_ref,
    bi_scan_fwd_ref,
    bi_selective_scan_fn,
    bi_selective_scan_ref,
    selective_scan_fn,
    selective_scan_ref,
)

# Another test module may have imported triton before this one set TRITON_INTERPRET: its helpers are then
# compiled-only and cannot run on the CPU; this file then re-runs itself in a fresh interpreter process.
IN_PROCESS = runs_in_process()
if IN_PROCESS and not HAS_CUDA and not interpreted(st._scan_fwd_kernel):
    st = importlib.reload(st)  # imported earlier (without the interpreter) by someone else
_needs_in_process, test_rerun_in_fresh_process = interpreter_guards(IN_PROCESS, __file__)


DEV = "cuda" if HAS_CUDA else "cpu"
SMALL = dict(block_d=4, chunk=4, num_warps=1)  # 5 channels -> 2 channel blocks; l=11 -> 3 chunks
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def _inputs(b, d, n, l, dtype=torch.float32, seed=0, *, D=True, z=True, bias=True):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(dtype)

    x = dict(
        u=r(b, d, l), delta=r(b, d, l, scale=0.5), A=-(torch.rand(d, n, generator=g) + 0.2).to(dtype),
        B=r(b, n, l), C=r(b, n, l), D=r(d) if D else None, z=r(b, d, l) if z else None,
        delta_bias=r(d, scale=0.3) if bias else None,
    )
    return {k: (v.to(DEV).requires_grad_() if v is not None else None) for k, v in x.items()}


def _grads(out, x, gout):
    names = [k for k, v in x.items() if v is not None]
    # allow_unused: e.g. B does not reach the masked output at l=1, D not with mask_drops_D (grad 0)
    gs = torch.autograd.grad(out, [x[k] for k in names], gout, allow_unused=True, materialize_grads=True)
    return dict(zip(names, gs))


def _compare(a, b, tol):
    for k in b:
        torch.testing.assert_close(a[k], b[k], **tol, msg=lambda m, k=k: f"grad {k}: {m}")


CASES = [  # (l, D, z, bias, softplus)
    (1, True, True, True, True),
    (2, False, False, False, False),
    (7, True, False, True, True),
    (11, True, True, False, True),
]


_SINGLE = [(r, m, *c) for r in (False, True) for m in (False, True) for c in CASES]
_SINGLE_DEFAULT = {(True, True, 11), (False, False, 7), (True, False, 1), (False, True, 2)}  # (residual, masked, l)


@pytest.mark.parametrize("residual,masked,l,hasD,hasz,hasbias,softplus", [
    pytest.param(*c, marks=() if (c[0], c[1], c[2]) in _SINGLE_DEFAULT else pytest.mark.slow) for c in _SINGLE])
def test_single_direction_matches_reference(residual, masked, l, hasD, hasz, hasbias, softplus):
    x = _inputs(2, 5, 3, l, D=hasD, z=hasz, bias=hasbias, seed=l)
    kw = dict(residual=residual, masked=masked)
    with st.triton_scan_config(**SMALL):
        out, last = st.selective_scan_triton(*x.values(), softplus, True, **kw)
    ref, ref_last = selective_scan_ref(*x.values(), softplus, True, **kw)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    torch.testing.assert_close(last, ref_last, **TOL[torch.float32])
    gout = torch.randn_like(out)
    _compare(_grads(out, x, gout), _grads(ref, x, gout), TOL[torch.float32])


def test_mask_drops_D_and_strided_BC():
    """mask_drops_D ablation; B/C given as transposed views (as x_proj produces them), u non-contiguous."""
    b, d, n, l = 2, 5, 3, 9
    x = _inputs(b, d, n, l, seed=3)
    Bt = x["B"].detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # stride (l*n, 1, n)
    u = x["u"].detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    x["B"], x["u"] = Bt, u
    assert not Bt.is_contiguous() and not u.is_contiguous()
    kw = dict(residual=True, masked=True, mask_drops_D=True)
    with st.triton_scan_config(**SMALL):
        out = st.selective_scan_triton(*x.values(), True, **kw)
    ref = selective_scan_ref(*x.values(), True, **kw)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    gout = torch.randn_like(out)
    _compare(_grads(out, x, gout), _grads(ref, x, gout), TOL[torch.float32])


def _bi_inputs(b, d, n, l, seed):
    xf, xb = _inputs(b, d, n, l, seed=seed, z=False), _inputs(b, d, n, l, seed=seed + 100, z=False)
    z = torch.randn(b, d, l, generator=torch.Generator().manual_seed(seed + 7)).to(DEV).requires_grad_()
    pairs = {k: (xf[k], xb[k]) for k in xf if k != "z"}
    leaves = {f"{k}_f": xf[k] for k in pairs} | {f"{k}_b": xb[k] for k in pairs} | {"z": z}
    return pairs, z, leaves


@pytest.mark.parametrize(
    "residual,masked,average,l",
    [
        ((True, True), (False, True), False, 11),  # VideoMambaPro defaults
        ((False, False), (False, False), False, 6),  # VideoMamba
        ((True, False), (True, True), True, 1),  # mixed options, single token, averaged
    ],
)
def test_bidirectional_matches_reference(residual, masked, average, l):
    pairs, z, leaves = _bi_inputs(2, 5, 3, l, seed=11 + l)
    kw = dict(residual=residual, masked=masked, average=average)
    args = (pairs["u"], pairs["delta"], pairs["A"], pairs["B"], pairs["C"], pairs["D"], z, pairs["delta_bias"], True)
    with st.triton_scan_config(**SMALL):
        out = st.bi_selective_scan_triton(*args, **kw)
    ref = bi_selective_scan_ref(*args, **kw)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    gout = torch.randn_like(out)
    _compare(_grads(out, leaves, gout), _grads(ref, leaves, gout), TOL[torch.float32])


def test_bidirectional_shared_u_accumulates_both_gradients():
    """The same tensor used by both directions gets the sum of both directions' gradients."""
    pairs, z, _ = _bi_inputs(1, 5, 3, 7, seed=5)
    u = pairs["u"][0]
    args = ((u, u), pairs["delta"], pairs["A"], pairs["B"], pairs["C"], pairs["D"], z, pairs["delta_bias"], True)
    with st.triton_scan_config(**SMALL):
        out = st.bi_selective_scan_triton(*args)
    ref = bi_selective_scan_ref(*args)
    gout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, [u], gout)
    (gr,) = torch.autograd.grad(ref, [u], gout)
    torch.testing.assert_close(g, gr, **TOL[torch.float32])


def test_dispatch_through_public_api():
    """selective_scan_fn / bi_selective_scan_fn with the backend forced to triton run these kernels."""
    x = _inputs(1, 5, 3, 5, seed=21)
    pairs, z, _ = _bi_inputs(1, 5, 3, 5, seed=22)
    set_scan_backend("triton")
    try:
        with st.triton_scan_config(**SMALL):
            out = selective_scan_fn(*x.values(), True, residual=True, masked=True)
            bout = bi_selective_scan_fn(pairs["u"], pairs["delta"], pairs["A"], pairs["B"], pairs["C"], pairs["D"], z,
                                        pairs["delta_bias"])
    finally:
        set_scan_backend(None)
    torch.testing.assert_close(out, selective_scan_ref(*x.values(), True, residual=True, masked=True),
                               **TOL[torch.float32])
    ref = bi_selective_scan_ref(pairs["u"], pairs["delta"], pairs["A"], pairs["B"], pairs["C"], pairs["D"], z,
                                pairs["delta_bias"])
    torch.testing.assert_close(bout, ref, **TOL[torch.float32])


def test_gradcheck_float64():
    x = _inputs(1, 2, 2, 3, dtype=torch.float64, seed=4)
    names = list(x)

    def f(*vals):
        kw = dict(zip(names, vals))
        with st.triton_scan_config(block_d=2, chunk=2):
            return st.selective_scan_triton(**kw, delta_softplus=True, residual=True, masked=True)

    assert torch.autograd.gradcheck(f, tuple(x.values()), eps=1e-6, atol=1e-6)


def test_float64_values_are_exact():
    x = _inputs(2, 5, 3, 11, dtype=torch.float64, seed=8)
    with st.triton_scan_config(**SMALL):
        out = st.selective_scan_triton(*x.values(), True, residual=True, masked=True)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, selective_scan_ref(*x.values(), True, residual=True, masked=True),
                               **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    x32 = _inputs(2, 5, 3, 11, seed=9)
    x = {k: v.detach().to(dtype).requires_grad_() for k, v in x32.items()}
    with st.triton_scan_config(**SMALL):
        out = st.selective_scan_triton(*x.values(), True, residual=True, masked=True)
    assert out.dtype == dtype
    # reference on the same (rounded) inputs in fp32: only the output rounding and accumulation order differ
    xr = {k: v.detach().float().requires_grad_() for k, v in x.items()}
    ref = selective_scan_ref(*xr.values(), True, residual=True, masked=True)
    tol = dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(out.float(), ref, **tol)
    gout = torch.randn_like(ref)
    g = _grads(out, x, gout.to(dtype))
    gr = _grads(ref, xr, gout.to(dtype).float())
    for k in gr:
        assert g[k].dtype == dtype
        scale = gr[k].abs().max().clamp_min(1.0)
        assert (g[k].float() - gr[k]).abs().max() <= 3e-2 * scale, k


def test_grouped_BC():
    x = _inputs(1, 4, 3, 5, seed=2)
    B1 = x["B"].detach().unsqueeze(1).requires_grad_()  # (b, 1, n, l): one group is the ungrouped case
    with st.triton_scan_config(**SMALL):
        out = st.selective_scan_triton(x["u"], x["delta"], x["A"], B1, x["C"], x["D"])
        out.sum().backward()
    torch.testing.assert_close(out, selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"]),
                               **TOL[torch.float32])
    assert B1.grad.shape == B1.shape
    B2 = torch.randn(1, 2, 3, 5, device=DEV)
    with pytest.raises(NotImplementedError, match="grouped B.*VMP_SCAN_BACKEND=torch"):
        st.selective_scan_triton(x["u"], x["delta"], x["A"], B2, x["C"])


def test_bad_shapes_are_named():
    x = _inputs(1, 4, 3, 5, seed=2)
    with pytest.raises(ValueError, match="C must be"):
        st.selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"][..., :4])
    with pytest.raises(ValueError, match="D must be"):
        st.selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], torch.ones(3, device=DEV))


def test_tile_config_rejects_non_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        with st.triton_scan_config(chunk=6):
            pass


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-without-interpreter error")
def test_cpu_without_interpreter_says_what_to_set():
    code = (
        "import torch; from mamba.ops.scan_triton import selective_scan_triton as f\n"
        "u = torch.randn(1, 2, 3)\n"
        "try:\n    f(u, u, -torch.ones(2, 2), torch.randn(1, 2, 3), torch.randn(1, 2, 3))\n"
        "except RuntimeError as e:\n    print('ERR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert "ERR" in r.stdout and "TRITON_INTERPRET=1" in r.stdout, r.stdout + r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_size_bidirectional_on_gpu(dtype):
    """VideoMamba-Ti layer at 8 frames (E=384, l=1+196*8) with the default tiles, vs the reference."""
    b, d, n, l = 2, 384, 16, 1 + 196 * 8
    pairs, z, leaves = _bi_inputs(b, d, n, l, seed=1)
    cast = {k: v.detach().to(dtype).requires_grad_() if k.startswith(("u", "delta", "B", "C", "z")) else v
            for k, v in leaves.items()}
    pr = {k: (cast[f"{k}_f"], cast[f"{k}_b"]) for k in pairs}
    args = (pr["u"], pr["delta"], pr["A"], pr["B"], pr["C"], pr["D"], cast["z"], pr["delta_bias"], True)
    out = st.bi_selective_scan_triton(*args)
    ref = bi_selective_scan_ref(*args)
    tol = TOL[torch.float32] if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    tol = dict(atol=max(tol["atol"], 1e-3), rtol=max(tol["rtol"], 1e-3))
    torch.testing.assert_close(out.float(), ref.float(), **tol)
    gout = torch.randn_like(out)
    g, gr = _grads(out, cast, gout), _grads(ref, cast, gout)
    for k in gr:
        scale = gr[k].float().abs().max().clamp_min(1.0)
        assert (g[k].float() - gr[k].float()).abs().max() <= tol["atol"] * 10 * scale, k


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_every_table_tile_on_gpu():
    """Each TILE_TABLE tile (forced) on the VideoMambaPro layer at VideoMamba-Ti x 8 frames, bf16, vs the
    reference: the compiled kernels of every tile the table can pick, on real hardware."""
    b, d, n, l = 1, 384, 16, 1 + 196 * 8
    pairs, z, leaves = _bi_inputs(b, d, n, l, seed=2)
    cast = {k: v.detach().to(torch.bfloat16).requires_grad_() if k.startswith(("u", "delta", "B", "C", "z")) else v
            for k, v in leaves.items()}
    pr = {k: (cast[f"{k}_f"], cast[f"{k}_b"]) for k in pairs}
    args = (pr["u"], pr["delta"], pr["A"], pr["B"], pr["C"], pr["D"], cast["z"], pr["delta_bias"], True)
    ref = bi_selective_scan_ref(*args)
    gout = torch.randn_like(ref)
    gr = _grads(ref, cast, gout)
    for *_, tile in st.TILE_TABLE:
        with st.triton_scan_config(**tile):
            out = st.bi_selective_scan_triton(*args)
            g = _grads(out, cast, gout)
        torch.testing.assert_close(out.float(), ref.float(), atol=5e-2, rtol=5e-2, msg=lambda m, t=tile: f"{t}: {m}")
        for k in gr:
            scale = gr[k].float().abs().max().clamp_min(1.0)
            assert (g[k].float() - gr[k].float()).abs().max() <= 0.5 * scale, (tile, k)


# ----------------------------------------------------------------------------------------------------
# the fused mixer's kernel API (bi_scan_fwd / bi_scan_bwd) vs its executable spec (bi_scan_fwd_ref / bi_scan_bwd_ref)

TINY = dict(block_d=1, chunk=4, num_warps=1)  # the shipped one channel per program; l = 11 -> 3 chunks per direction


def _api_inputs(b, E, N, l, R, ndir, *, low_rank, a_log, gate, hasD=True, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEV)

    def act(*shape, scale=1.0):  # activations in the scan input dtype; parameters stay fp32
        return r(*shape, scale=scale).to(dtype)

    A = [torch.log(torch.rand(E, N, generator=g) + 0.2).to(DEV) if a_log else -(torch.rand(E, N, generator=g) + 0.2)
         .to(DEV) for _ in range(ndir)]
    x = dict(u=[act(b, E, l) for _ in range(ndir)],
             dt=[act(b, R, l, scale=0.5) if low_rank else act(b, E, l, scale=0.5) for _ in range(ndir)],
             A=A, B=[act(b, N, l) for _ in range(ndir)], C=[act(b, N, l) for _ in range(ndir)],
             D=[r(E) if hasD else None for _ in range(ndir)], dt_bias=[r(E, scale=0.3) for _ in range(ndir)])
    x["D"][-1] = None if ndir == 2 and hasD == "first" else x["D"][-1]  # D on one direction only
    z = act(b, E, l) if gate else None
    W = [r(E, R, scale=0.5) for _ in range(ndir)] if low_rank else None
    return x, z, W


def _as_ref(x, z, W):
    """fp32 copies (the reference on the same rounded inputs: only accumulation order and output rounding differ)."""
    def f(X):
        return None if X is None else X.float()
    return {k: [f(X) for X in v] for k, v in x.items()}, f(z), None if W is None else [f(X) for X in W]


def _check_api(x, z, W, flags, tol, *, want_out_z=True):
    """bi_scan_fwd / bi_scan_bwd (states saved by the forward) vs the references: the output and every gradient."""
    args = (x["u"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["dt_bias"])
    xr, zr, Wr = _as_ref(x, z, W)
    rargs = (xr["u"], xr["dt"], xr["A"], xr["B"], xr["C"], xr["D"], xr["dt_bias"])
    out, states = st.bi_scan_fwd(*args, z, W_dt=W, save_states=True, **flags)
    ref = bi_scan_fwd_ref(*rargs, zr, W_dt=Wr, **flags)
    assert out.dtype == x["u"][0].dtype
    torch.testing.assert_close(out.float(), ref, **tol)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(DEV)
    g = st.bi_scan_bwd(*args, z, dout.to(out.dtype), W_dt=W, states=states, want_out_z=want_out_z, **flags)
    gr = bi_scan_bwd_ref(*rargs, zr, dout.to(out.dtype).float(), W_dt=Wr, want_out_z=want_out_z, **flags)
    assert set(g) == set(gr)
    for k, ref_v in gr.items():
        got = g[k]
        if ref_v is None or got is None:
            assert ref_v is None and got is None, k
            continue
        pairs = zip(got, ref_v) if isinstance(ref_v, tuple) else [(got, ref_v)]
        for i, (a, b) in enumerate(pairs):
            if b is None or a is None:
                assert a is None and b is None, (k, i)
                continue
            scale = b.abs().max().clamp_min(1.0)
            err = (a.float() - b.float()).abs().max()
            assert err <= tol["atol"] * scale, f"{k}[{i}]: max error {err:.3g} (scale {scale:.3g})"
    return g


FP32 = dict(atol=2e-5, rtol=2e-5)
BF16 = dict(atol=3e-2, rtol=3e-2)
_VMP = dict(residual=(True, True), masked=(False, True), drop_D=False, scale=1.0)


@pytest.mark.parametrize("low_rank,a_log,gate,flags", [
    (True, True, True, _VMP),  # the VideoMambaPro mixer: W_dt @ dt_low, A_log, gate, out_z
    (True, True, False, dict(residual=(False, False), masked=(False, False), drop_D=False, scale=0.5)),  # VideoMamba
    (False, False, True, dict(residual=(False, True), masked=(True, False), drop_D=True, scale=1.0)),  # mixed
])
def test_mixer_api_matches_reference(low_rank, a_log, gate, flags):
    x, z, W = _api_inputs(2, 3, 3, 11, 2, 2, low_rank=low_rank, a_log=a_log, gate=gate, seed=1)
    with st.triton_scan_config(**TINY):
        _check_api(x, z, W, flags, FP32)


def test_mixer_api_bf16_one_direction():
    x, z, W = _api_inputs(1, 3, 3, 9, 2, 1, low_rank=True, a_log=True, gate=True, seed=2, dtype=torch.bfloat16)
    with st.triton_scan_config(**TINY):
        _check_api(x, z, W, dict(residual=(True,), masked=(True,), drop_D=False, scale=1.0), BF16)


_FULL = [dict(ndir=nd, low_rank=lr, a_log=al, gate=gt, residual=res, masked=msk, drop_D=drop, dtype=dt)
         for nd in (1, 2) for lr in (False, True) for al in (False, True) for gt in (False, True)
         for res in (False, True) for msk in (False, True) for drop in ((False, True) if msk else (False,))
         for dt in ("fp32", "bf16")]


@pytest.mark.slow
@pytest.mark.parametrize("case", _FULL, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_mixer_api_every_flag_combination(case):
    """Every flag (ndir x delta-as-tensor / low-rank x A / A_log x gate x residual x mask x mask_drops_D, the
    second direction the flags' opposite where two) in fp32 and bf16, l = 11 (3 chunks of 4, the last partial)."""
    nd = case["ndir"]
    dtype = torch.float32 if case["dtype"] == "fp32" else torch.bfloat16
    x, z, W = _api_inputs(2, 3, 3, 11, 2, nd, low_rank=case["low_rank"], a_log=case["a_log"], gate=case["gate"],
                          hasD="first" if case["drop_D"] else True, seed=len(_FULL), dtype=dtype)
    res, msk = (case["residual"], not case["residual"]), (case["masked"], True)
    flags = dict(residual=res[:nd], masked=msk[:nd], drop_D=case["drop_D"], scale=0.5 if case["gate"] else 1.0)
    with st.triton_scan_config(**TINY):
        _check_api(x, z, W, flags, FP32 if dtype == torch.float32 else BF16)


def test_mixer_api_destinations_are_written_and_accumulated():
    """Feature-major destinations (rows of one (channels, b * l) buffer, as the mixer's gradient buffers): du / dz /
    out_z written in place; dB / dC / d(dt_low) / parameter gradients ADDED to what the buffers hold; the result
    holds the destinations themselves. Without saved states the backward reruns the forward (same gradients)."""
    b, E, N, l, R = 2, 3, 3, 7, 2
    x, z, W = _api_inputs(b, E, N, l, R, 2, low_rank=True, a_log=True, gate=True, seed=3)
    M = b * l

    def rows(buf):
        return buf.view(buf.shape[0], b, l).permute(1, 0, 2)

    ddbc = torch.full((2, R + 2 * N, M), 0.25, device=DEV)  # pre-filled: the kernel must add to it
    dxz = torch.zeros(2 * E, M, device=DEV, dtype=torch.bfloat16)
    du = torch.zeros(2, E, M, device=DEV)
    out_z = torch.zeros(E, M, device=DEV)
    dA = [torch.ones(E, N, device=DEV) for _ in range(2)]
    args = (x["u"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["dt_bias"], z)
    with st.triton_scan_config(**TINY):
        y = torch.zeros(E, M, device=DEV)
        out, states = st.bi_scan_fwd(*args, W_dt=W, a_log=True, out=rows(y), save_states=True)
        assert out.data_ptr() == y.data_ptr() and out.stride() == (l, M, 1)
        dout = torch.randn(b, E, l, generator=torch.Generator().manual_seed(5)).to(DEV)
        g = st.bi_scan_bwd(*args, dout, W_dt=W, a_log=True, states=states, want_out_z=True,
                           du=[rows(du[i]) for i in range(2)], ddt=[rows(ddbc[i, :R]) for i in range(2)],
                           dB=[rows(ddbc[i, R:R + N]) for i in range(2)], dC=[rows(ddbc[i, R + N:]) for i in range(2)],
                           dA=dA, dz=rows(dxz[E:]), out_z=rows(out_z))
        g2 = st.bi_scan_bwd(*args, dout, W_dt=W, a_log=True, want_out_z=True)  # states recomputed
    gr = bi_scan_bwd_ref(*args, dout, W_dt=W, a_log=True, want_out_z=True)
    torch.testing.assert_close(out, gr["out_z"], **FP32)
    for i in range(2):
        assert g["du"][i].data_ptr() == du[i].data_ptr()
        torch.testing.assert_close(du[i], gr["du"][i].permute(1, 0, 2).reshape(E, M), **FP32)
        for name, sl in (("ddt", slice(0, R)), ("dB", slice(R, R + N)), ("dC", slice(R + N, None))):
            torch.testing.assert_close(ddbc[i, sl], 0.25 + gr[name][i].permute(1, 0, 2).reshape(-1, M), **FP32)
        torch.testing.assert_close(dA[i], 1.0 + gr["dA"][i], **FP32)
        for k in ("du", "ddt", "dA", "dB", "dC", "dD", "ddt_bias", "dW_dt"):
            torch.testing.assert_close(g2[k][i], gr[k][i], **FP32)
    torch.testing.assert_close(dxz[E:].float(), gr["dz"].permute(1, 0, 2).reshape(E, M), atol=2e-2, rtol=2e-2)
    assert not dxz[:E].any()  # the x half of the in_proj gradient is not touched
    torch.testing.assert_close(out_z, gr["out_z"].permute(1, 0, 2).reshape(E, M), **FP32)


def test_mixer_api_rejects_bad_arguments():
    x, z, W = _api_inputs(1, 3, 3, 5, 2, 2, low_rank=True, a_log=True, gate=False, seed=4)
    args = (x["u"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["dt_bias"], z)
    with pytest.raises(ValueError, match=r"dt\[0\] must be \(b, R, l\)"):
        st.bi_scan_fwd(x["u"], [x["u"][0], x["u"][1]], *args[2:], W_dt=W)
    with pytest.raises(ValueError, match="one entry per direction"):
        st.bi_scan_fwd(x["u"], x["dt"][:1], *args[2:], W_dt=W)
    with st.triton_scan_config(**TINY):
        _, states = st.bi_scan_fwd(*args, W_dt=W, save_states=True)
        dout = torch.zeros(1, 3, 5, device=DEV)
        with pytest.raises(ValueError, match="accumulated into"):
            st.bi_scan_bwd(*args, dout, W_dt=W, states=states, dB=[torch.zeros(1, 3, 5, dtype=torch.bfloat16)] * 2)
        with pytest.raises(ValueError, match="states must be the forward's"):
            st.bi_scan_bwd(*args, dout, W_dt=W, states=states[:, :, :2])


def test_launch_plan_at_ti_64_frames():
    """The real host code at the Ti 64-frame training shape (b = 8, E = 384, l = 12,545, bf16, the mixer's layout),
    with the kernels replaced by recorders on meta tensors: one forward and one backward launch per layer, each
    with >= 1,056 programs and <= 16 sequential chunk iterations; scan_launch_plan says the same."""
    b, E, N, l, R = 8, 384, 16, 1 + 196 * 64, 12
    plan = st.scan_launch_plan(b, E, l)
    assert plan["programs"] >= 1056 and plan["chunk_iterations"] <= 16, plan
    assert plan["launches"] == dict(fwd=1, bwd=1)
    M = b * l

    def rows(c, dt=torch.bfloat16):
        return torch.empty(c, M, device="meta", dtype=dt).view(c, b, l).permute(1, 0, 2)

    u, dt, B, C = ([rows(c) for _ in range(2)] for c in (E, R, N, N))
    par = [torch.empty(E, device="meta") for _ in range(2)]
    A, W = [torch.empty(E, N, device="meta")] * 2, [torch.empty(E, R, device="meta")] * 2
    from mamba.ops import triton_aot

    with triton_aot.recording(st) as calls:
        out, states = st.bi_scan_fwd(u, dt, A, B, C, par, par, rows(E), W_dt=W, a_log=True, save_states=True)
        st.bi_scan_bwd(u, dt, A, B, C, par, par, rows(E), out, W_dt=W, a_log=True, states=states, want_out_z=True)
    assert [triton_aot.kernel_name(k) for k, *_ in calls] == ["_scan_fwd_kernel", "_scan_bwd_kernel"]
    for call in calls:
        lp = triton_aot.recorded_scan_plan(*call)
        assert (lp["programs"], lp["chunk_iterations"]) == (plan["programs"], plan["chunk_iterations"]), lp
    # saved for the backward: the fp32 chunk-boundary states only, ~27 B per token per layer
    assert states.dtype == torch.float32 and states.shape == (2, b, E, plan["chunks_per_direction"], N)
    assert states.numel() * 4 / (b * l) <= 32


def test_scan_launch_plan_follows_the_tile():
    with st.triton_scan_config(block_d=2, chunk=1024, num_warps=8):
        p = st.scan_launch_plan(2, 384, 1569, ndir=2)
    assert (p["programs"], p["chunks_per_direction"], p["chunk_iterations"], p["grid"]) == (384, 2, 4, (192, 2))
