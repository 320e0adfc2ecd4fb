"""BiMamba mixer: names/shapes/init, equality with an independent flip-based composition, symmetry."""
import math

import pytest
import torch
import torch.nn.functional as F

from mamba.modules import BiMamba
from mamba.ops import selective_scan_ref, set_scan_backend


@pytest.fixture(autouse=True)
def _reference_backend():
    set_scan_backend("reference")  # tiny shapes: the plain loop is fast enough and is the spec
    yield
    set_scan_backend(None)


def _mixer(d=16, seed=0, **kw):
    torch.manual_seed(seed)
    m = BiMamba(d, **kw).double()
    with torch.no_grad():  # make the conv biases and D non-trivial so every term is exercised
        for p in (m.conv1d.bias, m.conv1d_b.bias, m.D, m.D_b):
            p.add_(0.3 * torch.randn_like(p))
    return m


def videomamba_v2_reference(m, X):
    """VideoMamba's bimamba v2 mixer written plainly: the backward branch flips the sequence, runs
    nn.Conv1d + SiLU and a plain (unmasked, zero-start) selective scan, then flips back."""
    E, N, R = m.d_inner, m.d_state, m.dt_rank
    L = X.shape[1]
    xz = (X @ m.in_proj.weight.t()).transpose(1, 2)
    x, z = xz[:, :E], xz[:, E:]

    def branch(xx, conv, x_proj, dt_proj, A_log, D):
        u = F.silu(conv(xx)[..., :L])
        dbc = u.transpose(1, 2) @ x_proj.weight.t()
        dt, B, C = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
        delta = F.softplus(dt @ dt_proj.weight.t() + dt_proj.bias).transpose(1, 2)
        return selective_scan_ref(u, delta, -torch.exp(A_log), B.transpose(1, 2), C.transpose(1, 2), D)

    y_f = branch(x, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    y_b = branch(x.flip(-1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b).flip(-1)
    y = (y_f + y_b) * F.silu(z)
    return y.transpose(1, 2) @ m.out_proj.weight.t()


def test_parameter_names_shapes_and_init():
    d = 40
    m = BiMamba(d)
    E, N, R = 80, 16, math.ceil(d / 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "A_log": (E, N), "D": (E,), "A_b_log": (E, N), "D_b": (E,), "in_proj.weight": (2 * E, d),
        "conv1d.weight": (E, 1, 4), "conv1d.bias": (E,), "x_proj.weight": (R + 2 * N, E),
        "dt_proj.weight": (E, R), "dt_proj.bias": (E,), "conv1d_b.weight": (E, 1, 4), "conv1d_b.bias": (E,),
        "x_proj_b.weight": (R + 2 * N, E), "dt_proj_b.weight": (E, R), "dt_proj_b.bias": (E,),
        "out_proj.weight": (d, E),
    }
    expected_A = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N)
    for name in ("A_log", "A_b_log"):
        assert torch.equal(getattr(m, name).data, expected_A)
    assert torch.all(m.D == 1) and torch.all(m.D_b == 1)
    for name in ("A_log", "D", "A_b_log", "D_b"):
        assert getattr(getattr(m, name), "_no_weight_decay", False)
    for proj in (m.dt_proj, m.dt_proj_b):
        dt = F.softplus(proj.bias)
        assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6 and dt.std() > 0
        assert proj.bias._no_reinit and proj.weight._no_reinit
        assert proj.weight.abs().max() <= R ** -0.5
    assert not torch.equal(m.dt_proj.bias, m.dt_proj_b.bias)  # directions drawn independently


def test_plain_options_equal_videomamba_reference():
    m = _mixer(bwd_mask=False, residual_start="none")
    X = torch.randn(2, 9, 16, dtype=torch.float64)
    torch.testing.assert_close(m(X), videomamba_v2_reference(m, X))


@pytest.mark.parametrize("residual_start", ["none", "both", "forward"])
def test_reverse_symmetry_with_swapped_parameters(residual_start):
    """What holds: mixer(flip X; forward params = P, backward params = Q, residual (rf, rb)) ==
    flip(mixer(X; forward params = Q, backward params = P, residual (rb, rf))) when both directions are
    unmasked. (The backward mask has no forward counterpart, so it breaks this symmetry - tested below.)"""
    swapped = {"none": "none", "both": "both", "forward": "backward"}[residual_start]
    m = _mixer(bwd_mask=False, residual_start=residual_start)
    s = _mixer(bwd_mask=False, residual_start=swapped)
    sd = m.state_dict()
    swap = {}
    for k, v in sd.items():
        if k in ("A_log", "D"):
            swap[k.replace("A_log", "A_b_log") if k == "A_log" else "D_b"] = v
        elif k in ("A_b_log", "D_b"):
            swap["A_log" if k == "A_b_log" else "D"] = v
        elif k.split(".")[0] in ("conv1d", "x_proj", "dt_proj"):
            swap[k.replace(k.split(".")[0], k.split(".")[0] + "_b", 1)] = v
        elif k.split(".")[0] in ("conv1d_b", "x_proj_b", "dt_proj_b"):
            swap[k.replace("_b.", ".", 1)] = v
        else:
            swap[k] = v
    s.load_state_dict(swap)
    X = torch.randn(2, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(s(X.flip(1)), m(X).flip(1))
    # sanity: without swapping the parameter sets the symmetry does not hold
    assert not torch.allclose(m(X.flip(1)), m(X).flip(1), atol=1e-6)

    pro = _mixer(bwd_mask=True, residual_start=residual_start)
    pro.load_state_dict(sd)
    pro_s = _mixer(bwd_mask=True, residual_start=swapped)
    pro_s.load_state_dict(swap)
    assert not torch.allclose(pro_s(X.flip(1)), pro(X).flip(1), atol=1e-6)


def test_each_option_changes_output():
    X = torch.randn(2, 7, 16, dtype=torch.float64)
    base = _mixer()
    ref = base(X)
    sd = base.state_dict()
    for kw in [dict(bwd_mask=False), dict(residual_start="none"), dict(residual_start="forward"),
               dict(residual_start="backward"), dict(mask_drops_D=True), dict(gate=False), dict(divide_out=True)]:
        m = _mixer(**kw)
        m.load_state_dict(sd)
        assert not torch.allclose(m(X), ref, atol=1e-6), kw


def test_gradients_reach_every_parameter():
    m = _mixer(d=8)
    X = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    m(X).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert X.grad.abs().sum() > 0


def test_bad_options_and_input():
    with pytest.raises(ValueError, match="residual_start"):
        BiMamba(8, residual_start="first")
    with pytest.raises(ValueError, match="expects"):
        BiMamba(8)(torch.randn(2, 3, 9))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kw", [{}, dict(bwd_mask=False, residual_start="forward"), dict(gate=False)])
def test_recompute_modes_keep_values_and_gradients_and_keep_less(dtype, kw):
    """--mixer_recompute inner / all: the same outputs and gradients as keeping everything (bitwise: the recompute
    runs the same kernels on the same inputs), with a fraction of the bytes saved for backward."""
    m = _mixer(d=16, **kw)
    X = torch.randn(2, 37, 16, dtype=torch.float64)
    if dtype == torch.bfloat16:
        m, X = m.float(), X.float()
    results = {}
    for mode in ("none", "inner", "all"):
        m.recompute = mode
        m.zero_grad()
        x = X.clone().requires_grad_()
        saved = {}

        def pack(t, saved=saved):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.autocast(
            "cpu", enabled=False)
        with cast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = m(x)
        y.float().square().sum().backward()
        params = sum(p.numel() * p.element_size() for p in m.parameters())
        results[mode] = (y.detach(), x.grad, {n: p.grad.clone() for n, p in m.named_parameters()},
                         sum(saved.values()) - params)
    y0, gx0, gp0, s0 = results["none"]
    for mode in ("inner", "all"):
        y, gx, gp, s = results[mode]
        assert torch.equal(y, y0) and torch.equal(gx, gx0), mode
        assert all(torch.equal(gp[n], gp0[n]) for n in gp0), mode
        assert s < s0 / 3, (mode, s, s0)
    assert results["all"][3] < results["inner"][3]
    m.recompute = "most"
    with pytest.raises(ValueError, match="recompute"):
        m(X)


def test_mixer_backend_is_its_own(monkeypatch):
    """``BiMamba(scan_backend=...)``: the scan runs on the mixer's backend whatever the global switch says (here
    'reference'); None follows the switch; an unknown name fails at build time."""
    from mamba.ops import backend as backend_mod
    from mamba.ops import selective_scan as ss

    seen = []
    real = backend_mod.resolve_backend

    def spy(device_type, requested=None):
        name = real(device_type, requested)
        seen.append(name)
        return name

    monkeypatch.setattr(ss, "resolve_backend", spy)
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    ref = _mixer()(x)
    torch.testing.assert_close(_mixer(scan_backend="torch")(x), ref)
    assert seen == ["reference", "torch"]
    assert _mixer(scan_backend="torch").scan_backend == "torch" and _mixer().scan_backend is None
    with pytest.raises(ValueError, match="unknown scan backend"):
        BiMamba(16, scan_backend="fastest")
