#!/usr/bin/env python
"""The masked-pretraining CPU demo: MaskFeat on the synthetic motion videos, then fine-tuning with 10% of the labels
from the pretrained weights and from scratch, and one table of both (about 10 minutes on 2 cores).

    python run_pretrain_demo.py                         # data/synthetic, output/pretrain_demo, seed 0
    python run_pretrain_demo.py --label_fraction 0.2 --pretrain_epochs 6

Steps: (1) the synthetic dataset of run_demo.py (written unless ``--data_path`` holds it); (2)
run_videomamba_pretraining.py, ``--objective maskfeat`` (``videomambapro_demo_maskfeat``: masked tubes replaced
by a mask token, HOG of the masked patches regressed), on every training video, no labels; (3) a balanced
``--label_fraction`` subset of the training list (the first videos of each class); (4) run_class_finetuning.py on
that subset twice, the same recipe (run_demo.py's), once with ``--finetune`` the pretraining checkpoint and once
from scratch; (5) the table: pretraining minutes and loss (first / last epoch), each start's best val and final
multi-view test top-1. Whichever start wins is reported as it is: on this small set and budget the pretrained start
is not guaranteed to win.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import run_demo  # noqa: E402

PRETRAIN_FLAGS = {  # run_videomamba_pretraining.py flags of the demo (the clip geometry is run_demo's)
    "--objective": "maskfeat", "--mask_type": "tube", "--mask_ratio": "0.5",
    "--num_frames": "8", "--tubelet_size": "2", "--input_size": "64", "--short_side_size": "64",
    "--batch_size": "16", "--lr": "1.6e-2", "--min_lr": "1e-4", "--warmup_epochs": "1", "--weight_decay": "0.05",
    "--drop_path": "0", "--device": "cpu", "--num_workers": "1", "--print_freq": "10", "--flip": "False",
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default=os.path.join("data", "synthetic"))
    p.add_argument("--output_dir", default=os.path.join("output", "pretrain_demo"))
    p.add_argument("--model", default="videomambapro_demo", help="the classifier; pretraining uses MODEL_maskfeat")
    p.add_argument("--pretrain_epochs", type=int, default=4)
    p.add_argument("--finetune_epochs", type=int, default=40)
    p.add_argument("--finetune_batch_size", type=int, default=4,
                   help="fine-tuning batch (60 labelled videos: 15 steps an epoch; lr scales with it, linear256)")
    p.add_argument("--label_fraction", type=float, default=0.1, help="share of the training labels fine-tuned on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_seed", type=int, default=0)
    p.add_argument("--train_per_class", type=int, default=150)
    p.add_argument("--val_per_class", type=int, default=10)
    p.add_argument("--test_per_class", type=int, default=25)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train_crop_scale", type=float, default=1.0, help="as run_demo.py")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--dry_run", action="store_true", help="parse the three runs' flags with their entry points and "
                   "exit (exp/launch.sh DRY_RUN=1)")
    return p


def label_subset(train_list: str, fraction: float, out: str) -> tuple:
    """The first ``ceil(fraction x n_c)`` lines of each class c of ``train_list`` -> ``out``. Returns (kept, all)."""
    import math

    if not 0.0 < fraction <= 1.0:
        raise SystemExit(f"--label_fraction {fraction}: must be in (0, 1]")
    rows = [r for r in open(train_list).read().splitlines() if r.strip()]
    by_class = {}
    for r in rows:
        by_class.setdefault(r.rsplit(" ", 1)[-1], []).append(r)
    kept = [r for c in sorted(by_class) for r in by_class[c][:math.ceil(fraction * len(by_class[c]))]]
    with open(out, "w") as f:
        f.write("".join(r + "\n" for r in kept))
    return len(kept), len(rows)


def pretrain_flags(a, out: str) -> list:
    flags = dict(PRETRAIN_FLAGS)
    flags.update({"--model": f"{a.model}_maskfeat", "--epochs": str(a.pretrain_epochs), "--seed": str(a.seed),
                  "--data_path": a.data_path, "--output_dir": out, "--log_dir": os.path.join(out, "tensorboard")})
    return [x for kv in flags.items() for x in kv] + ["--no_auto_resume", "--no_pin_mem"]


def finetune_flags(a, out: str, subset: str, start: str) -> list:
    d = argparse.Namespace(model=a.model, epochs=a.finetune_epochs, seed=a.seed, data_path=a.data_path,
                           output_dir=out, extra=["--train_list", subset, "--data_root", a.data_path,
                                                  "--batch_size", str(a.finetune_batch_size), "--finetune", start])
    return run_demo.finetune_flags(d)


def dry_run(a) -> dict:
    """The three runs' command lines, parsed by their own entry points (nothing is written or built)."""
    import run_class_finetuning as ft
    import run_videomamba_pretraining as pt
    from utils.config import parse_with_config

    out = a.output_dir
    parse_with_config(pt.get_args_parser(), pretrain_flags(a, os.path.join(out, "pretrain")))
    for name, start in (("ft_pretrained", os.path.join(out, "pretrain", "checkpoint-latest.pth")),
                        ("ft_scratch", "none")):
        parse_with_config(ft.get_args_parser(), finetune_flags(a, os.path.join(out, name), "subset.csv", start))
    print("dry run: the pretraining and both fine-tuning command lines parse; exiting without training")
    return {"dry_run": True}


