"""The whole bidirectional mixer as one autograd Function on the Triton kernels (cf. mamba_ssm's MambaInnerFn).

``bimamba_fused_fn(h, weights, ...)`` computes, for ``h (b, l, d)``, exactly what ``BiMamba`` computes on the
reference path (in_proj, both directions' causal conv + SiLU, x_proj, the fused delta projection and scan with the
VideoMambaPro options, the gate, out_proj), in this many kernels per training step:

* forward: one cast of every GEMM weight into one buffer (1), in_proj (1 GEMM), both convs (1 launch), both
  x_proj as one batched GEMM (1), the scan of both directions (1 launch), out_proj (1 GEMM);
* backward: the convs again (1 launch), out_proj's input gradient (1 GEMM), two zero fills (the x_proj output
  gradient, which the scan accumulates, and one buffer for every parameter gradient), the scan backward (1 launch:
  it recomputes the states from the saved chunk-boundary states and writes the forward output again for out_proj's
  weight gradient), out_proj's weight gradient (1 GEMM), one cast of the x_proj output gradient, x_proj's weight
  and input gradients (2 batched GEMMs), the conv backward (1 launch: it recomputes the pre-activations), in_proj's
  weight and input gradients (2 GEMMs) and, under autocast, one cast of the three GEMM weight gradients (1).

It saves ``h`` in the compute dtype (the in_proj input as the GEMM read it: bf16 under bf16 autocast, though the
residual stream is float32), the in_proj output ``xz``, the x_proj outputs and the chunk-boundary states (about
``d + 2 E + 2 (R + 2 N)`` values per token), and the weights in the compute dtype (parameter-sized); conv
outputs, delta, u and y are recomputed in the backward. With ``keep="input"`` (``--mixer_recompute all``) it saves
only ``h`` and the chunk states (``d`` values per token) and the backward runs in_proj and x_proj again (2 GEMMs):
no second forward scan, unlike a checkpoint around the node. The parameter gradients are views of one buffer of their
own (nothing activation-sized stays alive with them).

Every ``(channels, tokens)`` intermediate lives in an ``(C, b, l)`` buffer seen by the kernels as ``(b, C, l)``
(unit stride along time, so their loads coalesce) and by the GEMMs as one ``(C, b * l)`` matrix: no transposed
copy anywhere between the GEMMs. Under autocast the GEMMs run in the autocast dtype (the conv and the scan compute
in float32 from it, as on the other paths). Weight gradients are returned in the parameters' dtypes.
"""
from __future__ import annotations

import torch

from .conv_triton import bi_conv_bwd, bi_conv_fwd
from .scan_triton import bi_scan_bwd, bi_scan_fwd

__all__ = ["bimamba_fused_fn", "FUSED_WEIGHTS"]

# the weights, in the order bimamba_fused_fn takes them (BiMamba's parameter names; conv weights as (E, W))
FUSED_WEIGHTS = ("in_proj.weight", "in_proj.bias", "conv1d.weight", "conv1d.bias", "conv1d_b.weight",
                 "conv1d_b.bias", "x_proj.weight", "x_proj_b.weight", "dt_proj.weight", "dt_proj.bias",
                 "dt_proj_b.weight", "dt_proj_b.bias", "A_log", "A_b_log", "D", "D_b", "out_proj.weight",
                 "out_proj.bias")


def _compute_dtype(h):
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return h.dtype


def _mm(a, b, bias=None):
    return torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)


def _bview(X):
    """An ``(C, b, l)`` buffer as the kernels' ``(b, C, l)`` (a view)."""
    return X.permute(1, 0, 2)


def _weight_views(wc, E, K, d):
    """in_proj (2E, d), both x_proj stacked (2, K, E) and out_proj (d, E) weights of the flat cast buffer."""
    a, b = 2 * E * d, 2 * E * d + 2 * K * E
    return wc[:a].view(2 * E, d), wc[a:b].view(2, K, E), wc[b:].view(d, E)


