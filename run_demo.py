#!/usr/bin/env python
"""The 10-minute CPU demo: synthetic motion videos -> fine-tune videomambapro_demo from scratch -> multi-view test.

    python run_demo.py                                  # data/synthetic, output/demo, seed 0
    python run_demo.py --seed 1 --epochs 12 --output_dir output/demo_s1 --model videomamba_demo
    python run_demo.py -- --no_bwd_mask --residual_start none   # extra run_class_finetuning.py flags after --

Steps: (1) write the deterministic synthetic dataset (datasets/synthetic.py; 4 classes whose label is the
direction of motion, a single frame is at chance) unless ``--data_path`` already holds train/val/test.csv;
(2) run run_class_finetuning.py's main in this process with the demo recipe below (also in
exp/demo/videomambapro_demo.sh); it trains, validates each epoch, then runs the multi-view test
(``--test_num_segment x --test_num_crop`` views per video, softmax-averaged);
(3) print where the checkpoint, log.txt and TensorBoard files are and the final top-1/top-5 read from log.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The demo recipe (flags of run_class_finetuning.py); the demo's own flags below override the matching ones.
DEMO_FLAGS = {
    "--data_set": "video", "--nb_classes": "4",
    "--num_frames": "8", "--tubelet_size": "2", "--input_size": "64", "--short_side_size": "64",
    "--test_num_segment": "2", "--test_num_crop": "1",
    "--batch_size": "16", "--lr": "1.6e-2", "--min_lr": "1e-4", "--warmup_epochs": "1", "--weight_decay": "0.05",
    "--drop_path": "0", "--mixup": "0", "--cutmix": "0", "--smoothing": "0", "--reprob": "0", "--aa": "none",
    "--device": "cpu", "--num_workers": "1", "--print_freq": "10",
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", default=os.path.join("data", "synthetic"),
                   help="synthetic dataset folder (written when it has no train.csv)")
    p.add_argument("--output_dir", default=os.path.join("output", "demo"))
    p.add_argument("--model", default="videomambapro_demo")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--data_seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--train_per_class", type=int, default=150)
    p.add_argument("--val_per_class", type=int, default=10)
    p.add_argument("--test_per_class", type=int, default=25)
    p.add_argument("--frames", type=int, default=16, help="frames per synthetic video")
    p.add_argument("--size", type=int, default=64, help="synthetic frame size (px)")
    p.add_argument("--train_crop_scale", type=float, default=1.0,
                   help="smallest area fraction of the training random-resized crop (library default 0.08: a "
                        "crop that small often loses the moving square, and the demo budget cannot absorb that)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--keep_log", action="store_true",
                   help="append to an existing OUTPUT_DIR/log.txt instead of starting a fresh one")
    p.add_argument("extra", nargs=argparse.REMAINDER,
                   help="after --: more run_class_finetuning.py flags (they win over the demo recipe)")
    return p


def _launch_rank() -> int:
    """This process's rank under torchrun / SLURM (0 without a launcher); the process group starts later."""
    from utils.distributed import read_launch_env

    return read_launch_env()["rank"]


def ensure_dataset(a, log=print, wait_s: float = 900.0) -> str:
    """Write the synthetic dataset to ``a.data_path`` unless its lists are there. Returns the labels file.

    An existing folder is used only when its ``synthetic.json`` says it was written by this generator version
    with the parameters asked for; otherwise the run stops and says why (never trains on other data).
    Under a launcher only rank 0 writes; the other ranks wait for its ``synthetic.json`` (written last)."""
    from datasets.synthetic import META_FILE, dataset_meta

    if _launch_rank() != 0:
        t0 = time.time()
        while not os.path.isfile(os.path.join(a.data_path, META_FILE)):
            if time.time() - t0 > wait_s:
                raise SystemExit(f"[demo] waited {wait_s:.0f} s for rank 0 to write {a.data_path}")
            time.sleep(0.5)
    lists = [os.path.join(a.data_path, f"{s}.csv") for s in ("train", "val", "test")]
    params = dict(seed=a.data_seed, num_classes=4, train_per_class=a.train_per_class, val_per_class=a.val_per_class,
                  test_per_class=a.test_per_class, frames=a.frames, size=a.size)
    want = dataset_meta(**params)
    meta_path = os.path.join(a.data_path, META_FILE)
    if all(os.path.isfile(p) for p in lists):
        try:
            with open(meta_path) as f:
                have = json.load(f)
        except (OSError, ValueError) as e:
            raise SystemExit(f"[demo] {a.data_path} has data lists but no readable {META_FILE} ({e}): it was not "
                             "written by this version of the synthetic generator. Delete the folder or pass another "
                             "--data_path; the demo does not train on data it cannot vouch for.") from None
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise SystemExit(f"[demo] {meta_path} does not match this run (field: on disk vs wanted): "
                             + ", ".join(f"{k}: {h} vs {w}" for k, (h, w) in diff.items())
                             + ". Delete the folder or pass another --data_path.")
        log(f"[demo] using the dataset in {a.data_path}")
    else:
        from datasets.synthetic import make_dataset

        t0 = time.time()
        make_dataset(a.data_path, **params)
        log(f"[demo] wrote the synthetic motion dataset to {a.data_path} in {time.time() - t0:.1f}s "
            f"({4 * a.train_per_class} train / {4 * a.val_per_class} val / {4 * a.test_per_class} test videos)")
    return os.path.join(a.data_path, "labels.txt")


