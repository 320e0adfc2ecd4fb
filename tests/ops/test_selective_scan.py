"""Selective scan: the torch backend and the cuda wrapper (with a fake kernel) against the reference.

Outputs AND the gradient of every input are compared; the two identities of METHOD.md section 2 are
tested directly on the reference.
"""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from mamba.ops import backend as backend_mod
from mamba.ops import scan_cuda, scan_torch
from mamba.ops import selective_scan as ss
from mamba.ops.scan_cuda import selective_scan_cuda_fn
from mamba.ops.scan_torch import ChunkedScanFn, bi_selective_scan_torch, selective_scan_torch
from mamba.ops.selective_scan import (
    bi_selective_scan_fn,
    bi_selective_scan_ref,
    selective_scan_fn,
    selective_scan_ref,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b=2, d=6, n=4, l=7, g=None, dtype=torch.float32, seed=0, D=True, z=True, bias=True):
    gen = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * scale).to(dtype)

    bc = (b, n, l) if g is None else (b, g, n, l)
    x = dict(
        u=r(b, d, l), delta=r(b, d, l, scale=0.5),
        A=(-torch.rand(d, n, generator=gen, dtype=torch.float64) * 1.5 - 0.05).to(dtype),
        B=r(*bc), C=r(*bc), D=r(d) if D else None, z=r(b, d, l) if z else None,
        delta_bias=r(d, scale=0.3) if bias else None,
    )
    return x


def run(fn, x, softplus=True, last=False, **kw):
    """Output, last state and gradients (w.r.t. every given input) of fn under a fixed random cotangent."""
    x = {k: (None if v is None else v.detach().clone().requires_grad_()) for k, v in x.items()}
    res = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], softplus, last, **kw)
    out, state = res if last else (res, None)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(123), dtype=torch.float64).to(out.dtype)
    leaves = {k: v for k, v in x.items() if v is not None}
    grads = torch.autograd.grad(out, list(leaves.values()), cot, allow_unused=True, materialize_grads=True)
    return out, state, dict(zip(leaves.keys(), grads))


def f64(x):
    return {k: (None if v is None else v.double()) for k, v in x.items()}


def assert_close(a, b, rtol, what):
    a, b = a.double(), b.double()
    scale = max(b.abs().max().item(), 1.0)
    err = (a - b).abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:.1g} * {scale:.3g}"


def compare(fn, x, rtol, softplus=True, last=False, **kw):
    """fn on x vs the reference in float64 on the same values: output, last state, every gradient."""
    out, state, grads = run(fn, x, softplus, last, **kw)
    kw.pop("chunk_size", None)
    rout, rstate, rgrads = run(selective_scan_ref, f64(x), softplus, last, **kw)
    assert out.dtype == x["u"].dtype
    assert_close(out, rout, rtol, "out")
    if last:
        assert_close(state, rstate, rtol, "last_state")
    for k in rgrads:
        assert grads[k].dtype == x[k].dtype and grads[k].shape == x[k].shape, k
        assert_close(grads[k], rgrads[k], rtol, "grad " + k)


# ---------------------------------------------------------------- identities on the reference


@pytest.mark.parametrize("grouped", [False, True])
def test_identity_mask_is_plain_minus_diagonal(grouped):
    x = f64(make_inputs(l=9, g=2 if grouped else None))
    for residual in (False, True):
        for drops_D in (False, True):
            masked = selective_scan_ref(*(x[k] for k in NAMES), True, residual=residual, masked=True,
                                        mask_drops_D=drops_D)
            plain = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], None, None, x["delta_bias"], True,
                                       residual=residual)
            dt = F.softplus(x["delta"] + x["delta_bias"][:, None])
            Bx, Cx = ss._expand_groups(x["B"], 6), ss._expand_groups(x["C"], 6)
            expect = plain - dt * x["u"] * (Bx * Cx).sum(2)
            if not drops_D:
                expect = expect + x["D"][:, None] * x["u"]
            expect = expect * F.silu(x["z"])
            torch.testing.assert_close(masked, expect, rtol=1e-12, atol=1e-12)
            # and the mask really changes something
            assert (masked - plain * F.silu(x["z"])).abs().max() > 1e-3


