"""Kill-and-resume: a run SIGKILLed mid-epoch and restarted with --auto_resume ends with exactly the
weights of an uninterrupted run with the same seed (native back end, tiny fake model)."""
import os
import signal
import subprocess
import sys
import time

import torch

from tests.test_engine_common import FAST_FLAGS, ROOT

ENTRY = os.path.join(ROOT, "tests", "test_engine_common.py")


def _cmd(out, *extra):
    return [sys.executable, ENTRY, *FAST_FLAGS, "--epochs", "3", "--print_freq", "1", "--output_dir", out,
            "--no_test_at_end", "--model_ema", "--model_ema_decay", "0.9", *extra]


def _env(**kw):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.update(kw)
    return env


def _weights(path):
    ck = torch.load(path, weights_only=True)
    return ck["model"], ck["model_ema"], ck["optimizer"], ck["epoch"]


def test_kill_mid_epoch_then_auto_resume_matches_uninterrupted(tmp_path):
    ref, broken = str(tmp_path / "ref"), str(tmp_path / "broken")
    subprocess.run(_cmd(ref), env=_env(), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd(broken), env=_env(FAKE_ITEM_SLEEP="0.02"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.time() + 200
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch: [1] [2/6]"):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(seen[-20:])
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert torch.load(os.path.join(broken, "checkpoint-latest.pth"), weights_only=True)["epoch"] == 0
    # a half-written file left beside it (e.g. a crash during a non-atomic copy) must be skipped, not loaded
    with open(os.path.join(broken, "checkpoint-latest.pth"), "rb") as f:
        data = f.read()
    with open(os.path.join(broken, "checkpoint-7.pth"), "wb") as f:
        f.write(data[: len(data) // 3])

    res = subprocess.run(_cmd(broken), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "skipping" in res.stdout and "checkpoint-7.pth" in res.stdout
    assert "checkpoint-latest.pth (auto-resume" in res.stdout
    assert "start epoch 1" in res.stdout

    m_ref, ema_ref, opt_ref, ep_ref = _weights(os.path.join(ref, "checkpoint-latest.pth"))
    m_res, ema_res, opt_res, ep_res = _weights(os.path.join(broken, "checkpoint-latest.pth"))
    assert ep_ref == ep_res == 2
    for k in m_ref:
        assert torch.equal(m_ref[k], m_res[k]), k
        assert torch.equal(ema_ref[k], ema_res[k]), k
    for pid, st in opt_ref["state"].items():
        assert torch.equal(st["exp_avg"], opt_res["state"][pid]["exp_avg"])
    assert [g["lr"] for g in opt_ref["param_groups"]] == [g["lr"] for g in opt_res["param_groups"]]

