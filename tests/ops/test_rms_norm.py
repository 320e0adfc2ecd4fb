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