@pytest.mark.parametrize("softplus", [False, True])
def test_identity_residual_is_prepended_pseudo_step(softplus):
    x = f64(make_inputs(l=8, g=3))
    b, d, l = x["u"].shape
    g, n = x["B"].shape[1], x["B"].shape[2]
    c = math.log(math.expm1(1.0)) if softplus else 1.0
    raw = (c - x["delta_bias"])[None, :, None].expand(b, d, 1)
    ext = dict(
        u=torch.cat([x["u"][:, :, :1], x["u"]], -1), delta=torch.cat([raw, x["delta"]], -1),
        B=torch.cat([torch.ones(b, g, n, 1, dtype=torch.float64), x["B"]], -1),
        C=torch.cat([torch.zeros(b, g, n, 1, dtype=torch.float64), x["C"]], -1),
        z=torch.cat([x["z"][:, :, :1], x["z"]], -1),
    )
    for masked in (False, True):
        out, last = selective_scan_ref(*(x[k] for k in NAMES), softplus, True, residual=True, masked=masked)
        pout, plast = selective_scan_ref(ext["u"], ext["delta"], x["A"], ext["B"], ext["C"], x["D"], ext["z"],
                                         x["delta_bias"], softplus, True, masked=masked)
        torch.testing.assert_close(out, pout[:, :, 1:], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(last, plast, rtol=1e-12, atol=1e-12)
        # the residual start is not a no-op
        assert (out - selective_scan_ref(*(x[k] for k in NAMES), softplus, masked=masked)).abs().max() > 1e-3


# ---------------------------------------------------------------- torch backend vs reference


@pytest.mark.parametrize("l", [1, 2, 7, 37])
@pytest.mark.parametrize("grouped", [False, True], ids=["BC", "grouped"])
@pytest.mark.parametrize("masked,residual", [(False, False), (True, False), (False, True), (True, True)])
def test_torch_matches_reference(l, grouped, masked, residual):
    # chunk_size=8 so that l=37 spans several chunks, with a partial last one
    x = make_inputs(l=l, g=2 if grouped else None, seed=l)
    compare(selective_scan_torch, x, 1e-4, softplus=True, last=True, residual=residual, masked=masked,
            chunk_size=8)


@pytest.mark.parametrize("D,z,bias,softplus", [
    (False, False, False, False), (True, False, False, False), (False, True, False, True),
    (False, False, True, False), (True, True, True, False),
])
@pytest.mark.parametrize("masked,residual", [(False, False), (True, True)])
def test_torch_optional_inputs(D, z, bias, softplus, masked, residual):
    x = make_inputs(l=11, D=D, z=z, bias=bias, seed=3)
    if not softplus:
        x["delta"] = x["delta"].abs()  # a non-negative Delta, as softplus would give
    compare(selective_scan_torch, x, 1e-4, softplus=softplus, last=True, residual=residual, masked=masked,
            chunk_size=4)


def check_mask_drops_D(fn):
    x = make_inputs(l=10, g=2)
    compare(fn, x, 1e-4, residual=True, masked=True, mask_drops_D=True)
    a = fn(*(x[k] for k in NAMES), True, residual=True, masked=True, mask_drops_D=True)
    b = fn(*(x[k] for k in NAMES), True, residual=True, masked=True, mask_drops_D=False)
    assert_close(b - a, x["D"][:, None] * x["u"] * F.silu(x["z"]), 1e-5, "D term")


def test_mask_drops_D_torch():
    check_mask_drops_D(selective_scan_torch)


def test_mask_drops_D_cuda_wrapper(fake_selective_scan_cuda):
    check_mask_drops_D(selective_scan_cuda_fn)


def test_torch_long_sequence_1569():
    x = make_inputs(b=1, d=4, n=4, l=1569, seed=5)
    compare(selective_scan_torch, x, 2e-4, last=True, residual=True, masked=True)  # default chunk size


def test_torch_result_independent_of_chunk_size():
    x = make_inputs(l=50, g=2, seed=9)
    ref, ref_state, ref_grads = run(selective_scan_torch, x, True, True, residual=True, masked=True, chunk_size=50)
    for cs in (1, 3, 16, 128):
        out, state, grads = run(selective_scan_torch, x, True, True, residual=True, masked=True, chunk_size=cs)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(state, ref_state, rtol=1e-5, atol=1e-5)
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_low_precision(dtype):
    x = make_inputs(l=40, g=2, dtype=dtype, seed=2)
    compare(selective_scan_torch, x, 5e-2, last=True, residual=True, masked=True, chunk_size=16)


def test_torch_gradcheck_float64():
    x = f64(make_inputs(b=1, d=4, n=2, l=5, g=2, seed=4))
    inputs = tuple(x[k].requires_grad_() for k in NAMES)

    def fn(*a):
        return selective_scan_torch(*a, True, residual=True, masked=True, chunk_size=2)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)

    def fn_plain(*a):
        return selective_scan_torch(*a, False, chunk_size=3)

    assert torch.autograd.gradcheck(fn_plain, inputs, eps=1e-6, atol=1e-6)


