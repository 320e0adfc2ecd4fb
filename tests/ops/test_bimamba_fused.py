"""The fused GPU path of the mixer vs the reference: the Triton conv kernels, and the whole BiMamba as one autograd
node (``mamba.ops.bimamba_fused``) against the reference-loop mixer, values and every gradient.

Without a GPU the kernels run through Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported),
at small shapes with small scan tiles so that several chunks, channel blocks and conv tiles are crossed.
"""
import importlib
import os
import subprocess
import sys

import pytest
import torch
from triton_interp import HAS_CUDA, interpreted, interpreter_guards, runs_in_process, use_interpreter

use_interpreter()  # without CUDA: TRITON_INTERPRET=1 before the first `import triton`

import mamba.ops.bimamba_fused as bf  # noqa: E402
import mamba.ops.conv_triton as ct  # noqa: E402
import mamba.ops.scan_triton as st  # noqa: E402
from mamba.modules.bimamba import BiMamba  # noqa: E402
from mamba.ops.backend import set_scan_backend  # noqa: E402
from mamba.ops.causal_conv1d import causal_conv1d_ref  # noqa: E402

IN_PROCESS = runs_in_process()
if IN_PROCESS and not HAS_CUDA and not interpreted(ct._conv_fwd_kernel):
    st, ct = importlib.reload(st), importlib.reload(ct)  # imported earlier without the interpreter
    bf = importlib.reload(bf)

DEV = "cuda" if HAS_CUDA else "cpu"
SMALL = dict(block_d=8, chunk=8, num_warps=1)  # E=16 -> 2 channel blocks; l=21 -> 3 chunks


_needs_in_process, test_rerun_in_fresh_process = interpreter_guards(IN_PROCESS, __file__)


@pytest.fixture
def backend():
    yield set_scan_backend
    set_scan_backend(None)


# ---------------------------------------------------------------------------------------------------- the conv


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias,ndir", [(True, 2), (False, 2), (True, 1)])
def test_conv_kernels_match_reference(dtype, bias, ndir):
    """Both directions in one launch: outputs and every gradient equal causal_conv1d_ref's (+ autograd), across
    conv tiles (l = 300 > BLOCK_T) and channel blocks (E = 6, not a multiple of BLOCK_C)."""
    g = torch.Generator().manual_seed(ndir + 2 * bias)
    b, E, l, W = 2, 6, 300, 4
    x = torch.randn(b, E, l, generator=g, dtype=dtype).to(DEV).requires_grad_()
    ws = [torch.randn(E, W, generator=g, dtype=dtype).to(DEV).requires_grad_() for _ in range(ndir)]
    bs = [torch.randn(E, generator=g, dtype=dtype).to(DEV).requires_grad_() if bias else None for _ in range(ndir)]
    refs = [causal_conv1d_ref(x, ws[i], bs[i], "silu", reverse=i == 1) for i in range(ndir)]
    outs = ct.bi_conv_fwd(x.detach(), [w.detach() for w in ws], [v.detach() if bias else None for v in bs])
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, **tol)
    gs = [torch.randn(b, E, l, generator=g, dtype=dtype).to(DEV) for _ in range(ndir)]
    dx, dws, dbs = ct.bi_conv_bwd(x.detach(), [w.detach() for w in ws], [v.detach() if bias else None for v in bs],
                                  gs)
    leaves = [x, *ws] + (list(bs) if bias else [])
    want = torch.autograd.grad(sum((r * gg).sum() for r, gg in zip(refs, gs)), leaves)
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=5e-5, rtol=5e-5)
    torch.testing.assert_close(dx, want[0], **tol)
    for i in range(ndir):
        torch.testing.assert_close(dws[i].to(dtype), want[1 + i], **tol)
        if bias:
            torch.testing.assert_close(dbs[i].to(dtype), want[1 + ndir + i], **tol)
        else:
            assert dbs[i] is None


def test_conv_writes_strided_destinations_and_accumulates():
    """Outputs go where they are given (an (E, b, l) buffer seen as (b, E, l)); weight gradients add to the given
    buffers (the caller zeroes them once for the whole mixer)."""
    g = torch.Generator().manual_seed(5)
    b, E, l = 3, 5, 19
    x = torch.randn(b, E, l, generator=g).to(DEV)
    ws, bs = [torch.randn(E, 4, generator=g).to(DEV) for _ in range(2)], [torch.randn(E, generator=g).to(DEV)] * 2
    buf = torch.full((2, E, b, l), float("nan"), device=DEV)
    ct.bi_conv_fwd(x, ws, bs, out=(buf[0].permute(1, 0, 2), buf[1].permute(1, 0, 2)))
    for i in range(2):
        torch.testing.assert_close(buf[i].permute(1, 0, 2), causal_conv1d_ref(x, ws[i], bs[i], "silu", i == 1))
    gs = [torch.randn(b, E, l, generator=g).to(DEV) for _ in range(2)]
    _, once, _ = ct.bi_conv_bwd(x, ws, bs, gs)
    dws = [torch.ones(E, 4, device=DEV) for _ in range(2)]
    dbs = [torch.zeros(E, device=DEV) for _ in range(2)]
    ct.bi_conv_bwd(x, ws, bs, gs, dweights=dws, dbiases=dbs)
    for i in range(2):
        torch.testing.assert_close(dws[i], once[i] + 1)
    with pytest.raises(ValueError, match="dweights"):
        ct.bi_conv_bwd(x, ws, bs, gs, dweights=[torch.zeros(E, 4, dtype=torch.float64, device=DEV)] * 2)
    with pytest.raises(ValueError, match="bias"):
        ct.bi_conv_fwd(x, ws, [bs[0], None])


