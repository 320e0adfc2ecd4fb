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

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # read by triton when a kernel is decorated, including triton.language's own helpers: set it before
    # the first `import triton` (importorskip below imports it)
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

import triton.language.standard as _tl_standard  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

import mamba.ops.scan_triton as st  # noqa: E402
from mamba.ops.backend import set_scan_backend  # noqa: E402
from mamba.ops.selective_scan import (  # noqa: E402
    bi_selective_scan_fn,
    bi_selective_scan_ref,
    selective_scan_fn,
    selective_scan_ref,
)

# Another test module may have imported triton before this one set TRITON_INTERPRET: its helpers are then
# compiled-only and cannot run on the CPU; this file then re-runs itself in a fresh interpreter process.
IN_PROCESS = HAS_CUDA or isinstance(_tl_standard.zeros, InterpretedFunction)
if IN_PROCESS and not HAS_CUDA and not isinstance(st._scan_fwd_kernel, InterpretedFunction):
    st = importlib.reload(st)  # imported earlier (without the interpreter) by someone else


@pytest.fixture(autouse=True)
def _needs_in_process(request):
    if not IN_PROCESS and request.node.originalname != "test_rerun_in_fresh_process":
        pytest.skip("triton was imported without TRITON_INTERPRET=1; covered by test_rerun_in_fresh_process")


@pytest.mark.skipif(IN_PROCESS, reason="the tests ran in this process")
def test_rerun_in_fresh_process():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__)],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


DEV = "cuda" if HAS_CUDA else "cpu"
SMALL = dict(block_d=4, chunk=4)  # 5 channels -> 2 channel blocks; l=11 -> 3 chunks
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


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("l,hasD,hasz,hasbias,softplus", CASES)
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
