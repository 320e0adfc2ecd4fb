"""Fixtures for the scan tests: a fake ``selective_scan_cuda`` module computing with the reference.

It mimics mamba-ssm's compiled module (``fwd``/``bwd`` positional signatures, 4-D B/C, float32 weights,
``x[:, :, -1, 1::2]`` holding the last state) and checks what the wrapper passes, so the CPU tests verify
the plumbing and the identities of ``mamba/ops/scan_cuda.py`` without a GPU.
"""
import importlib.machinery
import sys
import types

import pytest
import torch

from mamba.ops import scan_cuda
from mamba.ops.selective_scan import selective_scan_ref


def _check_args(u, delta, A, B, C, D, delta_bias):
    assert u.dim() == 3 and delta.shape == u.shape and delta.dtype == u.dtype
    assert B.dim() == 4 and C.dim() == 4, "the kernel wants (b, g, n, l) B/C"
    for X in (u, delta, B, C):
        assert X.stride(-1) == 1, "the kernel needs a unit last stride"
    assert A.dtype == torch.float32
    for X in (D, delta_bias):
        assert X is None or (X.dtype == torch.float32 and X.is_contiguous())


def _make_module(with_cu_seqlens: bool, calls: list):
    mod = types.ModuleType("selective_scan_cuda")
    mod.__spec__ = importlib.machinery.ModuleSpec("selective_scan_cuda", None)

    def fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        _check_args(u, delta, A, B, C, D, delta_bias)
        calls.append(("fwd", u.shape[-1], z is None))
        out, last = selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, delta_softplus, True)
        b, d, n = last.shape
        x = torch.zeros(b, d, 1, 2 * n, dtype=torch.float32)
        x[:, :, -1, 1::2] = last
        res = [out, x]
        if z is not None:
            res.append((out.float() * torch.nn.functional.silu(z.float())).to(u.dtype))
        return res

    def bwd_impl(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z):
        _check_args(u, delta, A, B, C, D, delta_bias)
        assert z is None and out is None and dz is None and recompute_out_z is False
        assert x.shape[-1] == 2 * A.shape[1]
        calls.append(("bwd", u.shape[-1], dout.shape == u.shape))
        with torch.enable_grad():
            leaves = [None if X is None else X.detach().requires_grad_() for X in (u, delta, A, B, C, D, delta_bias)]
            lu, ldelta, lA, lB, lC, lD, lbias = leaves
            y = selective_scan_ref(lu, ldelta, lA, lB, lC, lD, None, lbias, delta_softplus)
            used = [X for X in leaves if X is not None]
            grads = iter(torch.autograd.grad(y, used, dout, allow_unused=True, materialize_grads=True))
        du, ddelta, dA, dB, dC = (next(grads) for _ in range(5))
        dD = next(grads) if D is not None else None
        dbias = next(grads) if delta_bias is not None else None
        return [du, ddelta, dA, dB, dC, dD, dbias]

    if with_cu_seqlens:  # newer mamba-ssm: one more required trailing argument

        def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cu_seqlens):
            assert cu_seqlens is None
            return fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

        def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z, cu_seqlens):
            assert cu_seqlens is None
            return bwd_impl(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z)

    else:
        fwd, bwd = fwd_impl, bwd_impl
    mod.fwd, mod.bwd = fwd, bwd
    return mod


@pytest.fixture(params=[False, True], ids=["mamba-ssm-1.x", "with-cu_seqlens"])
def fake_selective_scan_cuda(request, monkeypatch):
    """Install a fake ``selective_scan_cuda``; yields the list of kernel calls it recorded."""
    calls = []
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", _make_module(request.param, calls))
    monkeypatch.setattr(scan_cuda, "_extra_args", {})
    yield calls
