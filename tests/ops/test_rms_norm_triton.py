"""The Triton add + RMSNorm (``mamba.ops.rms_norm_triton``) against the torch node of ``mamba.ops.rms_norm``: values
and every gradient (x, the residual stream, the weight), with and without a residual, bf16 input on a float32
residual stream as a block runs it, widths that are not powers of two and row counts that cross programs.

Without a GPU the kernels run through Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported).
"""
import importlib

import pytest
import torch
from triton_interp import HAS_CUDA, interpreted, interpreter_guards, runs_in_process, use_interpreter

use_interpreter()  # without CUDA: TRITON_INTERPRET=1 before the first `import triton`

import mamba.ops.rms_norm_triton as nt  # noqa: E402
from mamba.ops import rms_norm  # noqa: E402
from mamba.ops.backend import set_scan_backend  # noqa: E402

IN_PROCESS = runs_in_process()
if IN_PROCESS and not HAS_CUDA and not interpreted(nt._norm_fwd_kernel):
    nt = importlib.reload(nt)  # imported earlier without the interpreter

DEV = "cuda" if HAS_CUDA else "cpu"


_needs_in_process, test_rerun_in_fresh_process = interpreter_guards(IN_PROCESS, __file__)


def _run(fn, x, res, w, gout, gr, ct):
    x = x.clone().requires_grad_()
    res = res.clone().requires_grad_() if res is not None else None
    w = w.clone().requires_grad_()
    out, r = fn.apply(x, res, w, 1e-5, ct)
    torch.autograd.backward([out, r] if gr is not None else [out], [gout, gr] if gr is not None else [gout])
    return out, r, x.grad, None if res is None else res.grad, w.grad


@pytest.mark.parametrize("dtype,res_dtype,d,rows,with_res,with_gr", [
    (torch.float64, torch.float64, 24, 37, True, True),
    (torch.float64, torch.float64, 24, 37, False, False),
    (torch.float32, torch.float32, 192, 9, True, True),
    (torch.bfloat16, torch.float32, 40, 23, True, True),
])
def test_triton_norm_matches_torch_node(dtype, res_dtype, d, rows, with_res, with_gr, monkeypatch):
    """Rows split over several backward programs (NORM_BWD_PROGRAMS lowered) and several rows per program."""
    monkeypatch.setattr(nt, "NORM_BWD_PROGRAMS", 3)
    g = torch.Generator().manual_seed(d + rows)
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.randn(2, rows, d, generator=g).to(dtype).to(DEV)
    res = torch.randn(2, rows, d, generator=g).to(res_dtype).to(DEV) if with_res else None
    w = (1 + 0.1 * torch.randn(d, generator=g)).to(ct).to(DEV)
    gout = torch.randn(2, rows, d, generator=g).to(dtype).to(DEV)
    gr = torch.randn(2, rows, d, generator=g).to(ct).to(DEV) if with_gr else None
    ref = _run(rms_norm._AddRMSNorm, x, res, w, gout, gr, ct)
    got = _run(nt.AddRMSNormTriton, x, res, w, gout, gr, ct)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for name, a, b in zip(("out", "r", "dx", "dres", "dw"), got, ref):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        scale = max(b.abs().max().item(), 1e-3)
        assert (a.double() - b.double()).abs().max().item() <= tol * scale, name


def test_rms_norm_fn_takes_the_triton_kernels_with_the_triton_backend():
    """prenorm, residual_in_fp32 on and off: rms_norm_fn's autograd node is the Triton one under the triton backend
    and the torch one otherwise, with the same values."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g).to(DEV).requires_grad_()
    res = torch.randn(3, 5, 16, generator=g).to(DEV)
    w = torch.rand(16, generator=g).to(DEV) + 0.5
    outs = {}
    try:
        for name in ("torch", "triton"):
            set_scan_backend(name)
            out, r = rms_norm.rms_norm_fn(x, w, residual=res, prenorm=True)
            outs[name] = (out, r, type(out.grad_fn).__name__)
            out2, r2 = rms_norm.rms_norm_fn(x, w, residual=res, prenorm=True, residual_in_fp32=False)
            assert r2.dtype == x.dtype
    finally:
        set_scan_backend(None)
    assert outs["torch"][2] == "_AddRMSNormBackward" and outs["triton"][2] == "AddRMSNormTritonBackward"
    torch.testing.assert_close(outs["triton"][0], outs["torch"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["triton"][1], outs["torch"][1], atol=0, rtol=0)


def test_backward_programs_are_capped_and_cover_every_row():
    for M, bm in ((1, 4), (37, 4), (100_360, 4), (4096, 1)):
        progs, per = nt._bwd_split(M, bm)
        assert progs <= nt.NORM_BWD_PROGRAMS and per % bm == 0
        assert progs * per >= M and (progs - 1) * per < M, (M, progs, per)