def test_torch_saves_no_per_state_sequence():
    """Memory is O(b d l): nothing of size b*d*l*n is kept for backward."""
    b, d, n, l = 1, 16, 16, 1000
    x = make_inputs(b=b, d=d, n=n, l=l)
    x = {k: v.requires_grad_() for k, v in x.items()}
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = selective_scan_torch(*(x[k] for k in NAMES), True, residual=True, masked=True, chunk_size=100)
    nchunks = l // 100
    # no (b, d, l, n) tensor nor a whole chunk buffer is saved: each is at most one O(b d l) input
    assert max(saved) <= max(b * d * l, b * n * l, nchunks * b * d * n)
    # in total a bounded number of O(b d l) / O(b n l) tensors plus the chunk-boundary states
    assert sum(saved) <= 16 * b * d * l + 8 * b * n * l + nchunks * b * d * n, f"saved {sum(saved)} elements"
    y.sum().backward()
    assert x["u"].grad is not None


def test_torch_last_state_not_differentiable():
    x = make_inputs(l=5)
    x = {k: v.requires_grad_() for k, v in x.items()}
    out, state = selective_scan_torch(*(x[k] for k in NAMES), True, True)
    assert out.requires_grad and not state.requires_grad
    assert state.shape == (2, 6, 4) and state.dtype == torch.float32


def test_chunked_fn_reverse_equals_flipped_scan():
    x = f64(make_inputs(l=13, g=2))
    u, dt, A = x["u"], F.softplus(x["delta"]), x["A"]
    y_rev, last_rev = ChunkedScanFn.apply(u, dt, A, x["B"], x["C"], u[:, :, -1], True, 4)
    y_ref, last_ref = selective_scan_ref(u.flip(-1), dt.flip(-1), A, x["B"].flip(-1), x["C"].flip(-1), None, None,
                                         None, False, True, residual=True)
    torch.testing.assert_close(y_rev, y_ref.flip(-1))
    torch.testing.assert_close(last_rev, last_ref)


# ---------------------------------------------------------------- bidirectional


def _bi_inputs(g=None, seed=0, l=12):
    f, bw = make_inputs(l=l, g=g, seed=seed), make_inputs(l=l, g=g, seed=seed + 1)
    z = f["z"]
    pairs = {k: (f[k], bw[k]) for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")}
    return pairs, z


@pytest.mark.parametrize("residual,masked,average,grouped", [
    ((True, True), (False, True), False, False),
    ((True, True), (False, True), True, True),
    ((False, True), (True, False), False, True),
    (False, False, False, False),
])
def test_bi_torch_matches_reference(residual, masked, average, grouped):
    pairs, z = _bi_inputs(g=2 if grouped else None, l=21)
    kw = dict(residual=residual, masked=masked, average=average)

    def go(fn, dtype, **extra):
        leaves = {k: tuple(t.detach().to(dtype).requires_grad_() for t in v) for k, v in pairs.items()}
        zz = z.detach().to(dtype).requires_grad_()
        out = fn(*(leaves[k] for k in ("u", "delta", "A", "B", "C", "D")), zz, leaves["delta_bias"], True,
                 **kw, **extra)
        flat = [t for v in leaves.values() for t in v] + [zz]
        cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype)
        return out, torch.autograd.grad(out, flat, cot)

    out, grads = go(bi_selective_scan_torch, torch.float32, chunk_size=8)
    rout, rgrads = go(bi_selective_scan_ref, torch.float64)
    assert_close(out, rout, 1e-4, "bi out")
    for i, (a, b) in enumerate(zip(grads, rgrads)):
        assert_close(a, b, 1e-4, f"bi grad {i}")