class _BiMambaFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, cfg, h, in_w, in_b, cw0, cb0, cw1, cb1, xw0, xw1, dtw0, dtb0, dtw1, dtb1, alog0, alog1,
                D0, D1, out_w, out_b):
        cd = _compute_dtype(h)
        b, l, d = h.shape
        E, N, R = cfg["E"], cfg["N"], cfg["R"]
        K = R + 2 * N
        with torch.autocast(h.device.type, enabled=False):
            hf = h.reshape(b * l, d).to(cd)
            # every GEMM weight in the compute dtype, cast in one op (x_proj's two stacked for one batched GEMM)
            wc = torch.cat([w.reshape(-1) for w in (in_w, xw0, xw1, out_w)],
                           out=torch.empty(2 * E * d + 2 * K * E + d * E, device=h.device, dtype=cd))
            in_wc, xwc, out_wc = _weight_views(wc, E, K, d)
            xz = _mm(in_wc, hf.t(), None if in_b is None else in_b.to(cd)[:, None]).view(2 * E, b, l)
            u, dbc = _BiMambaFn._inner_fwd(cfg, xz, (cw0, cw1), (cb0, cb1), xwc, b, l)
            y = torch.empty(E, b, l, device=h.device, dtype=cd)
            _, states = bi_scan_fwd(**_BiMambaFn._scan_args(cfg, xz, u, dbc, (dtw0, dtw1), (dtb0, dtb1),
                                                            (alog0, alog1), (D0, D1)), out=_bview(y), save_states=True)
            out = _mm(y.view(E, b * l).t(), out_wc.t(), None if out_b is None else out_b.to(cd)).view(b, l, d)
        ctx.cfg, ctx.cd, ctx.shape, ctx.h_dtype = cfg, cd, (b, l, d), h.dtype
        ctx.has_in_b, ctx.has_out_b, ctx.has_cb = in_b is not None, out_b is not None, cb0 is not None
        # the weights in the compute dtype are kept (parameter-sized, not per token): the backward casts none again
        lean = cfg["keep"] == "input"
        ctx.save_for_backward(hf, None if lean else xz, None if lean else dbc, states, wc, in_b, in_w, cw0, cb0, cw1,
                              cb1, xw0, xw1, dtw0,
                              dtb0, dtw1, dtb1, alog0, alog1, D0, D1, out_w)
        return out

    @staticmethod
    def _inner_fwd(cfg, xz, cws, cbs, xwc, b, l):
        """Both convs into an (2, E, b, l) buffer, then both x_proj (one batched GEMM) into (2, R + 2N, b, l)."""
        E, N, R = cfg["E"], cfg["N"], cfg["R"]
        u = torch.empty(2, E, b, l, device=xz.device, dtype=xz.dtype)
        bi_conv_fwd(_bview(xz[:E]), [w.reshape(E, -1) for w in cws], cbs, out=(_bview(u[0]), _bview(u[1])))
        dbc = torch.empty(2, R + 2 * N, b, l, device=xz.device, dtype=xz.dtype)
        torch.bmm(xwc, u.view(2, E, b * l), out=dbc.view(2, R + 2 * N, b * l))
        return u, dbc

    @staticmethod
    def _scan_args(cfg, xz, u, dbc, dtws, dtbs, alogs, Ds):
        E, N, R = cfg["E"], cfg["N"], cfg["R"]
        return dict(
            u=[_bview(u[0]), _bview(u[1])], dt=[_bview(dbc[i, :R]) for i in range(2)], A=list(alogs),
            B=[_bview(dbc[i, R:R + N]) for i in range(2)], C=[_bview(dbc[i, R + N:]) for i in range(2)],
            D=list(Ds), dt_bias=list(dtbs), z=_bview(xz[E:]) if cfg["gate"] else None, W_dt=list(dtws), a_log=True,
            softplus=True, residual=cfg["residual"], masked=cfg["masked"], drop_D=cfg["drop_D"], scale=cfg["scale"])

    @staticmethod
    def backward(ctx, dout):
        cfg, cd, (b, l, d) = ctx.cfg, ctx.cd, ctx.shape
        E, N, R = cfg["E"], cfg["N"], cfg["R"]
        (hf, xz, dbc, states, wc, in_b, in_w, cw0, cb0, cw1, cb1, xw0, xw1, dtw0, dtb0, dtw1, dtb1,
         alog0, alog1, D0, D1, out_w) = ctx.saved_tensors
        dev = hf.device
        W = cw0.shape[-1]
        K = R + 2 * N
        in_wc, xwc, out_wc = _weight_views(wc, E, K, d)
        acc_dtype = torch.float64 if cd == torch.float64 else torch.float32
        with torch.autocast(dev.type, enabled=False):
            if xz is None:  # keep="input": in_proj again
                xz = _mm(in_wc, hf.t(), None if in_b is None else in_b.to(cd)[:, None]).view(2 * E, b, l)
            u = torch.empty(2, E, b, l, device=dev, dtype=cd)
            cws = [cw0.reshape(E, W), cw1.reshape(E, W)]
            bi_conv_fwd(_bview(xz[:E]), cws, (cb0, cb1), out=(_bview(u[0]), _bview(u[1])))
            if dbc is None:  # and x_proj
                dbc = torch.empty(2, K, b, l, device=dev, dtype=cd)
                torch.bmm(xwc, u.view(2, E, b * l), out=dbc.view(2, K, b * l))
            dout_f = dout.reshape(b * l, d).to(cd)
            dy = torch.mm(out_wc.t(), dout_f.t()).view(E, b, l)
            # the x_proj output gradient (accumulated by the scan: dB, dC over channel blocks) and every parameter
            # gradient in two zeroed buffers; the parameter one is returned as views (parameter-sized, kept)
            ddbc = torch.zeros(2, K, b, l, device=dev, dtype=acc_dtype)
            gemm_sizes = [2 * E * d, 2 * K * E, d * E]
            sizes = gemm_sizes + [2 * E * N, 2 * E, 2 * E, 2 * E * R, 2 * E * W, 2 * E,
                                  2 * E if ctx.has_in_b else 0, d if ctx.has_out_b else 0]
            gbuf = torch.zeros(sum(sizes), device=dev, dtype=acc_dtype)
            g_in_w, g_xw, g_out_w, dA, dD, ddtb, dWdt, dcw, dcb, d_in_b, d_out_b = torch.split(gbuf, sizes)
            dA, dD, ddtb = dA.view(2, E, N), dD.view(2, E), ddtb.view(2, E)
            dWdt, dcw, dcb = dWdt.view(2, E, R), dcw.view(2, E, W), dcb.view(2, E)
            # the GEMM weight gradients, computed in the compute dtype, land in one buffer: one cast for all three
            gemm = gbuf[:sum(gemm_sizes)] if cd == acc_dtype else torch.empty(sum(gemm_sizes), device=dev, dtype=cd)
            c_in_w, c_xw, c_out_w = torch.split(gemm, gemm_sizes)
            du = torch.empty(2, E, b, l, device=dev, dtype=cd)
            dxz = torch.empty(2 * E, b, l, device=dev, dtype=cd)
            if not cfg["gate"]:
                dxz[E:].zero_()
            yz = torch.empty(E, b, l, device=dev, dtype=cd)
            bi_scan_bwd(**_BiMambaFn._scan_args(cfg, xz, u, dbc, (dtw0, dtw1), (dtb0, dtb1), (alog0, alog1),
                                                (D0, D1)), dout=_bview(dy), states=states, want_out_z=True,
                        du=[_bview(du[0]), _bview(du[1])], ddt=[_bview(ddbc[i, :R]) for i in range(2)],
                        dB=[_bview(ddbc[i, R:R + N]) for i in range(2)],
                        dC=[_bview(ddbc[i, R + N:]) for i in range(2)], dA=[dA[0], dA[1]], dD=[dD[0], dD[1]],
                        ddt_bias=[ddtb[0], ddtb[1]], dW_dt=[dWdt[0], dWdt[1]],
                        dz=_bview(dxz[E:]) if cfg["gate"] else None, out_z=_bview(yz))
            torch.mm(dout_f.t(), yz.view(E, b * l).t(), out=c_out_w.view(d, E))
            if ctx.has_out_b:
                torch.sum(dout_f, 0, dtype=acc_dtype, out=d_out_b)
            ddbc_c = ddbc.to(cd).view(2, K, b * l)
            u2 = u.view(2, E, b * l)
            torch.bmm(ddbc_c, u2.transpose(1, 2), out=c_xw.view(2, K, E))
            du.view(2, E, b * l).baddbmm_(xwc.transpose(1, 2), ddbc_c)
            bi_conv_bwd(_bview(xz[:E]), cws, (cb0, cb1), (_bview(du[0]), _bview(du[1])), dx=_bview(dxz[:E]),
                        dweights=(dcw[0], dcw[1]), dbiases=(dcb[0], dcb[1]) if ctx.has_cb else None)
            dxz_f = dxz.view(2 * E, b * l)
            torch.mm(dxz_f, hf, out=c_in_w.view(2 * E, d))
            dh = torch.mm(dxz_f.t(), in_wc).view(b, l, d)
            if ctx.has_in_b:
                torch.sum(dxz_f, 1, dtype=acc_dtype, out=d_in_b)
            if gemm.data_ptr() != gbuf.data_ptr():
                gbuf[:sum(gemm_sizes)].copy_(gemm)

        def g(x, like):
            if like is None:
                return None
            x = x.view(like.shape)
            return x if x.dtype == like.dtype else x.to(like.dtype)

        gx = g_xw.view(2, K, E)
        return (None, dh.to(ctx.h_dtype), g(g_in_w, in_w), g(d_in_b, in_w[:, 0]) if ctx.has_in_b else None,
                g(dcw[0], cw0), g(dcb[0], cb0) if ctx.has_cb else None, g(dcw[1], cw1),
                g(dcb[1], cb1) if ctx.has_cb else None, g(gx[0], xw0), g(gx[1], xw1), g(dWdt[0], dtw0),
                g(ddtb[0], dtb0), g(dWdt[1], dtw1), g(ddtb[1], dtb1), g(dA[0], alog0), g(dA[1], alog1),
                g(dD[0], D0), g(dD[1], D1), g(g_out_w, out_w), g(d_out_b, out_w[:, 0]) if ctx.has_out_b else None)


