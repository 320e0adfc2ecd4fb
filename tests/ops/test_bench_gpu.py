"""The GPU modes of the bench scripts (``bench_scan.py layer``, ``bench_model.py backends``, ``tune_tiles.py``, once
scripts/bench_gpu.py): the ratio tables compute what they claim, and the CPU plumbing run (Triton interpreter, tiny
shapes) measures every backend and variant without skipping."""
import importlib
import json
import os
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.path.join(ROOT, "scripts") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "scripts"))


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("bench_scan")  # scripts/ is on sys.path (as in tests/test_demo.py)


@pytest.fixture(scope="module")
def model_bench():
    return importlib.import_module("bench_model")


@pytest.fixture(scope="module")
def tune():
    return importlib.import_module("tune_tiles")


@pytest.fixture(scope="module")
def shared():
    return importlib.import_module("_bench")


def _scan(backend, variant, ms, gbps=(100.0, 50.0), size="Ti", T=8):
    return dict(level="scan", size=size, frames=T, backend=backend, variant=variant, fwd_bwd_ms=ms,
                fwd_ms=ms / 3, fwd_GBps=gbps[0], bwd_GBps=gbps[1])


def _model(backend, variant, ms, mib, T, size="Ti"):
    return dict(level="model", size=size, frames=T, backend=backend, variant=variant, step_ms=ms,
                clips_per_s=4000.0 / ms, peak_MiB=mib)


def _row(table, size, T, backend):
    for line in table.splitlines():
        f = line.split()
        if len(f) > 3 and f[0] == size and f[1] == str(T) and f[2] == backend:
            return f
    raise AssertionError(f"no row {size} {T} {backend} in\n{table}")


def test_scan_table_ratios(bench):
    rows = [_scan("torch", "videomambapro", 40.0), _scan("torch", "videomamba", 38.0),
            _scan("triton", "videomambapro", 4.0, gbps=(1000.0, 500.0)), _scan("triton", "videomamba", 3.9),
            _scan("mamba_ssm_x2", "videomamba", 5.0),
            dict(level="scan", size="Ti", frames=8, backend="cuda", skipped="not installed")]
    table = bench.summarize(rows, peak_GBps=2000.0)
    tri = _row(table, "Ti", 8, "triton")
    # pro ms, plain ms, pro/plain, pro / two mamba-ssm calls, torch/pro, fwd and bwd bandwidth fractions
    assert tri[3:] == ["4.00", "3.90", "1.03", "0.80", "10.00", "0.50", "0.25"]
    tor = _row(table, "Ti", 8, "torch")
    assert tor[5:8] == ["1.05", "8.00", "1.00"]
    assert "cuda" not in table and "mamba_ssm_x2" not in table.split("\n", 2)[2]


def test_model_table_ratios_and_memory_growth(model_bench):
    rows = [_model("torch", "videomambapro", 105.0, 1000.0, 8), _model("torch", "videomamba", 100.0, 990.0, 8),
            _model("torch", "videomambapro", 800.0, 8400.0, 64), _model("torch", "videomamba", 790.0, 8300.0, 64)]
    table = model_bench.summarize(rows)
    r8, r64 = _row(table, "Ti", 8, "torch"), _row(table, "Ti", 64, "torch")
    assert r8[5] == "1.05" and r8[8] == "1.00"  # pro/plain step time; memory vs the 8-frame run
    assert r64[6:] == ["8400", "8300", "8.40"]
    assert float(r64[3]) == pytest.approx(4000 / 800, abs=0.01)


def test_scan_floor_bytes(bench):
    fwd, bwd = bench.scan_bytes(b=1, E=4, N=2, l=10, elem=2)
    per_dir = 2 * 4 * 10 + 2 * 2 * 10  # u, delta, B, C
    assert fwd == 2 * (2 * per_dir + 2 * 4 * 10)  # + z in, out
    assert bwd == 2 * (2 * per_dir + 2 * 4 * 10) + 2 * (2 * per_dir + 4 * 10)  # + z, dout | grads + dz


def _run(tmp_path, name, script, *flags):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script[0]), *script[1:], "--allow-cpu",
                        "--json", str(out), *flags], capture_output=True, text=True, env=env, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout, json.load(open(out))


def test_cpu_plumbing_run(tmp_path):
    """Scan level on both backends (the Triton interpreter takes ~10 s per call, so the model level, two
    blocks per step, runs on the torch backend only here)."""
    pytest.importorskip("triton", reason="triton is not installed")
    stdout, rows = _run(tmp_path, "scan", ("bench_scan.py", "layer"), "--dtype", "fp32", "--backends", "torch",
                        "triton")
    measured = {(x["level"], x["backend"], x["variant"]) for x in rows if "skipped" not in x}
    assert measured == {("scan", b, v) for b in ("torch", "triton") for v in ("videomambapro", "videomamba")}, rows
    assert all(x["fwd_bwd_ms"] > 0 and x["fwd_GBps"] > 0 for x in rows)
    assert "pro/plain" in stdout
    stdout, rows = _run(tmp_path, "model", ("bench_model.py", "backends"), "--backends", "torch")
    assert {(x["level"], x["variant"]) for x in rows if "skipped" not in x} == {
        ("model", "videomambapro"), ("model", "videomamba")}, rows
    assert all(x["clips_per_s"] > 0 for x in rows) and "pro/plain t" in stdout