def pretrain(a, out: str) -> float:
    import run_videomamba_pretraining as pt
    from engines.runner import run
    from utils.config import parse_with_config

    argv = pretrain_flags(a, out)
    print("[pretrain demo] python run_videomamba_pretraining.py " + " ".join(argv), flush=True)
    t0 = time.time()
    args = parse_with_config(pt.get_args_parser(), argv)
    pt.ft.log_scan_backend(args)
    run(args, run_demo.demo_wiring(a.train_crop_scale, pt.wiring()))
    return time.time() - t0


def finetune(a, out: str, subset: str, start: str) -> dict:
    flags = finetune_flags(a, out, subset, start)
    print("[pretrain demo] python run_class_finetuning.py " + " ".join(flags), flush=True)
    run_demo.run_finetuning(flags, a.train_crop_scale)
    return run_demo.read_log(out)


def main(argv=None) -> dict:
    a = get_args_parser().parse_args(argv)
    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.dry_run:
        return dry_run(a)
    t0 = time.time()
    run_demo.ensure_dataset(a)
    os.makedirs(a.output_dir, exist_ok=True)
    pt_dir = os.path.join(a.output_dir, "pretrain")
    pt_s = pretrain(a, pt_dir)
    losses = [e["train_loss"] for e in _epochs(pt_dir)]
    subset = os.path.join(a.output_dir, f"train_{round(100 * a.label_fraction)}pct.csv")
    kept, total = label_subset(os.path.join(a.data_path, "train.csv"), a.label_fraction, subset)
    print(f"[pretrain demo] fine-tuning on {kept} of {total} labelled training videos ({subset})")
    ckpt = os.path.join(pt_dir, "checkpoint-latest.pth")
    res = {"pretrained": finetune(a, os.path.join(a.output_dir, "ft_pretrained"), subset, ckpt),
           "scratch": finetune(a, os.path.join(a.output_dir, "ft_scratch"), subset, "none")}
    wall = time.time() - t0
    print(f"\n[pretrain demo] done in {wall / 60:.1f} min; MaskFeat pretraining {pt_s / 60:.1f} min, "
          f"{len(losses)} epochs, loss {losses[0]:.4f} -> {losses[-1]:.4f} ({losses[-1] / losses[0]:.2f}x)")
    print(f"[pretrain demo] fine-tuning {a.model} on {kept}/{total} labels, {a.finetune_epochs} epochs:")
    print(f"  {'start':<12} {'best val top-1':>14} {'test top-1 (multi-view)':>24}")
    for name, s in res.items():
        print(f"  {name:<12} {_pct(s['best_val_acc1']):>14} {_pct(s['top1']):>24}")
    a_, b_ = res["pretrained"]["top1"], res["scratch"]["top1"]
    if a_ is not None and b_ is not None:
        verdict = "the pretrained start wins" if a_ > b_ else ("a tie" if a_ == b_ else "the scratch start wins")
        n = 4 * a.test_per_class
        print(f"[pretrain demo] {verdict} on the test set ({a_:.2f}% vs {b_:.2f}%: {abs(a_ - b_) * n / 100:.0f} of "
              f"{n} test videos; chance is 25%)")
    return {"pretrain_s": pt_s, "losses": losses, "labels": (kept, total), **res, "wall_s": wall}


def _epochs(out: str) -> list:
    import json

    return [d for d in (json.loads(x) for x in open(os.path.join(out, "log.txt")) if x.strip()) if "epoch" in d]


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


if __name__ == "__main__":
    main()