def bimamba_fused_fn(h, weights, *, d_state, dt_rank, gate=True, residual=(True, True), masked=(False, True),
                     drop_D=False, scale=1.0, keep="inner"):
    """The bimamba mixer ``(b, l, d) -> (b, l, d)`` as one autograd node on the Triton kernels.

    ``weights``: a mapping with the ``FUSED_WEIGHTS`` names (BiMamba's parameters; the biases may be None);
    ``residual`` / ``masked``: per-direction flags; ``scale``: 0.5 to average the directions (Vim's divide-out);
    ``keep``: ``inner`` saves h, the in_proj and x_proj outputs and the chunk states; ``input`` (``--mixer_recompute
    all``) saves only h and the chunk states and recomputes in_proj and x_proj too (two more GEMMs in the backward).
    """
    if keep not in ("inner", "input"):
        raise ValueError(f"keep must be 'inner' or 'input', got {keep!r}")
    if h.dim() != 3:
        raise ValueError(f"h must be (b, l, d), got {tuple(h.shape)}")
    E = weights["in_proj.weight"].shape[0] // 2
    cfg = dict(E=E, N=int(d_state), R=int(dt_rank), gate=bool(gate), residual=tuple(bool(x) for x in residual),
               masked=tuple(bool(x) for x in masked), drop_D=bool(drop_D), scale=float(scale), keep=keep)
    return _BiMambaFn.apply(cfg, h, *(weights[k] for k in FUSED_WEIGHTS))
