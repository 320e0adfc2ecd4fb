from .backend import (
    BACKENDS,
    get_scan_backend,
    requested_backend,
    resolve_backend,
    scan_backend_scope,
    set_scan_backend,
    validate_backend,
)
from .causal_conv1d import causal_conv1d_fn, causal_conv1d_ref
from .rms_norm import RMSNorm, rms_norm_fn
from .selective_scan import bi_selective_scan_fn, bi_selective_scan_ref, selective_scan_fn, selective_scan_ref

__all__ = [
    "BACKENDS", "get_scan_backend", "requested_backend", "resolve_backend", "scan_backend_scope", "set_scan_backend",
    "validate_backend",
    "causal_conv1d_fn", "causal_conv1d_ref", "RMSNorm", "rms_norm_fn",
    "bi_selective_scan_fn", "bi_selective_scan_ref", "selective_scan_fn", "selective_scan_ref",
]
