"""scripts/bench_scan.py: its baseline computes the same scan, and one tiny measurement runs."""
import importlib
import os
import sys

import pytest
import torch

from mamba.ops.selective_scan import selective_scan_ref

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.join(ROOT, "scripts") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "scripts"))


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("bench_scan")  # scripts/ is on sys.path (as in tests/test_demo.py)


@pytest.mark.parametrize("variant", ["plain", "pro"])
def test_original_baseline_is_the_same_scan(bench, variant):
    x = bench._inputs(2, 6, 4, 9, "cpu", seed=1)
    out = bench._call(bench.original_scan, x, variant)
    kw = dict(residual=True, masked=True) if variant == "pro" else {}
    ref = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    ours = bench._call(bench._backend_fn("torch"), x, variant)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_measure_small(bench):
    r = bench.measure("torch", "pro", 1, 8, 4, 40, "cpu", repeats=2)
    assert set(r) == {"mem_fwd", "mem_fwdbwd", "t_fwd", "t_fwdbwd"}
    assert r["t_fwd"] > 0 and r["t_fwdbwd"] > 0
