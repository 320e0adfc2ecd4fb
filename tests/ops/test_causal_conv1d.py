import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba.ops import causal_conv1d as cc
from mamba.ops.causal_conv1d import causal_conv1d_fn


def _loop_conv(x, w, b):
    """out_t = b + sum_k w[k] x_{t-(W-1)+k}, zero outside the sequence (written as a loop)."""
    bsz, d, l = x.shape
    W = w.shape[1]
    out = torch.zeros_like(x)
    for t in range(l):
        for k in range(W):
            s = t - (W - 1) + k
            if 0 <= s < l:
                out[:, :, t] += w[:, k] * x[:, :, s]
    return out + (b[None, :, None] if b is not None else 0)


@pytest.mark.parametrize("l", [1, 3, 9])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", [None, "silu"])
def test_forward_matches_loop_and_nn_conv(l, bias, act):
    torch.manual_seed(0)
    x = torch.randn(2, 5, l, dtype=torch.float64)
    conv = nn.Conv1d(5, 5, 4, groups=5, padding=3, bias=bias).double()
    b = conv.bias if bias else None
    out = causal_conv1d_fn(x, conv.weight.squeeze(1), b, activation=act)
    ref = _loop_conv(x, conv.weight.squeeze(1), b)
    ref_nn = conv(x)[..., :l]  # the Mamba layout: symmetric padding, keep the first l outputs
    if act:
        ref, ref_nn = F.silu(ref), F.silu(ref_nn)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out, ref_nn)


@pytest.mark.parametrize("l", [1, 2, 11])
@pytest.mark.parametrize("act", [None, "silu"])
def test_reverse_equals_flip_conv_flip(l, act):
    torch.manual_seed(1)
    x = torch.randn(3, 4, l, dtype=torch.float64)
    w = torch.randn(4, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    out = causal_conv1d_fn(x, w, b, activation=act, reverse=True)
    ref = causal_conv1d_fn(x.flip(-1), w, b, activation=act).flip(-1)
    torch.testing.assert_close(out, ref)
    # and it is genuinely anti-causal: changing the last token changes earlier outputs, the first does not
    if l > 1:
        x2 = x.clone()
        x2[..., 0] += 1.0
        d = (causal_conv1d_fn(x2, w, b, act, reverse=True) - out).abs().amax(dim=(0, 1))
        assert d[0] > 0 and torch.all(d[1:] == 0)


def test_gradients_float64():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for rev in (False, True):
        torch.autograd.gradcheck(lambda x, w, b, rev=rev: causal_conv1d_fn(x, w, b, "silu", reverse=rev), (x, w, b))


def test_bfloat16_close_to_fp32():
    torch.manual_seed(3)
    x, w, b = torch.randn(2, 8, 10), torch.randn(8, 4), torch.randn(8)
    out = causal_conv1d_fn(x.bfloat16(), w.bfloat16(), b.bfloat16(), "silu", reverse=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), causal_conv1d_fn(x, w, b, "silu", reverse=True), atol=0.1, rtol=0.05)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="weight must be"):
        causal_conv1d_fn(torch.randn(1, 3, 5), torch.randn(4, 4))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_fn(torch.randn(1, 3, 5), torch.randn(3, 4), activation="relu")
    with pytest.raises(ValueError, match=r"\(b, d, l\)"):
        causal_conv1d_fn(torch.randn(3, 5), torch.randn(3, 4))


def test_cpu_never_uses_compiled_kernel(monkeypatch):
    """The compiled kernel is only for CUDA tensors; on CPU the torch path runs even if it is importable."""
    def boom(*a, **k):
        raise AssertionError("compiled causal_conv1d called for a CPU tensor")
    monkeypatch.setattr(cc, "_cuda_fn", boom)
    monkeypatch.setattr(cc, "_cuda_checked", True)
    x, w = torch.randn(1, 2, 5), torch.randn(2, 4)
    torch.testing.assert_close(causal_conv1d_fn(x, w), cc.causal_conv1d_ref(x, w))