def test_bi_fn_dispatches_to_torch(monkeypatch):
    pairs, z = _bi_inputs(l=9)
    calls = []
    real = scan_torch.bi_selective_scan_torch
    monkeypatch.setattr(scan_torch, "bi_selective_scan_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    backend_mod.set_scan_backend("torch")
    try:
        args = [pairs[k] for k in ("u", "delta", "A", "B", "C", "D")] + [z, pairs["delta_bias"]]
        out = bi_selective_scan_fn(*args)
    finally:
        backend_mod.set_scan_backend(None)
    assert calls == [1]
    ref = bi_selective_scan_ref(*[tuple(t.double() for t in a) if isinstance(a, tuple) else a.double()
                                  for a in args])
    assert_close(out, ref, 1e-4, "bi_selective_scan_fn")


# ---------------------------------------------------------------- cuda wrapper (fake kernel)


@pytest.mark.parametrize("masked,residual", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("grouped,softplus", [(False, True), (True, False)])
def test_cuda_wrapper_matches_reference(fake_selective_scan_cuda, masked, residual, grouped, softplus):
    x = make_inputs(l=9, g=2 if grouped else None, seed=11)
    if not softplus:
        x["delta"] = x["delta"].abs()
    compare(selective_scan_cuda_fn, x, 1e-4, softplus=softplus, last=True, residual=residual, masked=masked)
    calls = fake_selective_scan_cuda
    # the pseudo-step makes the kernel see one more step; the gate is never handed to the kernel
    assert calls[0] == ("fwd", 9 + residual, True)
    assert calls[-1] == ("bwd", 9 + residual, True)


def test_cuda_wrapper_optional_inputs(fake_selective_scan_cuda):
    for D, z, bias in [(False, False, False), (True, False, True), (False, True, False)]:
        x = make_inputs(l=1, D=D, z=z, bias=bias, seed=1)
        compare(selective_scan_cuda_fn, x, 1e-4, last=True, residual=True, masked=True)
        x = make_inputs(l=2, D=D, z=z, bias=bias, seed=2)
        compare(selective_scan_cuda_fn, x, 1e-4, residual=False, masked=True)


def test_cuda_wrapper_rejects_float64(fake_selective_scan_cuda):
    x = f64(make_inputs(l=3))
    with pytest.raises(ValueError, match="float64"):
        selective_scan_cuda_fn(*(x[k] for k in NAMES), True)


def test_cuda_wrapper_without_kernel(monkeypatch):
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)  # import fails
    x = make_inputs(l=3)
    with pytest.raises(RuntimeError, match="pip install mamba-ssm"):
        selective_scan_cuda_fn(*(x[k] for k in NAMES), True)


# ---------------------------------------------------------------- backend switch


@pytest.fixture
def clean_backend(monkeypatch):
    monkeypatch.delenv("VMP_SCAN_BACKEND", raising=False)
    backend_mod.set_scan_backend(None)
    yield monkeypatch
    backend_mod.set_scan_backend(None)


def test_backend_unknown_name(clean_backend):
    with pytest.raises(ValueError, match="unknown scan backend"):
        backend_mod.set_scan_backend("fastest")
    clean_backend.setenv("VMP_SCAN_BACKEND", "bogus")
    backend_mod.set_scan_backend(None)
    with pytest.raises(ValueError, match="bogus"):
        backend_mod.get_scan_backend()


@pytest.mark.skipif(backend_mod.cuda_kernels_available(), reason="mamba-ssm is installed here")
def test_backend_forced_cuda_without_kernel(clean_backend):
    with pytest.raises(RuntimeError, match="pip install mamba-ssm"):
        backend_mod.set_scan_backend("cuda")
    clean_backend.setenv("VMP_SCAN_BACKEND", "cuda")
    backend_mod.set_scan_backend(None)
    x = make_inputs(l=3)
    with pytest.raises(RuntimeError, match="pip install mamba-ssm"):
        selective_scan_fn(*(x[k] for k in NAMES), True)


@pytest.mark.parametrize("env,expect", [("reference", "reference"), ("torch", "torch"), ("auto", "torch"),
                                        (None, "torch")])
def test_backend_dispatch_on_cpu(clean_backend, env, expect):
    calls = []
    real_ref, real_torch = ss.selective_scan_ref, scan_torch.selective_scan_torch
    clean_backend.setattr(ss, "selective_scan_ref", lambda *a, **k: calls.append("reference") or real_ref(*a, **k))
    clean_backend.setattr(scan_torch, "selective_scan_torch",
                          lambda *a, **k: calls.append("torch") or real_torch(*a, **k))
    if env is not None:
        clean_backend.setenv("VMP_SCAN_BACKEND", env)
    x = make_inputs(l=6)
    out = selective_scan_fn(*(x[k] for k in NAMES), True, residual=True, masked=True)
    assert calls == [expect]
    expected = real_ref(*(x[k] for k in NAMES), True, residual=True, masked=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert backend_mod.resolve_backend("cpu") == expect


def test_backend_setter_overrides_env(clean_backend):
    clean_backend.setenv("VMP_SCAN_BACKEND", "reference")
    backend_mod.set_scan_backend("torch")
    assert backend_mod.get_scan_backend() == "torch"
    backend_mod.set_scan_backend(None)
    assert backend_mod.get_scan_backend() == "reference"


def test_cuda_backend_refuses_cpu_tensors(clean_backend, fake_selective_scan_cuda):
    backend_mod.set_scan_backend("cuda")  # the (fake) kernel is importable now
    x = make_inputs(l=3)
    with pytest.raises(RuntimeError, match="CUDA tensors only"):
        selective_scan_fn(*(x[k] for k in NAMES), True)
    assert scan_cuda.load_selective_scan_cuda().__name__ == "selective_scan_cuda"


def test_torch_exact_under_autocast():
    """Under bf16 autocast the scan's contractions must stay in float32."""
    x = make_inputs(l=30, g=2, seed=6)
    out, _, grads = run(selective_scan_torch, x, residual=True, masked=True, chunk_size=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        aout, _, agrads = run(selective_scan_torch, x, residual=True, masked=True, chunk_size=8)
    assert aout.dtype == torch.float32
    assert_close(aout, out, 1e-5, "autocast out")
    for k in grads:
        assert_close(agrads[k], grads[k], 1e-5, "autocast grad " + k)
