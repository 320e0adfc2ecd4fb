"""Depthwise causal 1-D convolution (the Mamba mixer's short conv), forward or time-reversed.

``causal_conv1d_fn(x, weight, bias=None, activation=None, reverse=False)`` with ``x: (b, d, l)`` and
``weight: (d, w)``. Output ``(b, d, l)``::

    reverse=False:  out_t = act(bias + sum_k weight[:, k] * x_{t - (w-1) + k})     (left pad w-1)
    reverse=True:   out_t = act(bias + sum_k weight[:, k] * x_{t + (w-1) - k})     (right pad w-1)

``reverse=True`` is exactly ``flip(causal_conv1d_fn(flip(x)))`` computed in natural order without
flipping ``x``: the anti-causal conv with the kernel flipped. The backward direction of the bimamba
mixer uses it so that released VideoMamba ``conv1d_b`` weights keep their meaning.

The compiled ``causal_conv1d`` package is used when it is importable, ``x`` is on CUDA and the scan backend
(``backend``, else the scope / global switch of :mod:`mamba.ops.backend`) is ``auto``, ``cuda`` or ``triton``
(the reverse case flips in and out there); otherwise pure PyTorch (``F.conv1d`` with ``groups=d``): the
``reference`` and ``torch`` backends never run the compiled kernel.
"""
from __future__ import annotations

import torch.nn.functional as F

from .backend import requested_backend

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref"]

_cuda_fn = None
_cuda_checked = False


def _get_cuda_fn():
    """The compiled kernel's ``causal_conv1d_fn`` or None (imported lazily, once)."""
    global _cuda_fn, _cuda_checked
    if not _cuda_checked:
        _cuda_checked = True
        try:
            from causal_conv1d import causal_conv1d_fn as fn  # type: ignore
        except Exception:  # not installed, or built against another torch: fall back to PyTorch
            fn = None
        _cuda_fn = fn
    return _cuda_fn


def _check(x, weight, bias, activation):
    if x.dim() != 3:
        raise ValueError(f"x must be (b, d, l), got {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight must be (d={x.shape[1]}, w), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f"bias must be (d={x.shape[1]},), got {tuple(bias.shape)}")
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")


def causal_conv1d_ref(x, weight, bias=None, activation=None, reverse=False):
    """Pure-PyTorch implementation (any device, any float dtype, differentiable)."""
    _check(x, weight, bias, activation)
    d, w = weight.shape
    if reverse:
        out = F.conv1d(F.pad(x, (0, w - 1)), weight.flip(-1).unsqueeze(1), bias, groups=d)
    else:
        out = F.conv1d(F.pad(x, (w - 1, 0)), weight.unsqueeze(1), bias, groups=d)
    return F.silu(out) if activation is not None else out


# scan backends under which the compiled kernel is never used (the exact PyTorch paths)
_TORCH_ONLY = ("reference", "torch")


def _on_cuda(x) -> bool:
    return x.is_cuda


def causal_conv1d_fn(x, weight, bias=None, activation=None, reverse=False, backend=None):
    """Depthwise causal conv; see the module docstring. Dispatches to the compiled kernel on CUDA unless the scan
    backend (``backend``: a model's choice; None: the scope / global switch) is ``reference`` or ``torch``."""
    _check(x, weight, bias, activation)
    fn = _get_cuda_fn() if _on_cuda(x) and requested_backend(backend) not in _TORCH_ONLY else None
    if fn is None:
        return causal_conv1d_ref(x, weight, bias, activation, reverse)
    act = "silu" if activation is not None else None
    if reverse:
        return fn(x.flip(-1).contiguous(), weight.contiguous(), bias, activation=act).flip(-1)
    return fn(x.contiguous(), weight.contiguous(), bias, activation=act)
