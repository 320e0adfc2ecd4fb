import pytest
import torch

from mamba.ops.rms_norm import RMSNorm, rms_norm_fn


def _plain(x, w, eps):
    x = x.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w.double()


def test_matches_formula_and_module():
    torch.manual_seed(0)
    x, w = torch.randn(2, 5, 8), torch.randn(8)
    torch.testing.assert_close(rms_norm_fn(x, w, eps=1e-5).double(), _plain(x, w, 1e-5))
    m = RMSNorm(8)
    assert [n for n, _ in m.named_parameters()] == ["weight"] and torch.all(m.weight == 1)
    with torch.no_grad():
        m.weight.copy_(w)
    torch.testing.assert_close(m(x), rms_norm_fn(x, w))


def test_residual_and_prenorm_semantics():
    torch.manual_seed(1)
    x, r, w = torch.randn(3, 4, 6).bfloat16(), torch.randn(3, 4, 6), torch.randn(6)
    out, new_r = rms_norm_fn(x, w, residual=r, prenorm=True, residual_in_fp32=True)
    assert out.dtype == torch.bfloat16 and new_r.dtype == torch.float32
    torch.testing.assert_close(new_r, x.float() + r)
    torch.testing.assert_close(out.float(), _plain(x.float() + r, w, 1e-5).float(), atol=2e-2, rtol=2e-2)
    # residual None: the new residual is x itself (in fp32)
    out2, r2 = rms_norm_fn(x, w, prenorm=True)
    assert r2.dtype == torch.float32 and torch.equal(r2, x.float())
    _, r3 = rms_norm_fn(x, w, residual=r, prenorm=True, residual_in_fp32=False)
    assert r3.dtype == torch.bfloat16
    # prenorm=False returns the tensor only
    assert isinstance(rms_norm_fn(x, w, residual=r), torch.Tensor)


def test_gradcheck():
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, r, w: rms_norm_fn(x, w, residual=r, prenorm=True), (x, r, w))


def test_bad_weight_shape():
    with pytest.raises(ValueError, match="weight must be"):
        rms_norm_fn(torch.randn(2, 4), torch.randn(5))


def test_add_norm_saves_only_its_input_and_rstd_and_matches_eager_autograd():
    """The fused add + norm keeps r (fp32) and rstd for backward, not eager autograd's ~6 fp32 intermediates; its
    closed-form backward equals autograd through the eager formula."""
    torch.manual_seed(2)
    x = torch.randn(2, 7, 16).bfloat16().requires_grad_()
    r = torch.randn(2, 7, 16, requires_grad=True)
    w = torch.randn(16, requires_grad=True)
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, new_r = rms_norm_fn(x, w, residual=r, prenorm=True)
    assert sum(saved.values()) == 2 * 7 * 16 * 4 + 2 * 7 * 4 + 16 * 4  # r, rstd, weight
    (out.float().square().sum() + new_r.sum()).backward()
    got = [t.grad.clone() for t in (x, r, w)]
    for t in (x, r, w):
        t.grad = None
    rr = x.float() + r
    ref = (rr * torch.rsqrt(rr.pow(2).mean(-1, keepdim=True) + 1e-5) * w).bfloat16()
    assert torch.equal(ref, out) and torch.equal(rr, new_r)
    (ref.float().square().sum() + rr.sum()).backward()
    for g, t in zip(got, (x, r, w)):
        torch.testing.assert_close(g, t.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_module_is_torch_rmsnorm_with_mamba_eps(dtype):
    """``RMSNorm`` is ``torch.nn.RMSNorm`` (eps 1e-5, one ``weight``): values and gradients equal to the
    ``rms_norm_fn`` node's, in the input's dtype."""
    torch.manual_seed(3)
    m = RMSNorm(8, dtype=dtype)
    assert isinstance(m, torch.nn.RMSNorm) and m.eps == 1e-5 and list(m.state_dict()) == ["weight"]
    with torch.no_grad():
        m.weight.copy_(torch.randn(8))
    x = (3 * torch.randn(2, 5, 8)).to(dtype).requires_grad_()
    out = m(x)
    ref = rms_norm_fn(x, m.weight, m.eps)
    assert out.dtype == ref.dtype == dtype
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, m.weight], g)
    want = torch.autograd.grad(ref, [x, m.weight], g)
    tol = dict(atol=1e-2, rtol=1e-2) if dtype == torch.bfloat16 else {}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