def finetune_flags(a) -> list:
    """The run_class_finetuning.py argv of this demo run."""
    flags = dict(DEMO_FLAGS)
    flags.update({"--model": a.model, "--epochs": str(a.epochs), "--seed": str(a.seed), "--data_path": a.data_path,
                  "--output_dir": a.output_dir, "--log_dir": os.path.join(a.output_dir, "tensorboard")})
    argv = [x for kv in flags.items() for x in kv] + ["--no_auto_resume", "--no_pin_mem"]
    extra = list(a.extra or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    return argv + extra  # argparse: the last occurrence of a flag wins


def demo_wiring(crop_scale: float, w=None):
    """run_class_finetuning's wiring (or ``w``), with the training crop scale set to (crop_scale, 1) on the train
    dataset."""
    import run_class_finetuning

    w = w or run_class_finetuning.wiring()
    base = w.build_dataset

    def build_dataset(is_train, test_mode, args):
        ds, nb = base(is_train, test_mode, args)
        tf = getattr(ds, "train_transform", None)
        if is_train and tf is not None:
            if not hasattr(tf, "scale"):
                raise RuntimeError("the training transform has no 'scale' attribute: --train_crop_scale cannot be "
                                   "applied (pass --train_crop_scale 0.08 to keep the library default)")
            tf.scale = (float(crop_scale), 1.0)
            print(f"[demo] training random-resized-crop scale {tf.scale}")
        return ds, nb

    w.build_dataset = build_dataset
    return w


def run_finetuning(flags: list, crop_scale: float = 0.08) -> dict:
    """run_class_finetuning.py with ``flags`` in this process (its parser, its engine), crop scale applied."""
    import run_class_finetuning
    from engines.runner import run
    from utils.config import parse_with_config

    args = parse_with_config(run_class_finetuning.get_args_parser(), flags)
    run_class_finetuning.log_scan_backend(args)
    return run(args, demo_wiring(crop_scale))


def read_log(output_dir: str) -> dict:
    """Summary of OUTPUT_DIR/log.txt: last epoch's stats, best val top-1, and the final test line."""
    path = os.path.join(output_dir, "log.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the run wrote no log")
    epochs, final = [], None
    with open(path) as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{no}: not a JSON line ({e}): {line.strip()[:120]}") from e
            if not isinstance(d, dict):
                raise ValueError(f"{path}:{no}: expected a JSON object, got {type(d).__name__}")
            if "Final top-1" in d:
                final = d
            elif "epoch" in d:
                epochs.append(d)
    vals = [e["val_acc1"] for e in epochs if e.get("val_acc1") is not None]
    return {"log": path, "epochs": len(epochs), "last": epochs[-1] if epochs else {},
            "best_val_acc1": max(vals) if vals else None,
            "top1": final.get("Final top-1") if final else None, "top5": final.get("Final Top-5") if final else None,
            "n_parameters": epochs[-1].get("n_parameters") if epochs else None}


def main(argv=None) -> dict:
    a = get_args_parser().parse_args(argv)
    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    rank = _launch_rank()
    labels = ensure_dataset(a)
    os.makedirs(a.output_dir, exist_ok=True)
    log_path = os.path.join(a.output_dir, "log.txt")
    if rank == 0 and os.path.isfile(log_path) and not a.keep_log:
        os.replace(log_path, log_path + ".prev")
        print(f"[demo] moved the previous run's log to {log_path}.prev")
    flags = finetune_flags(a)
    if rank == 0:
        print("[demo] python run_class_finetuning.py " + " ".join(flags), flush=True)
    run_finetuning(flags, a.train_crop_scale)
    if rank != 0:
        return {}
    s = read_log(a.output_dir)
    wall = time.time() - t0
    ckpt = os.path.join(a.output_dir, "checkpoint-best.pth")
    print("\n[demo] done in {:.0f} s ({:.1f} min)".format(wall, wall / 60))
    print(f"[demo] checkpoint:  {ckpt}  (and checkpoint-latest.pth)")
    print(f"[demo] log:         {s['log']}")
    print(f"[demo] tensorboard: tensorboard --logdir {os.path.join(a.output_dir, 'tensorboard')}")
    print(f"[demo] predictions: {os.path.join(a.output_dir, 'predictions')}")
    best = s["best_val_acc1"]
    print(f"[demo] {a.model}: best val top-1 {best if best is None else round(best, 2)}%; "
          f"final multi-view test top-1 {s['top1']}%  top-5 {s['top5']}%")
    print(f"[demo] try it on a video: python scripts/infer_video.py --ckpt {ckpt} --label_map {labels} "
          f"{os.path.join(a.data_path, 'videos', 'test_0_0000.mp4')}")
    s.update(wall_s=wall, checkpoint=ckpt, labels=labels, model=a.model, seed=a.seed, flags=flags)
    with open(os.path.join(a.output_dir, "demo_summary.json"), "w") as f:
        json.dump({k: v for k, v in s.items() if k != "last"}, f, indent=1)
    return s


if __name__ == "__main__":
    main()
