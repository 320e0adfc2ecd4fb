"""torchrun --nproc_per_node=2 with gloo on CPU: native DDP and DeepSpeed ZeRO-2 train, evaluate,
merge across ranks, save and resume (tiny fake model; DeepSpeed's first start compiles an op)."""
import json
import os
import signal
import subprocess
import sys

import torch

from tests.test_engine_common import FAST_FLAGS, ROOT
from utils.distributed import free_port

ENTRY = os.path.join(ROOT, "tests", "test_engine_common.py")


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def _cmd(out, extra, nproc=2, dist_eval=True):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", ENTRY, *FAST_FLAGS, "--output_dir", out,
            *(["--dist_eval"] if dist_eval else []), *extra]


def _torchrun(out, *extra, nproc=2, dist_eval=True):
    res = subprocess.run(_cmd(out, extra, nproc, dist_eval), env=_env(), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    return res.stdout


def _torchrun_killed_at(out, marker, *extra):
    """Start a 2-rank run and SIGKILL the whole process group when stdout shows `marker`."""
    proc = subprocess.Popen(_cmd(out, extra), env=dict(_env(), FAKE_ITEM_SLEEP="0.02"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(marker):
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert seen and seen[-1].startswith(marker), "".join(seen[-30:])


def _final(out):
    with open(os.path.join(out, "log.txt")) as f:
        return json.loads(f.readlines()[-1])


def test_torchrun_native_ddp_two_ranks_trains_and_merges(tmp_path):
    out = str(tmp_path / "ddp")
    stdout = _torchrun(out, "--lr", "2.0", "--epochs", "3", dist_eval=False)
    assert "distributed init (torchrun, cpu:gloo): rank 0/2" in stdout
    assert "world 2," in stdout and "lr scaling (linear256)" in stdout  # lr scaling uses the world size
    lines = [json.loads(x) for x in open(os.path.join(out, "log.txt"))]
    assert lines[-2]["train_loss"] < lines[0]["train_loss"]
    # without --dist_eval every rank validates the whole list: the count is the list length, not x world size
    assert all(line["val_n"] == 9 for line in lines[:-1]) and "each of the 2 ranks validates" in stdout
    final = lines[-1]
    assert final["n_videos"] == 9 and final["views_per_video"] == [2, 2]
    assert os.path.exists(os.path.join(out, "predictions", "0.txt"))
    assert os.path.exists(os.path.join(out, "predictions", "1.txt"))
    # a single process evaluating the same checkpoint gets the same merged numbers
    from engines.runner import run
    from run_class_finetuning import get_args_parser
    from tests.test_engine_common import fake_wiring
    from utils.config import parse_with_config

    args = parse_with_config(get_args_parser(), FAST_FLAGS + [
        "--eval", "--resume", os.path.join(out, "checkpoint-latest.pth"), "--output_dir", str(tmp_path / "ev")])
    res = run(args, fake_wiring())
    assert res["Final top-1"] == final["Final top-1"] and res["Final Top-5"] == final["Final Top-5"]


def test_torchrun_deepspeed_zero2_save_and_resume(tmp_path):
    ref, part = str(tmp_path / "ref"), str(tmp_path / "part")
    flags = ["--enable_deepspeed", "--zero_stage", "2", "--layer_decay", "0.7", "--clip_grad", "1.0",
             "--no_test_at_end"]
    _torchrun(ref, *flags, "--epochs", "2")
    _torchrun_killed_at(part, "Epoch: [1] [0/3]", *flags, "--epochs", "2")
    assert os.path.isdir(os.path.join(part, "checkpoint-0")) and not os.path.isdir(os.path.join(part, "checkpoint-1"))
    cfg = json.load(open(os.path.join(part, "deepspeed_config.json")))
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["gradient_clipping"] == 1.0
    assert cfg["train_batch_size"] == 4 * 2
    stdout = _torchrun(part, *flags, "--epochs", "2")
    assert "resumed DeepSpeed state from" in stdout and "start epoch 1" in stdout
    a = torch.load(os.path.join(ref, "checkpoint-latest.pth"), weights_only=True)
    b = torch.load(os.path.join(part, "checkpoint-latest.pth"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