# ---------------------------------------------------------------------------------------------------- the mixer

MIXERS = {
    "videomambapro": dict(),
    "videomamba": dict(bwd_mask=False, residual_start="none"),
    "ablation": dict(gate=False, divide_out=True, mask_drops_D=True, residual_start="forward", conv_bias=False,
                     bias=True),
}


def _mixer(kw, dtype, seed=0):
    torch.manual_seed(seed)
    m = BiMamba(8, d_state=4, **kw).to(DEV, dtype)  # E = 16, R = 1
    with torch.no_grad():
        for p in m.parameters():  # off the init values (ones, zeros) so every gradient path is exercised
            p.add_(0.1 * torch.randn_like(p))
    return m


def _run(m, h, gout, backend, name, recompute, autocast=False):
    backend(name)
    m.recompute = recompute
    with torch.autocast(DEV, dtype=torch.bfloat16, enabled=autocast), st.triton_scan_config(**SMALL):
        out = m(h)
        names = ["h"] + [n for n, _ in m.named_parameters()]
        grads = torch.autograd.grad(out, [h, *m.parameters()], gout.to(out.dtype), allow_unused=True,
                                    materialize_grads=True)
    return out, dict(zip(names, grads))


@pytest.mark.parametrize("variant", list(MIXERS))
def test_fused_mixer_matches_reference(variant, backend):
    """fp64: the fused node's output and the gradients of the input and of every parameter equal the reference
    loop's (the reference rounds A, D and the dt bias to fp32, hence 1e-6 and not 1e-12)."""
    m = _mixer(MIXERS[variant], torch.float64, seed=len(variant))
    h = torch.randn(2, 21, 8, dtype=torch.float64, device=DEV, requires_grad=True)
    gout = torch.randn(2, 21, 8, dtype=torch.float64, device=DEV)
    ref, gref = _run(m, h, gout, backend, "reference", "none")
    backend("triton")
    assert not m.uses_fused(DEV)  # 'none' keeps every intermediate: not the fused node
    m.recompute = "inner"
    assert m.uses_fused(DEV)
    out, got = _run(m, h, gout, backend, "triton", "inner")
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_BiMambaFnBackward"
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    for k, v in gref.items():
        scale = max(v.abs().max().item(), 1e-3)
        assert (got[k] - v).abs().max().item() <= 1e-6 * scale, k


def test_fused_mixer_all_recompute_and_inference(backend):
    """'all' (the node keeps only h and recomputes in_proj and x_proj too) gives the same gradients bitwise; in
    inference the fused node runs whatever the recompute mode."""
    m = _mixer({}, torch.float32, seed=3)
    h = torch.randn(1, 13, 8, device=DEV, requires_grad=True)
    gout = torch.randn(1, 13, 8, device=DEV)
    out_i, g_i = _run(m, h, gout, backend, "triton", "inner")
    out_a, g_a = _run(m, h, gout, backend, "triton", "all")
    assert torch.equal(out_i, out_a)
    for k in g_i:
        assert torch.equal(g_i[k], g_a[k]), k
    m.recompute = "none"
    with torch.no_grad():
        assert m.uses_fused(DEV)
        with st.triton_scan_config(**SMALL):
            assert torch.equal(m(h), out_i)


def test_fused_mixer_bf16_autocast(backend):
    """Under bf16 autocast (the training setting) the fused node stays within bf16 rounding of the reference path
    under the same autocast; parameter gradients come back in fp32."""
    m = _mixer({}, torch.float32, seed=4)
    h = torch.randn(2, 21, 8, device=DEV, requires_grad=True)
    gout = torch.randn(2, 21, 8, device=DEV)
    ref, gref = _run(m, h, gout, backend, "reference", "none", autocast=True)
    out, got = _run(m, h, gout, backend, "triton", "inner", autocast=True)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=5e-2, rtol=5e-2)
    for k, v in gref.items():
        assert got[k].dtype == v.dtype, k
        scale = max(v.abs().max().item(), 1e-2)
        assert (got[k].float() - v.float()).abs().max().item() <= 5e-2 * scale, k


