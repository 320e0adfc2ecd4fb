"""The bidirectional Mamba mixer (VideoMamba "v2" layout) with the VideoMambaPro options.

Parameter names and shapes match released VideoMamba checkpoints (METHOD.md section 1):
``in_proj.weight (2E, d)``, ``conv1d.{weight (E,1,w), bias}``, ``x_proj.weight (R+2N, E)``,
``dt_proj.{weight (E, R), bias}``, ``A_log (E, N)``, ``D (E,)``, the same with ``_b`` for the
backward direction, and ``out_proj.weight (d, E)``. The VideoMambaPro changes add no parameters.

Both directions are computed in natural token order. The backward direction's conv is the
anti-causal (``reverse=True``) conv, equal to ``flip(conv1d_b(flip(x)))``; its scan runs from the last
token to the first inside :func:`mamba.ops.bi_selective_scan_fn`, which receives both directions
in one call (so a fused backend can run them together).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..ops.backend import resolve_backend, scan_backend_scope, validate_backend
from ..ops.causal_conv1d import causal_conv1d_fn
from ..ops.selective_scan import bi_selective_scan_fn

__all__ = ["BiMamba", "RESIDUAL_START", "RECOMPUTE"]

# What the mixer recomputes in the backward instead of keeping (torch.utils.checkpoint, non-reentrant):
#   none   keep every intermediate (conv output, delta, B, C, the scan's saved set, y)
#   inner  keep the in_proj input and output only; conv, x_proj, dt_proj, the scan and out_proj run again in
#          the backward (mamba_ssm's MambaInnerFn keeps about the same)
#   all    keep the mixer's input only; in_proj runs again too
RECOMPUTE = ("none", "inner", "all")

RESIDUAL_START = {
    "none": (False, False),
    "forward": (True, False),
    "backward": (False, True),
    "both": (True, True),
}


class BiMamba(nn.Module):
    """Bidirectional selective-SSM token mixer: ``(B, L, d) -> (B, L, d)``.

    Args:
        d_model: token width d. ``d_inner = expand * d`` (E), ``d_state`` N, ``d_conv`` conv width,
            ``dt_rank`` R (``"auto"``: ceil(d / 16)).
        bwd_mask: masked (diagonal-removed) scan in the backward direction (VideoMambaPro: True).
        residual_start: elemental residual per direction: 'none' | 'forward' | 'backward' | 'both'.
        mask_drops_D: the mask also removes the ``D * u`` skip term (ablation).
        gate: multiply by ``SiLU(z)`` (True in Mamba/VideoMamba).
        divide_out: halve the direction sum (Vim's ``if_devide_out``; VideoMamba does not).
        scan_backend: this mixer's scan backend (``mamba.ops.backend.BACKENDS``), followed by its scan, its causal
            conv and the fused-node choice; None follows the global switch (``set_scan_backend`` /
            ``VMP_SCAN_BACKEND``) at each call. Stored as ``self.scan_backend``.

    ``recompute`` (attribute, one of ``RECOMPUTE``; default ``"none"``): what the backward recomputes instead of
    keeping; values and gradients are the same whatever it is.
    """
    recompute = "none"

    def __init__(
        self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=1e-3, dt_max=1e-1,
        dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False,
        bwd_mask=True, residual_start="both", mask_drops_D=False, gate=True, divide_out=False,
        scan_backend=None, device=None, dtype=None,
    ):
        super().__init__()
        if residual_start not in RESIDUAL_START:
            raise ValueError(f"residual_start must be one of {sorted(RESIDUAL_START)}, got {residual_start!r}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        fk = dict(device=device, dtype=dtype)
        self.scan_backend = validate_backend(scan_backend)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bwd_mask, self.residual_start = bool(bwd_mask), residual_start
        self.mask_drops_D, self.gate, self.divide_out = bool(mask_drops_D), bool(gate), bool(divide_out)
        E, N, R = self.d_inner, d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias, **fk)
        self.out_proj = nn.Linear(E, d_model, bias=bias, **fk)
        # Registration order follows VideoMamba's state dict (A_log, D, A_b_log, D_b first).
        self.A_log = nn.Parameter(self._a_log_init(E, N, device))
        self.D = nn.Parameter(torch.ones(E, device=device))
        self.A_b_log = nn.Parameter(self._a_log_init(E, N, device))
        self.D_b = nn.Parameter(torch.ones(E, device=device))
        for p in (self.A_log, self.D, self.A_b_log, self.D_b):
            p._no_weight_decay = True
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=conv_bias, **fk)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False, **fk)
        self.dt_proj = nn.Linear(R, E, bias=True, **fk)
        self.conv1d_b = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=conv_bias, **fk)
        self.x_proj_b = nn.Linear(E, R + 2 * N, bias=False, **fk)
        self.dt_proj_b = nn.Linear(R, E, bias=True, **fk)
        self._dt_init = dict(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale, floor=dt_init_floor)
        for proj in (self.dt_proj, self.dt_proj_b):
            self._init_dt_proj(proj)
        # Move the out_proj after the _b modules in the module order (state-dict order as released).
        self.out_proj = self._modules.pop("out_proj")

    @staticmethod
    def _a_log_init(E, N, device):
        # S4D-real: A[c, n] = -(n + 1)
        return torch.log(torch.arange(1, N + 1, dtype=torch.float32, device=device)).repeat(E, 1).contiguous()

    @torch.no_grad()
    def _init_dt_proj(self, proj: nn.Linear):
        c = self._dt_init
        std = self.dt_rank ** -0.5 * c["dt_scale"]
        if c["dt_init"] == "constant":
            nn.init.constant_(proj.weight, std)
        else:
            nn.init.uniform_(proj.weight, -std, std)
        self._init_dt_proj_bias(proj)
        # A generic Linear init (trunc-normal weight, zero bias) must leave these alone.
        proj.weight._no_reinit = True
        proj.bias._no_reinit = True

    @torch.no_grad()
    def _init_dt_proj_bias(self, proj: nn.Linear):
        """dt bias such that softplus(bias) is log-uniform in [dt_min, dt_max] (Mamba's dt init)."""
        c = self._dt_init
        lo, hi = math.log(c["dt_min"]), math.log(c["dt_max"])
        dt = torch.exp(torch.rand(self.d_inner, device=proj.bias.device) * (hi - lo) + lo).clamp(min=c["floor"])
        proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1

    def _direction(self, x, conv, x_proj, dt_proj, reverse):
        """x: (b, E, l) -> u, delta (b, E, l), B, C (b, N, l) for one direction, natural order."""
        u = causal_conv1d_fn(x, conv.weight.squeeze(1), conv.bias, activation="silu", reverse=reverse,
                             backend=self.scan_backend)
        dbc = x_proj(u.transpose(1, 2))  # (b, l, R + 2N)
        dt, B, C = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).transpose(1, 2)  # bias is applied in the scan (delta_bias)
        return u, delta, B.transpose(1, 2), C.transpose(1, 2)

    def forward(self, hidden_states):
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"BiMamba expects (B, L, {self.d_model}), got {tuple(hidden_states.shape)}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        grad = torch.is_grad_enabled()
        if self.uses_fused(hidden_states.device.type):  # 'all' inside the node: keeps h and the chunk states only
            return self._fused(hidden_states)
        if self.recompute == "all" and grad:
            return checkpoint(self._mix, hidden_states, use_reentrant=False)
        return self._mix(hidden_states)

    def uses_fused(self, device_type: str) -> bool:
        """Whether the mixer runs as one fused autograd node (:mod:`mamba.ops.bimamba_fused`) on this device: with
        the triton scan backend, in inference or with any recompute mode but ``none`` (``inner`` keeps the in_proj
        and x_proj outputs, ``all`` only the input; ``none`` keeps every intermediate for the backward)."""
        if self.recompute == "none" and torch.is_grad_enabled():
            return False
        return resolve_backend(device_type, self.scan_backend) == "triton"

    def _mix(self, hidden_states):
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2E, l)
        if self.recompute == "inner" and torch.is_grad_enabled():
            return checkpoint(self._inner, xz, hidden_states.dtype, use_reentrant=False)
        return self._inner(xz, hidden_states.dtype)

    def _fused(self, hidden_states):
        from ..ops.bimamba_fused import FUSED_WEIGHTS, bimamba_fused_fn

        params = dict(self.named_parameters())
        weights = {k: params.get(k) for k in FUSED_WEIGHTS}
        return bimamba_fused_fn(
            hidden_states, weights, d_state=self.d_state, dt_rank=self.dt_rank, gate=self.gate,
            residual=RESIDUAL_START[self.residual_start], masked=(False, self.bwd_mask), drop_D=self.mask_drops_D,
            scale=0.5 if self.divide_out else 1.0, keep="input" if self.recompute == "all" else "inner")

    def _inner(self, xz, out_dtype):
        """(b, 2E, l) in_proj output -> (b, l, d): both directions' conv, projections and scan, then out_proj."""
        x, z = xz.chunk(2, dim=1)
        u_f, delta_f, B_f, C_f = self._direction(x, self.conv1d, self.x_proj, self.dt_proj, reverse=False)
        u_b, delta_b, B_b, C_b = self._direction(x, self.conv1d_b, self.x_proj_b, self.dt_proj_b, reverse=True)
        A_f = -torch.exp(self.A_log.float())
        A_b = -torch.exp(self.A_b_log.float())
        with scan_backend_scope(self.scan_backend):  # the scan op takes this mixer's backend from the scope
            y = bi_selective_scan_fn(
                (u_f, u_b), (delta_f, delta_b), (A_f, A_b), (B_f, B_b), (C_f, C_b),
                (self.D.float(), self.D_b.float()),
                z=z if self.gate else None,
                delta_bias=(self.dt_proj.bias.float(), self.dt_proj_b.bias.float()),
                delta_softplus=True,
                residual=RESIDUAL_START[self.residual_start],
                masked=(False, self.bwd_mask),
                mask_drops_D=self.mask_drops_D,
                average=self.divide_out,
            )
        return self.out_proj(y.transpose(1, 2).to(out_dtype))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
                f"bwd_mask={self.bwd_mask}, residual_start={self.residual_start!r}, "
                f"mask_drops_D={self.mask_drops_D}, gate={self.gate}, divide_out={self.divide_out}"
                + (f", scan_backend={self.scan_backend!r}" if self.scan_backend is not None else ""))
