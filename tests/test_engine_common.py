"""Shared fakes for the engine tests (a tiny layered model and tensor datasets following the data
contract), plus a command-line entry that runs engines.runner with them (for subprocess / torchrun
tests that must not depend on models/ or datasets/). No tests are collected from this file."""
from __future__ import annotations

import os
import sys
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

T, S, NUM_CLASSES = 2, 4, 3
SLEEP = float(os.environ.get("FAKE_ITEM_SLEEP", "0"))  # slows items down for kill tests
# FAKE_STOP_RANK=r FAKE_STOP_AT=n: rank r SIGSTOPs itself at its n-th training item (a stalled rank)
STOP_RANK, STOP_AT = os.environ.get("FAKE_STOP_RANK"), int(os.environ.get("FAKE_STOP_AT", "0"))
# FAKE_SIGNAL=SIGUSR1 FAKE_SIGNAL_RANK=r FAKE_SIGNAL_AT=n: rank r's process sends itself the signal at its n-th
# training item (what a scheduler's warning does to one task; with --num_workers 0 the item runs in the main process)
SIGNAL, SIGNAL_RANK = os.environ.get("FAKE_SIGNAL"), os.environ.get("FAKE_SIGNAL_RANK", "0")
SIGNAL_AT = int(os.environ.get("FAKE_SIGNAL_AT", "0"))


class TinyLayered(nn.Module):
    """Named like the real model: cls_token, pos_embed, temporal_pos_embedding, patch_embed, layers.{i}, norm_f, head."""

    def __init__(self, num_classes=NUM_CLASSES, dim=8, depth=3, drop=0.0):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Linear(3 * S * S, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, T, dim))
        self.layers = nn.ModuleList([nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
                                     for _ in range(depth)])
        for layer in self.layers:
            a = nn.Parameter(torch.zeros(dim))
            a._no_weight_decay = True
            layer.register_parameter("A_log", a)
        self.norm_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.drop = nn.Dropout(drop)

    def get_num_layers(self):
        return len(self.layers)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "temporal_pos_embedding"}

    def forward(self, x):  # (B, 3, T, S, S)
        b = x.shape[0]
        tok = self.patch_embed.proj(x.permute(0, 2, 1, 3, 4).reshape(b, T, -1)) + self.temporal_pos_embedding
        tok = torch.cat([self.cls_token.expand(b, -1, -1) + self.pos_embed, tok], 1)
        for layer in self.layers:
            tok = tok + layer(tok) + layer.A_log
        return self.head(self.drop(self.norm_f(tok).mean(1)))


def launcher_free_env(**extra) -> dict:
    """The environment for a subprocess started as a user starts one process (no launcher variables)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **extra)
    return env


def make_clip(g, label):
    x = torch.randn(3, T, S, S, generator=g) * 0.5
    x[label % 3, label % T] += 1.5  # learnable signal
    return x


class TensorVideos(torch.utils.data.Dataset):
    """mode: train -> (clip, label, index, bad files ''); val -> (clip, label, id, ok);
    test -> (clip, label, id, chunk, split, ok) with `views` views per video."""

    def __init__(self, n, mode, seed=0, views=2, bad=()):
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % NUM_CLASSES for i in range(n)]
        self.clips = [make_clip(g, lb) for lb in self.labels]
        self.mode, self.views, self.bad = mode, views, set(bad)
        self.calls = 0

    def __len__(self):
        return len(self.clips) * (self.views if self.mode == "test" else 1)

    def __getitem__(self, i):
        if SLEEP:
            time.sleep(SLEEP)
        if self.mode == "train":
            self.calls += 1
            if STOP_RANK is not None and STOP_RANK == os.environ.get("RANK") and self.calls == STOP_AT:
                import signal

                os.kill(os.getpid(), signal.SIGSTOP)
            if SIGNAL and SIGNAL_RANK == os.environ.get("RANK", "0") and self.calls == SIGNAL_AT:
                import signal

                os.kill(os.getpid(), getattr(signal, SIGNAL))
            return self.clips[i] + 0.05 * torch.randn_like(self.clips[i]), self.labels[i], i, ""
        if self.mode == "val":
            return self.clips[i], self.labels[i], f"vid{i}", i not in self.bad
        v, k = divmod(i, self.views)
        ok = v not in self.bad
        clip = self.clips[v] * (1 + 0.1 * k) if ok else torch.zeros_like(self.clips[v])
        return clip, self.labels[v], f"vid{v}", k, 0, ok


def fake_wiring(n_train=24, n_val=9, n_test=9):
    from engines.runner import Wiring

    def build_model(args, meta=False):
        if meta:
            with torch.device("meta"):
                return TinyLayered(args.nb_classes, drop=args.fc_drop_rate)
        torch.manual_seed(args.seed)
        return TinyLayered(args.nb_classes, drop=args.fc_drop_rate)

    def build_dataset(is_train, test_mode, args):
        if is_train:
            return TensorVideos(n_train, "train", seed=1), NUM_CLASSES
        if test_mode:
            return TensorVideos(n_test, "test", seed=2), NUM_CLASSES
        return TensorVideos(n_val, "val", seed=2), NUM_CLASSES

    return Wiring(build_model=build_model, build_dataset=build_dataset)


FAST_FLAGS = ["--nb_classes", str(NUM_CLASSES), "--batch_size", "4", "--epochs", "2", "--lr", "0.05",
              "--warmup_epochs", "0", "--num_workers", "0", "--device", "cpu", "--no_pin_mem", "--mixup", "0",
              "--cutmix", "0", "--smoothing", "0", "--weight_decay", "0.01", "--print_freq", "100",
              "--model", "tiny_layered", "--data_path", ROOT]


def main(argv=None):
    import run_class_finetuning as r
    from engines.runner import run
    from utils.config import parse_with_config

    args = parse_with_config(r.get_args_parser(), argv)
    return run(args, fake_wiring())


if __name__ == "__main__":
    main()