def _sweep(tile, ms, table=False, size="Ti", T=8, **kw):
    return dict(level="sweep", size=size, frames=T, l=1 + 196 * T, E=384, batch=1, tile=tile, table=table,
                fwd_ms=ms / 3, bwd_ms=2 * ms / 3, fwd_bwd_ms=ms, **kw)


def test_sweep_table_ratios_and_best(bench, tune):
    rows = [_sweep("8,16,4", 2.0, table=True, max_regs=168, max_spill=0), _sweep("4,16,4", 1.5),
            _sweep("16,16,8", 3.0, max_regs=255, max_spill=96),
            dict(level="sweep", size="Ti", frames=8, l=1569, tile="16,64,4", table=False, skipped="OutOfResources"),
            _sweep("8,16,4", 4.0, table=True, T=16), _sweep("4,32,4", 5.0, T=16)]
    table = tune.summarize_sweep(rows)
    r = {f[3]: f for f in (line.split() for line in table.splitlines()[2:]) if f[:2] == ["Ti", "8"]}
    assert r["8,16,4"][7:] == ["1.00", "168", "0", "table"]
    assert r["4,16,4"][7:] == ["0.75", "-", "-", "*"]  # best of the shape; no JIT figures on this row
    assert r["16,16,8"][7:10] == ["1.50", "255", "96"]
    assert r["16,64,4"][4:] == ["failed:", "OutOfResources"]
    r16 = {f[3]: f for f in (line.split() for line in table.splitlines()[2:]) if f[:2] == ["Ti", "16"]}
    assert r16["8,16,4"][7:] == ["1.00", "-", "-", "table", "*"] and r16["4,32,4"][7] == "1.25"
    assert tune.summarize_sweep([_scan("torch", "videomamba", 1.0)]) == ""


def test_sweep_candidates_cover_the_tile_table(tune):
    from mamba.ops.scan_triton import TILE_TABLE

    args = tune.parse_args([])
    cands = tune.sweep_tiles(args, types.SimpleNamespace(type="cuda"))
    assert all(t in cands for *_, t in TILE_TABLE)
    assert len({tune.tile_str(t) for t in cands}) == len(cands)
    assert tune.sweep_tiles(tune.parse_args(["--tiles", "4,8,2"]), None) == [
        {"block_d": 4, "chunk": 8, "num_warps": 2}]
    for bad in ("4,8", "4,6,2", "a,b,c"):
        with pytest.raises(SystemExit):
            tune.parse_args(["--tiles", bad])


def bench_tile_str(t):
    return f"{t['block_d']},{t['chunk']},{t['num_warps']}"


def test_cpu_sweep_run(tmp_path):
    """tune_tiles.py through the interpreter: the tile the table picks for the shape is added to the candidates,
    every candidate is timed, one table is printed."""
    pytest.importorskip("triton", reason="triton is not installed")
    from mamba.ops.scan_triton import scan_tile

    stdout, rows = _run(tmp_path, "sweep", ("tune_tiles.py",), "--dtype", "fp32", "--tiles", "4,4,1")
    picked = bench_tile_str(scan_tile(16, 9))  # the CPU stand-in shape: E = 16, l = 9
    assert [(r["tile"], r["table"]) for r in rows] == [(picked, True), ("4,4,1", False)], rows
    assert all(r["fwd_bwd_ms"] > 0 for r in rows)
    assert "triton tile sweep" in stdout and stdout.count("table") >= 2


def test_key_figures_line(bench, shared, tmp_path):
    """The one line device_check.sh prints for the bench stage: scan ms, / two mamba-ssm calls, bandwidth
    fractions of the floor, VideoMambaPro / VideoMamba step time."""
    rows = [dict(_scan("triton", "videomambapro", 4.0, gbps=(1000.0, 500.0)), peak_GBps=2000.0),
            _scan("triton", "videomamba", 3.9), _scan("mamba_ssm_x2", "videomamba", 5.0),
            _model("triton", "videomambapro", 105.0, 1000.0, 8), _model("triton", "videomamba", 100.0, 990.0, 8),
            _scan("triton", "videomambapro", 9.0, size="S"),
            dict(level="scan", size="S", frames=8, backend="cuda", skipped="not installed")]
    line = shared.key_figures(rows)
    assert line == "Ti scan 4.00ms /mssm2 0.80 floor 0.50/0.25 VMP/VM step 1.05; S scan 9.00ms"
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    assert bench.main(["layer", "--key_figures", str(path)]) == 0
    assert shared.key_figures([]) == "-"
