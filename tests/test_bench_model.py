"""scripts/bench_model.py: one CPU run prints a row per frame count with both models' throughput, their ratio,
and a peak-memory figure measured in a separate process (not the +0 of a shared high-water mark)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_table(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_model.py"), "--device", "cpu",
                        "--frames", "2", "4", "--iters", "1", "--warmup", "1"],
                       capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [[f for f in line.split() if f != "|"] for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [int(x[0]) for x in rows] == [2, 4]
    for x in rows:
        frames, tokens, pro, vm, ratio, mem_pro, mem_vm = x
        assert int(tokens) == 1 + 4 * int(frames)  # 32 px / 16 px patches: 4 per frame, plus cls
        assert float(pro) > 0 and float(vm) > 0 and abs(float(ratio) - float(pro) / float(vm)) < 0.01
        assert float(mem_pro) > 0 and float(mem_vm) > 0