def test_compiled_kernel_path_flips_for_reverse(monkeypatch):
    """Dispatch logic of the CUDA path, checked with the torch implementation standing in for the kernel."""
    calls = []

    def fake_kernel(x, weight, bias=None, activation=None):
        calls.append(activation)
        return cc.causal_conv1d_ref(x, weight, bias, activation)

    monkeypatch.setattr(cc, "_cuda_fn", fake_kernel)
    monkeypatch.setattr(cc, "_cuda_checked", True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    x, w, b = torch.randn(2, 3, 7), torch.randn(3, 4), torch.randn(3)
    out = causal_conv1d_fn(x, w, b, "silu", reverse=True)
    monkeypatch.undo()
    assert calls == ["silu"]
    torch.testing.assert_close(out, cc.causal_conv1d_ref(x, w, b, "silu", reverse=True))


@pytest.fixture
def fake_package(monkeypatch):
    """A fake compiled ``causal_conv1d`` package (computing with the torch path) that records its calls, on
    tensors the dispatch takes for CUDA ones (the device check mocked: no GPU needed)."""
    import sys
    import types

    from mamba.ops import backend

    calls = []
    mod = types.ModuleType("causal_conv1d")

    def fake_fn(x, weight, bias=None, activation=None):
        calls.append(activation)
        return cc.causal_conv1d_ref(x, weight, bias, activation)

    mod.causal_conv1d_fn = fake_fn
    monkeypatch.setitem(sys.modules, "causal_conv1d", mod)
    monkeypatch.setattr(cc, "_cuda_checked", False)
    monkeypatch.setattr(cc, "_cuda_fn", None)
    monkeypatch.setattr(cc, "_on_cuda", lambda x: True)
    monkeypatch.delenv("VMP_SCAN_BACKEND", raising=False)
    monkeypatch.setattr(backend, "check_backend_available", lambda name: None)  # 'cuda' / 'triton' forced here
    yield calls
    backend.set_scan_backend(None)


@pytest.mark.parametrize("name,compiled", [("reference", False), ("torch", False), ("auto", True), ("cuda", True),
                                           ("triton", True)])
def test_compiled_kernel_follows_the_scan_backend(fake_package, name, compiled):
    """The compiled package runs under auto / cuda / triton only; reference and torch keep the PyTorch conv even
    when it is installed, whether the backend comes from the call, a scope or the global switch."""
    from mamba.ops.backend import scan_backend_scope, set_scan_backend

    x, w, b = torch.randn(2, 3, 7), torch.randn(3, 4), torch.randn(3)
    want = cc.causal_conv1d_ref(x, w, b, "silu")
    torch.testing.assert_close(causal_conv1d_fn(x, w, b, "silu", backend=name), want)
    with scan_backend_scope(name):
        torch.testing.assert_close(causal_conv1d_fn(x, w, b, "silu"), want)
    set_scan_backend(name)
    torch.testing.assert_close(causal_conv1d_fn(x, w, b, "silu"), want)
    assert fake_package == (["silu"] * 3 if compiled else [])
    # a model's own choice wins over the global switch
    fake_package.clear()
    set_scan_backend("torch" if compiled else "auto")
    causal_conv1d_fn(x, w, b, "silu", backend=name)
    assert fake_package == (["silu"] if compiled else [])


def test_mixer_conv_follows_the_mixer_backend(fake_package):
    """BiMamba(scan_backend='reference') never calls the compiled conv, though the global switch says auto."""
    from mamba.modules import BiMamba

    m = BiMamba(8, d_state=4, scan_backend="reference").double()
    assert m.scan_backend == "reference"
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    u_f = m._direction(x.transpose(1, 2).repeat(1, 2, 1), m.conv1d, m.x_proj, m.dt_proj, reverse=False)[0]
    assert fake_package == [] and u_f.shape == (1, 16, 6)
    m.scan_backend = None  # follows the global switch (auto): the compiled conv
    m._direction(x.transpose(1, 2).repeat(1, 2, 1), m.conv1d, m.x_proj, m.dt_proj, reverse=False)
    assert fake_package == ["silu"]
