"""The cluster path proven on CPU (issue 11): the process group a GPU node gets, collectives on CPU tensors,
one input cast for half-precision engines, per-rank seeds, fp32 EMA under DeepSpeed bf16, DeepSpeed tag retention."""
import json
import os
import random
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from engines.backends import cast_input
from engines.evaluate import evaluate, final_test, merge
from engines.finetune import BadFileTracker
from engines.runner import ShardSampler, build_loaders
from tests.test_engine_common import FAST_FLAGS, ROOT, TensorVideos, TinyLayered, launcher_free_env
from utils import distributed as dist_utils
from utils.distributed import free_port
from utils.logger import MetricLogger
from utils.seeding import seed_epoch


# ---- 1. the process group ---------------------------------------------------------------------------------------
def test_cuda_node_gets_nccl_for_cuda_and_gloo_for_cpu_tensors(monkeypatch):
    """On a GPU node every collective on a CPU tensor (loss flags, meters, counts) needs a CPU backend beside NCCL."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("device", i))
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.__setitem__("init", kw))
    monkeypatch.setattr(dist_utils, "is_dist_avail_and_initialized", lambda: False)
    monkeypatch.setattr(dist_utils, "setup_for_distributed", lambda is_master: None)
    for k, v in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500").items():
        monkeypatch.setenv(k, v)
    args = Namespace(device="cuda", dist_timeout=3.0)
    dist_utils.init_distributed_mode(args)
    assert calls["init"]["backend"] == "cuda:nccl,cpu:gloo" == args.dist_backend
    assert calls["device"] == 1 and calls["init"]["rank"] == 1 and calls["init"]["world_size"] == 2
    assert calls["init"]["timeout"].total_seconds() == 180
    args = Namespace(device="cpu", dist_timeout=None)
    dist_utils.init_distributed_mode(args)
    assert calls["init"]["backend"] == "cpu:gloo" == args.dist_backend  # --device cpu on the same node
    assert calls["init"]["timeout"].total_seconds() == 600  # the default --dist_timeout


def _collectives_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    args = Namespace(device="cpu", dist_timeout=1.0)
    dist_utils.init_distributed_mode(args)  # the same device:backend form a GPU node gets, CPU half only
    torch.manual_seed(0)
    model = TinyLayered().eval()
    ds = TensorVideos(9, "val", seed=2, bad={4})
    st = evaluate(DataLoader(ds, batch_size=2, sampler=ShardSampler(len(ds), rank, world)), model, log=lambda m: None)
    tracker = BadFileTracker(limit=5)
    tracker.update({f"bad_{rank}.mp4"}, epoch=0)
    ml = MetricLogger()
    ml.update(loss=float(rank + 1))
    ml.synchronize_between_processes()
    dist_utils.barrier("test barrier")
    res = {"val": st, "bad": sorted(tracker.files), "loss_avg": ml.loss.global_avg, "backend": str(dist.get_backend())}
    with open(os.path.join(out, f"{rank}.json"), "w") as f:
        json.dump(res, f)
    dist_utils.cleanup()


def test_engine_collectives_run_on_cpu_tensors_under_the_device_backend_group(tmp_path):
    mp.spawn(_collectives_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.load(open(tmp_path / f"{r}.json")) for r in (0, 1))
    assert r0["backend"] == "cpu:gloo"
    # sharded validation: both ranks agree on the totals of the whole list (9 items, 1 unreadable counted)
    assert r0["val"] == r1["val"] and r0["val"]["n"] == 9 and r0["val"]["n_unreadable"] == 1
    single = evaluate(DataLoader(TensorVideos(9, "val", seed=2, bad={4}), batch_size=2),
                      (torch.manual_seed(0), TinyLayered().eval())[1], log=lambda m: None)
    assert r0["val"]["acc1"] == pytest.approx(single["acc1"]) and r0["val"]["loss"] == pytest.approx(single["loss"])
    assert r0["bad"] == r1["bad"] == ["bad_0.mp4", "bad_1.mp4"]  # distinct files gathered from every rank
    assert r0["loss_avg"] == r1["loss_avg"] == 1.5


# ---- 2. one input cast ---------------------------------------------------------------------------------------------
def test_half_precision_engine_model_takes_fp32_clips_on_every_path(tmp_path):
    """DeepSpeed bf16 holds the module in bf16 without autocast: validation, the multi-view test and inference must
    cast the fp32 clips (this raised 'Input type (float) and bias type (c10::BFloat16)' before)."""
    torch.manual_seed(0)
    model = TinyLayered().to(torch.bfloat16).eval()
    st = evaluate(DataLoader(TensorVideos(6, "val", seed=2), batch_size=3), model, log=lambda m: None)
    assert st["n"] == 6 and np.isfinite(st["loss"])
    info = final_test(DataLoader(TensorVideos(3, "test", seed=2), batch_size=2), model, str(tmp_path / "0.txt"))
    assert info["n_views"] == 6 and merge(str(tmp_path), 1, log=lambda m: None)["n_videos"] == 3
    from scripts.infer_video import predict

    p = predict(model, torch.stack([TensorVideos(1, "val")[0][0]] * 2), batch_size=1)
    assert p.dtype == torch.float32 and p.sum().item() == pytest.approx(1.0, abs=1e-3)
    x = torch.randn(2, 3)
    assert cast_input(x, torch.nn.Linear(3, 1).to(torch.bfloat16)).dtype == torch.bfloat16
    assert cast_input(x, torch.nn.Linear(3, 1)).dtype == torch.float32  # native AMP: autocast does the casting
    assert cast_input(torch.arange(3), torch.nn.Linear(3, 1).half()).dtype == torch.long  # labels only move


# ---- 3. seeds include the rank ---------------------------------------------------------------------------------------
class _Draws(Dataset):
    """Every item is three random draws (torch, numpy, python) taken inside the loader worker."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.tensor([torch.rand(()).item(), float(np.random.rand()), random.random()]), 0, i, ""


