"""Running the Triton kernel tests without a GPU, through Triton's interpreter (one copy for the test modules of
the Triton kernels: test_scan_triton.py, test_bimamba_fused.py, test_rms_norm_triton.py).

Triton reads TRITON_INTERPRET when a kernel is decorated, triton.language's own helpers included, so it must be
set before the first ``import triton``: :func:`use_interpreter` does that and imports triton (or skips the module).
Another test module may have imported triton earlier without it; its helpers are then compiled-only and cannot run
on the CPU, and the module re-runs itself in a fresh interpreter process (:func:`interpreter_guards`).
"""
import os
import subprocess
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def use_interpreter():
    """Without CUDA: TRITON_INTERPRET=1 before triton is imported; then triton, or the module is skipped."""
    if not HAS_CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    pytest.importorskip("triton", reason="triton is not installed (pip install triton)")


def runs_in_process() -> bool:
    """The kernels can run in this process: on a GPU, or with triton's own helpers built by the interpreter."""
    import triton.language.standard as tl_standard
    from triton.runtime.interpreter import InterpretedFunction

    return HAS_CUDA or isinstance(tl_standard.zeros, InterpretedFunction)


def interpreted(kernel) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def interpreter_guards(in_process: bool, test_file: str):
    """``(autouse fixture, test)`` for a module's namespace: when the module cannot run here, every test but the
    re-run is skipped, and the re-run runs the file (the same -m selection) in a fresh process with
    TRITON_INTERPRET=1."""

    @pytest.fixture(autouse=True)
    def _needs_in_process(request):
        if not in_process and request.node.originalname != "test_rerun_in_fresh_process":
            pytest.skip("triton was imported without TRITON_INTERPRET=1; covered by test_rerun_in_fresh_process")

    @pytest.mark.skipif(in_process, reason="the tests ran in this process")
    def test_rerun_in_fresh_process(request):
        markexpr = request.config.getoption("markexpr") or ""  # the same selection (-m "not slow") in the child
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            *(["-m", markexpr] if markexpr else []), os.path.abspath(test_file)], cwd=ROOT,
                           env=dict(os.environ, TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=3600)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]

    return _needs_in_process, test_rerun_in_fresh_process
