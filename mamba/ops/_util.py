"""Small helpers shared by the op modules: per-direction pairs, where Triton kernels may run, and what the add +
RMSNorm nodes keep for backward."""
from __future__ import annotations

import sys


def pair(v, n: int = 2) -> tuple:
    """``v`` as a per-direction tuple: a tuple / list as given, else ``n`` copies of ``v``."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def check_triton_runs_on(x, kernel, what: str, module: str) -> None:
    """Raise unless ``kernel`` can take ``x``: a CUDA tensor, launches being recorded (``triton_aot.recording``:
    nothing executes), or a kernel built by the interpreter (``TRITON_INTERPRET=1`` set before ``module`` was
    imported). ``what`` names the op in the message ("scan", "conv", "RMSNorm")."""
    if x.device.type == "cuda":
        return
    aot = sys.modules.get("mamba.ops.triton_aot")
    if aot is not None and aot.is_recording():
        return
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(kernel, InterpretedFunction):
        raise RuntimeError(
            f"the triton {what} got tensors on {x.device.type}: Triton kernels run on CUDA GPUs, or on the CPU "
            f"through the interpreter when TRITON_INTERPRET=1 is set before {module} is imported")


def save_norm(ctx, r, rstd, weight, x, residual) -> None:
    """What an add + RMSNorm autograd node keeps for backward (the torch node and the Triton one keep the same, so
    either backward reads either forward's): r, rstd, the weight, and the dtypes of the input gradients (x's, and
    the residual's or None)."""
    ctx.save_for_backward(r, rstd, weight)
    ctx.dtypes = (x.dtype, None if residual is None else residual.dtype)