def _saved_bytes(m, h, autocast=False):
    """Bytes of the storages the mixer's forward saves for backward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with st.triton_scan_config(**SMALL), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast(DEV, dtype=torch.bfloat16, enabled=autocast):
        m(h)
    return sum(seen.values())


def test_fused_mixer_saves_only_inputs_xz_dbc_and_states(backend):
    """What the fused node keeps for backward besides the parameters: h, the in_proj output, both x_proj outputs
    (in the compute dtype: 2 bytes each under bf16 autocast, though h is float32), the float32 chunk-boundary
    states and the weights as the GEMMs read them; far less than the torch path keeping every intermediate
    ('none')."""
    m = _mixer({}, torch.float32, seed=5)
    b, l, d = 2, 21, 8
    E, K = 16, 1 + 2 * 4
    h = torch.randn(b, l, d, device=DEV, requires_grad=True)
    sizes = {}
    for name, recompute in (("triton", "inner"), ("torch", "none")):
        backend(name)
        m.recompute = recompute
        sizes[name] = _saved_bytes(m, h)
    backend("triton")
    m.recompute = "inner"
    sizes["triton_bf16"] = _saved_bytes(m, h, autocast=True)
    m.recompute = "all"  # inside the node: h and the chunk states only
    sizes["triton_all"] = _saved_bytes(m, h)
    nchunk = -(-l // SMALL["chunk"])
    states = 4 * 2 * b * E * nchunk * 4
    weights = 2 * E * d + 2 * K * E + d * E  # plus the GEMM weights in the compute dtype (one buffer, not per token)
    assert sizes["triton"] == 4 * b * l * (d + 2 * E + 2 * K) + states + 4 * weights, sizes
    assert sizes["triton_bf16"] == 2 * b * l * (d + 2 * E + 2 * K) + states + 2 * weights, sizes
    assert sizes["triton_all"] == 4 * b * l * d + states + 4 * weights, sizes
    assert sizes["triton"] < sizes["torch"] / 2, sizes


def test_fused_mixer_gradients_hold_no_activation_sized_storage(backend):
    """The parameter gradients come back as views of one parameter-sized buffer: no gradient keeps the x_proj
    output gradient (activation-sized) or anything else of the step alive."""
    backend("triton")
    m = _mixer({}, torch.float32, seed=6)
    h = torch.randn(2, 21, 8, device=DEV, requires_grad=True)
    with st.triton_scan_config(**SMALL):
        m(h).square().sum().backward()
    n_params = sum(p.numel() for p in m.parameters())
    storages = {p.grad.untyped_storage().data_ptr(): p.grad.untyped_storage().nbytes() for p in m.parameters()}
    assert sum(storages.values()) <= 4 * n_params, (sum(storages.values()), 4 * n_params)
    assert all(p.grad.dtype == p.dtype and p.grad.shape == p.shape for p in m.parameters())


def test_triton_conv_on_cpu_without_the_interpreter_says_how_to_run():
    """On CPU tensors without TRITON_INTERPRET=1 the conv refuses with the fix instead of a Triton error."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import torch\nfrom mamba.ops.conv_triton import bi_conv_fwd\n"
            "bi_conv_fwd(torch.randn(1, 2, 5), [torch.randn(2, 4)], [None])\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "TRITON_INTERPRET=1" in r.stderr and "got tensors on cpu" in r.stderr, r.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("autocast", [False, True])
def test_full_size_fused_block_on_gpu(autocast, backend):
    """A VideoMambaPro-Ti block at 16 frames (d=192, l=1+196*16, batch 2) on the GPU path with the default tiles:
    fused add + RMSNorm and the fused mixer vs the reference loop (torch norm), fp32 and bf16 autocast."""
    from models.videomambapro import Block

    torch.manual_seed(0)
    blk = Block(192, mixer_kwargs=dict(bwd_mask=True, residual_start="both")).to(DEV)
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 1 + 196 * 16, 192, device=DEV, requires_grad=True)
    res = torch.randn(2, 1 + 196 * 16, 192, device=DEV, requires_grad=True)
    gout, gres = torch.randn_like(x), torch.randn_like(x)
    results = {}
    for name, recompute in (("reference", "none"), ("triton", "inner")):
        backend(name)
        blk.mixer.recompute = recompute
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out, r = blk(x, res)
        leaves = [x, res, *blk.parameters()]
        grads = torch.autograd.grad([out, r], leaves, [gout.to(out.dtype), gres], allow_unused=True,
                                    materialize_grads=True)
        results[name] = (out.float(), r.float(), [g.float() for g in grads])
    tol = 5e-2 if autocast else 1e-3
    (o1, r1, g1), (o2, r2, g2) = results["reference"], results["triton"]
    torch.testing.assert_close(r2, r1, atol=1e-5, rtol=1e-5)
    assert (o2 - o1).abs().max() <= tol * o1.abs().max().clamp_min(1.0)
    for i, (a, b) in enumerate(zip(g2, g1)):
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0), i