def _rank_stream(monkeypatch, rank, epoch=1):
    monkeypatch.setattr("utils.distributed.get_rank", lambda: rank)
    monkeypatch.setattr("utils.distributed.get_world_size", lambda: 2)
    from engines.runner import Wiring
    from run_class_finetuning import get_args_parser

    args = get_args_parser().parse_args(FAST_FLAGS + ["--num_workers", "2", "--disable_eval_during_finetuning",
                                                      "--batch_size", "2"])
    w = Wiring(build_model=None, build_dataset=lambda tr, tm, a: (_Draws(), 3))
    loaders, _ = build_loaders(args, w)
    seed_epoch(args, loaders["train"], epoch, rank)
    return torch.cat([b[0] for b in loaders["train"]])


def test_each_rank_draws_its_own_augmentation_and_reruns_reproduce(monkeypatch):
    r0, r0_again, r1 = _rank_stream(monkeypatch, 0), _rank_stream(monkeypatch, 0), _rank_stream(monkeypatch, 1)
    assert torch.equal(r0, r0_again)  # a rank's stream is reproducible (resume continues exactly)
    for col in range(3):  # torch, numpy and python RNGs in the workers all differ between ranks
        assert not torch.equal(r0[:, col], r1[:, col]), col
    assert not torch.equal(r0, _rank_stream(monkeypatch, 0, epoch=2))  # and between epochs


# ---- 4-5. DeepSpeed bf16: EMA in fp32, tag retention, validation and test through the cast ----------------------------
def test_deepspeed_bf16_ema_fp32_and_tag_retention(tmp_path):
    out = str(tmp_path / "ds")
    env = launcher_free_env()
    cmd = [sys.executable, os.path.join(ROOT, "tests", "test_engine_common.py"), *FAST_FLAGS, "--epochs", "4",
           "--enable_deepspeed", "--zero_stage", "1", "--bf16", "--model_ema", "--model_ema_decay", "0.5",
           "--save_ckpt_freq", "2", "--output_dir", out]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "precision: bf16" in res.stdout
    # retention: the newest tag plus the tags of the kept checkpoint-N.pth epochs (every 2 epochs), nothing else
    tags = sorted(f for f in os.listdir(out) if f.startswith("checkpoint-") and os.path.isdir(os.path.join(out, f)))
    pths = sorted(f for f in os.listdir(out) if f.endswith(".pth"))
    assert tags == ["checkpoint-1", "checkpoint-3"], tags
    assert pths == ["checkpoint-1.pth", "checkpoint-3.pth", "checkpoint-best.pth", "checkpoint-latest.pth"], pths
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    assert ck["model"]["head.weight"].dtype == torch.bfloat16  # the engine's module
    assert all(v.dtype == torch.float32 for v in ck["model_ema"].values() if v.is_floating_point())
    lines = [json.loads(x) for x in open(os.path.join(out, "log.txt"))]
    assert [x["epoch"] for x in lines[:-1]] == [0, 1, 2, 3] and all(x["val_n"] == 9 for x in lines[:-1])
    assert "val_ema_acc1" in lines[0] and lines[-1]["n_videos"] == 9
