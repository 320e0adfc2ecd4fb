"""scripts/bench_model.py: one CPU run prints a row per frame count and model with its throughput, the ratio to
VideoMambaPro, analytic GFLOPs and a peak-memory figure measured in a separate process (not the +0 of a shared
high-water mark), then the growth table."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *extra):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_model.py"), "--device", "cpu",
                        "--frames", "2", "4", "--iters", "1", "--warmup", "1", *extra],
                       capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [[f for f in line.split() if f != "|"] for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    return r.stdout, rows


def _check(rows, names, tokens):
    assert [(int(x[0]), x[1]) for x in rows] == [(f, n) for f in (2, 4) for n in names]
    by = {(int(x[0]), x[1]): x for x in rows}
    for (f, n), x in by.items():
        _, _, tok, gflops, tput, ratio, mem, mem_ratio = x
        assert int(tok) == tokens[n](f)
        assert float(gflops) > 0 and float(tput) > 0 and float(mem) > 0
        ref = by[(f, names[0])]
        assert abs(float(ratio) - float(tput) / float(ref[4])) < 0.01 + 0.01 * float(ratio)
        # memory is printed in whole MiB, its ratio from the unrounded values
        assert abs(float(mem_ratio) - float(mem) / float(ref[6])) < 0.01 + 0.05 * float(mem_ratio)


def test_cpu_table_pro_vs_a_baseline(tmp_path):
    names = ["videomambapro_test", "timesformer_test"]
    out, rows = _run(tmp_path, "--models", *names)
    # 32 px / 16 px patches: 4 per frame, plus cls
    _check(rows, names, {n: (lambda f: 1 + 4 * f) for n in names})
    assert "growth from 2 to 4 frames" in out


@pytest.mark.slow
def test_cpu_table_default_pair(tmp_path):
    _, rows = _run(tmp_path)
    _check(rows, ["videomambapro_test", "videomamba_test"], {n: (lambda f: 1 + 4 * f) for n in
                                                             ("videomambapro_test", "videomamba_test")})


@pytest.mark.slow
def test_cpu_table_baselines(tmp_path):
    names = ["videomambapro_test", "timesformer_test", "vivit_test", "videomambaout_test"]
    out, rows = _run(tmp_path, "--models", *names)
    _check(rows, names, {"videomambapro_test": lambda f: 1 + 4 * f, "timesformer_test": lambda f: 1 + 4 * f,
                         "vivit_test": lambda f: 5 * (f // 2), "videomambaout_test": lambda f: 4 * f})
    growth = [line.split() for line in out.split("growth from")[1].splitlines()[2:] if line.strip()]
    assert [g[0] for g in growth] == names and all(float(g[1]) > 0 and float(g[2]) > 0 for g in growth)
