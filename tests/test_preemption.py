"""Preemption: SIGTERM / SIGUSR1 mid-epoch -> every rank finishes the same optimizer step, a resumable mid-epoch
checkpoint is saved, the run exits 75; --auto_resume continues from that step and ends with the weights (model,
EMA, optimizer) and the log.txt of an uninterrupted run, bitwise: one process with loader workers and gradient
accumulation, 2-rank DDP and 2-rank DeepSpeed ZeRO-2 under torchrun (the signal reaching one rank only)."""
import json
import os
import signal
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from engines.preemption import PREEMPTED_EXIT, PositionSampler, PreemptionGuard, SeededItems
from tests.test_engine_common import FAST_FLAGS, ROOT, launcher_free_env
from utils.distributed import free_port

ENTRY = os.path.join(ROOT, "tests", "test_engine_common.py")
RUN = ["--epochs", "3", "--print_freq", "1", "--no_test_at_end", "--model_ema", "--model_ema_decay", "0.9",
       "--fc_drop_rate", "0.3"]  # dropout: the process RNG matters too


def _same_state(ref: str, got: str):
    a = torch.load(os.path.join(ref, "checkpoint-latest.pth"), weights_only=True)
    b = torch.load(os.path.join(got, "checkpoint-latest.pth"), weights_only=True)
    assert a["epoch"] == b["epoch"] and "resume_iter" not in b
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a.get("model_ema", {}):
        assert torch.equal(a["model_ema"][k], b["model_ema"][k]), k
    if "optimizer" in a:
        for pid, st in a["optimizer"]["state"].items():
            assert torch.equal(st["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"]), pid
    la, lb = (open(os.path.join(d, "log.txt")).read().splitlines() for d in (ref, got))
    assert [json.loads(x) for x in la] == [json.loads(x) for x in lb]  # every epoch once, the same averages


# ---- the pieces -------------------------------------------------------------------------------------------------------
class _Draws(Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.tensor([float(i), torch.rand(()).item()])


def test_items_draw_the_same_whatever_the_worker_or_the_start_position():
    def draws(workers, start=0):
        sampler = PositionSampler(SequentialSampler(range(12)), seed=3, rank=1)
        sampler.set_epoch(2)
        sampler.start_at(start)
        return torch.cat(list(DataLoader(SeededItems(_Draws()), sampler=sampler, batch_size=2, num_workers=workers)))

    full = draws(0)
    assert torch.equal(full[:, 0], torch.arange(12.0))
    assert torch.equal(full, draws(2))  # two workers: each item still draws its own numbers
    assert torch.equal(full[6:], draws(2, start=6))  # resumed at position 6: the rest, unchanged, nothing twice
    assert len(full[:, 1].unique()) == 12


def test_guard_records_the_signal_and_a_second_one_is_not_swallowed():
    with PreemptionGuard() as g:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert g.requested and g.name == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # restored
    code = ("import os, signal, time\nfrom engines.preemption import PreemptionGuard\ng = PreemptionGuard()\n"
            "g.__enter__()\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.05)\nprint('first', g.name, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(1)\nprint('survived')\n")
    res = subprocess.run([sys.executable, "-c", code], env=launcher_free_env(), capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.strip() == "first SIGTERM" and res.returncode == -signal.SIGTERM


# ---- one process: an external SIGTERM to the process group (as a scheduler sends it), 2 workers, update_freq 2 -------
def test_sigterm_mid_epoch_saves_exits_75_and_resume_equals_uninterrupted(tmp_path):
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    flags = [*FAST_FLAGS, *RUN, "--num_workers", "2", "--update_freq", "2"]
    res = subprocess.run([sys.executable, ENTRY, *flags, "--output_dir", ref], env=launcher_free_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, ENTRY, *flags, "--output_dir", cut],
                            env=launcher_free_env(FAKE_ITEM_SLEEP="0.02"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch: [1] [1/6]"):
            os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader workers
    proc.wait(timeout=120)
    out = "".join(seen)
    assert proc.returncode == PREEMPTED_EXIT, out[-3000:]
    assert "received SIGTERM" in out and "stopped by SIGTERM at epoch 1, optimizer step" in out, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    ck = torch.load(os.path.join(cut, "checkpoint-latest.pth"), weights_only=True)
    assert ck["epoch"] == 1 and ck["resume_iter"] % 2 == 0 and 0 < ck["resume_iter"] < 6, ck["resume_iter"]

    res = subprocess.run([sys.executable, ENTRY, *flags, "--output_dir", cut, "--auto_resume"],
                         env=launcher_free_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resuming epoch 1 at optimizer step {ck['resume_iter'] // 2} of 3" in res.stdout
    _same_state(ref, cut)


def test_a_changed_batch_layout_restarts_the_interrupted_epoch(tmp_path):
    cut = str(tmp_path / "cut")
    flags = [*FAST_FLAGS, *RUN]
    res = subprocess.run([sys.executable, ENTRY, *flags, "--output_dir", cut],
                         env=launcher_free_env(FAKE_SIGNAL="SIGUSR1", FAKE_SIGNAL_AT="30"), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == PREEMPTED_EXIT, res.stdout[-3000:] + res.stderr[-3000:]
    res = subprocess.run([sys.executable, ENTRY, *flags, "--output_dir", cut, "--auto_resume", "--batch_size", "2"],
                         env=launcher_free_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "batch_size 4 -> 2: epoch 1 restarts from its first step" in res.stdout
    assert "Epoch: [1] [ 0/12]" in res.stdout


# ---- torchrun, 2 ranks: the signal reaches rank 1 only; both stop after the same step ---------------------------------
def _torchrun(out, extra, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", ENTRY, *FAST_FLAGS, *RUN, "--output_dir", out, "--dist_eval", *extra]
    return subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **(env or {})),
                          capture_output=True, text=True, timeout=400)


def _preempt_and_resume(tmp_path, extra):
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    res = _torchrun(ref, extra)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # rank 1 gets SIGUSR1 at its 16th training item: epoch 1 (12 items per rank per epoch), first batch
    res = _torchrun(cut, extra, env=dict(FAKE_SIGNAL="SIGUSR1", FAKE_SIGNAL_RANK="1", FAKE_SIGNAL_AT="16"))
    assert res.returncode != 0 and "exitcode  : 75" in res.stderr, res.stdout[-2000:] + res.stderr[-3000:]
    assert "received SIGUSR1" in res.stderr
    assert "stopped by a signal on another rank at epoch 1, optimizer step" in res.stdout, res.stdout[-2000:]
    ck = torch.load(os.path.join(cut, "checkpoint-latest.pth"), weights_only=True)
    assert ck["epoch"] == 1 and ck["resume_iter"] > 0 and ck["world_size"] == 2
    res = _torchrun(cut, [*extra, "--auto_resume"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming epoch 1 at optimizer step" in res.stdout
    return ref, cut


def test_torchrun_ddp_preempted_on_one_rank_resumes_bitwise(tmp_path):
    ref, cut = _preempt_and_resume(tmp_path, [])
    _same_state(ref, cut)


def test_torchrun_deepspeed_preempted_on_one_rank_resumes_bitwise(tmp_path):
    ref, cut = _preempt_and_resume(tmp_path, ["--enable_deepspeed", "--zero_stage", "2"])
    _same_state(ref, cut)  # the plain exports; the tag folders hold the optimizer
    assert os.path.isdir(os.path.join(cut, "checkpoint-2"))
