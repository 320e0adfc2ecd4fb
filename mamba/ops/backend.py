"""One switch for the selective-scan implementation (cf. ``timm.layers.config.use_fused_attn``).

``VMP_SCAN_BACKEND=auto|reference|torch|cuda|triton`` is read once, on first use; ``set_scan_backend``
overrides it at run time. ``auto`` picks the fastest exact backend available for the tensor's device:
cuda (mamba-ssm) > triton > torch on a GPU, torch on the CPU. The resolved choice is logged once.

A model can hold its own choice (``BiMamba(scan_backend=...)``, ``create_model(..., scan_backend=...)``): the ops
take it as ``requested`` (``resolve_backend(device_type, requested)``), and ``scan_backend_scope(name)`` makes it
the request of every op called inside the ``with`` block that is not given one (the mixer wraps its scan call in
it). ``requested=None`` outside any scope is the global switch, as before.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar

_logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "torch", "cuda", "triton")
INSTALL_HINTS = {
    "cuda": "pip install mamba-ssm causal-conv1d --no-build-isolation "
    "(with MAMBA_KEEP_CUDA_BUILD=TRUE for recent mamba-ssm releases; needs a CUDA GPU and nvcc)",
    "triton": "pip install triton (it ships with CUDA builds of torch; kernels need a CUDA GPU, "
    "or TRITON_INTERPRET=1 to run them on the CPU)",
}

_requested: str | None = None
_logged: set[str] = set()
_scope: ContextVar[str | None] = ContextVar("vmp_scan_backend_scope", default=None)


def _validate(name: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def set_scan_backend(name: str | None) -> None:
    """Force a backend (``None`` goes back to the ``VMP_SCAN_BACKEND`` environment variable)."""
    global _requested
    _requested = None if name is None else _validate(name)
    if _requested is not None and _requested != "auto":
        check_backend_available(_requested)


def validate_backend(name: str | None) -> str | None:
    """A model's ``scan_backend`` kwarg: None (follow the global switch) or a known name, checked available now
    (as ``set_scan_backend``) so that a forced backend that cannot run fails at build time."""
    if name is None:
        return None
    name = _validate(name)
    if name != "auto":
        check_backend_available(name)
    return name


@contextmanager
def scan_backend_scope(name: str | None):
    """Within the block, ops called without a ``requested`` backend use ``name`` (None: no change)."""
    if name is None:
        yield
        return
    token = _scope.set(_validate(name))
    try:
        yield
    finally:
        _scope.reset(token)


def requested_backend(requested: str | None = None) -> str:
    """The requested name (possibly ``auto``): ``requested``, else the innermost ``scan_backend_scope``, else the
    global switch (``set_scan_backend`` / ``VMP_SCAN_BACKEND``)."""
    if requested is not None:
        return _validate(requested)
    scoped = _scope.get()
    return scoped if scoped is not None else get_scan_backend()


def get_scan_backend() -> str:
    """The requested backend name (possibly ``auto``)."""
    global _requested
    if _requested is None:
        _requested = _validate(os.environ.get("VMP_SCAN_BACKEND", "auto"))
    return _requested


def cuda_kernels_available() -> bool:
    return importlib.util.find_spec("selective_scan_cuda") is not None


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def check_backend_available(name: str) -> None:
    """Raise with the exact install command when a forced backend cannot run here."""
    if name == "cuda" and not cuda_kernels_available():
        raise RuntimeError(
            "scan backend 'cuda' needs mamba-ssm's compiled selective_scan_cuda, which is not installed: "
            + INSTALL_HINTS["cuda"]
        )
    if name == "triton" and not triton_available():
        raise RuntimeError("scan backend 'triton' needs triton: " + INSTALL_HINTS["triton"])


def _triton_runs_on(device_type: str) -> bool:
    if not triton_available():
        return False
    aot = sys.modules.get("mamba.ops.triton_aot")  # launches recorded, not run (scripts/profile_block.py)
    if aot is not None and aot.is_recording():
        return True
    return device_type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(device_type: str, requested: str | None = None) -> str:
    """The concrete backend used for tensors on ``device_type`` ('cpu' or 'cuda'); ``requested``: a model's own
    choice (None: the scope / global switch, see ``requested_backend``)."""
    asked = name = requested_backend(requested)
    if name == "auto":
        if device_type == "cuda" and cuda_kernels_available():
            name = "cuda"
        elif device_type == "cuda" and triton_available():
            name = "triton"
        else:
            name = "torch"
    else:
        check_backend_available(name)
        if name == "cuda" and device_type != "cuda":
            raise RuntimeError("scan backend 'cuda' runs on CUDA tensors only; got tensors on " + device_type)
        if name == "triton" and not _triton_runs_on(device_type):
            raise RuntimeError(
                "scan backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run on the CPU); got "
                + device_type
            )
    key = f"{name}@{device_type}"
    if key not in _logged:
        _logged.add(key)
        _logger.info("selective scan backend: %s (requested %s, device %s)", name, asked, device_type)
    return name
