"""DeepSpeed back end: generated config honours the flags; single process without a launcher
(ZeRO stage 0, its own rendezvous) trains with layer-decayed groups and exports a plain checkpoint."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.test_engine_common import FAST_FLAGS, ROOT, launcher_free_env
from utils.deepspeed_config import build_deepspeed_config


def _args(**kw):
    base = dict(batch_size=8, update_freq=4, world_size=2, opt="adamw", lr=1e-3, weight_decay=0.05,
                opt_betas=[0.9, 0.95], opt_eps=1e-6, zero_stage=2, clip_grad=3.0, bf16=False, no_amp=False,
                device="cuda")
    base.update(kw)
    return argparse.Namespace(**base)


def test_config_honours_every_flag():
    cfg = build_deepspeed_config(_args())
    assert cfg["train_batch_size"] == 8 * 4 * 2 and cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 4
    p = cfg["optimizer"]["params"]
    assert p["betas"] == [0.9, 0.95] and p["eps"] == 1e-6 and p["lr"] == 1e-3 and p["weight_decay"] == 0.05
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["gradient_clipping"] == 3.0
    assert cfg["fp16"]["enabled"] and "bf16" not in cfg
    cfg = build_deepspeed_config(_args(bf16=True, clip_grad=None))
    assert cfg["bf16"] == {"enabled": True} and "fp16" not in cfg and "gradient_clipping" not in cfg
    cfg = build_deepspeed_config(_args(no_amp=True, device="cpu"))
    assert "fp16" not in cfg and "bf16" not in cfg and cfg["optimizer"]["params"]["torch_adam"]
    with pytest.raises(ValueError, match="sgd"):
        build_deepspeed_config(_args(opt="sgd"))


def test_single_process_deepspeed_stage0_without_launcher(tmp_path):
    out = str(tmp_path / "ds")
    env = launcher_free_env()
    cmd = [sys.executable, os.path.join(ROOT, "tests", "test_engine_common.py"), *FAST_FLAGS, "--epochs", "1",
           "--enable_deepspeed", "--zero_stage", "0", "--layer_decay", "0.5", "--update_freq", "2",
           "--opt_betas", "0.8", "0.9", "--clip_grad", "2.0", "--output_dir", out]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = json.load(open(os.path.join(out, "deepspeed_config.json")))
    assert cfg["gradient_accumulation_steps"] == 2 and cfg["optimizer"]["params"]["betas"] == [0.8, 0.9]
    assert cfg["gradient_clipping"] == 2.0 and cfg["zero_optimization"]["stage"] == 0
    assert os.path.isfile(os.path.join(out, "checkpoint-0", "mp_rank_00_model_states.pt"))
    lines = [json.loads(x) for x in open(os.path.join(out, "log.txt"))]
    # the layer-decay groups reached DeepSpeed's optimizer: smallest lr = largest * 0.5^(3 layers + 1)
    assert lines[0]["train_min_lr"] == pytest.approx(lines[0]["train_lr"] * 0.5 ** 4)
    assert lines[0]["train_grad_norm"] > 0 and "Final top-1" in lines[-1]
    export = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    assert export["epoch"] == 0 and "layers.0.1.weight" in export["model"] and isinstance(export["args"], dict)
