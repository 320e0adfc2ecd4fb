#!/usr/bin/env python
"""The masked-pretraining step beside the fine-tuning step at the same frames: clips/s, peak memory and ratios.

    python scripts/bench_pretrain.py                      # CUDA: VideoMambaPro-Ti, 224 px, 8 / 16 frames, bf16
    python scripts/bench_pretrain.py --device cpu         # CPU stand-in: the test size, 32 px

Rows (one training step each, forward + backward, on random clips):
- ``finetune``: the classifier (``videomambapro_S``), cross-entropy on every token's cls output;
- ``clip student``: the CLIP-aligned student (``videomambapro_S_pretrain``) on the visible tokens only, against
  fixed targets (the teacher's share excluded: what masking saves in the student);
- ``clip step``: the same with the frozen teacher's forward included (CLIP ViT-B/16 with random weights on CUDA,
  a ViT-Ti on the CPU: nothing is downloaded), as a run pays it;
- ``maskfeat``: the MaskFeat student (every token, mask token, HOG targets).
The ``x finetune`` column is the step time relative to fine-tuning (lower is cheaper); with --mask_ratio 0.8 the
student's step should cost well under half the fine-tuning step (issue 19).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _bench  # noqa: E402  (this folder)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default=None, help="tiny|small|middle|demo|test (default: tiny on CUDA, test on CPU)")
    p.add_argument("--frames", nargs="+", type=int, default=None, help="default 8 16 on CUDA, 8 on CPU")
    p.add_argument("--img_size", type=int, default=None, help="default 224 on CUDA, 32 on CPU")
    p.add_argument("--batch_size", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    p.add_argument("--mask_ratio", type=float, default=0.8)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no_bf16", action="store_true", help="fp32 (CUDA default: bf16 autocast; CPU: fp32)")
    p.add_argument("--mem_worker", nargs=2, metavar=("STEP", "FRAMES"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _steps(args, frames, device):
    """{row name: a zero-argument training step} at ``frames``."""
    import timm

    import models  # noqa: F401  (registers the architectures)
    from datasets.masking import MaskGenerator
    from engines.masked_pretrain import ClipDistillStep, MaskFeatStep
    from models.clip_teacher import build_clip_teacher
    from models.videomamba_pretrain import pretrain_loss

    B, S, img = args.batch_size, args.size, args.img_size
    x = torch.randn(B, 3, frames, img, img, device=device)
    side = img // 16
    gen = MaskGenerator("tube", (frames, side, side), args.mask_ratio)
    mask = torch.from_numpy(__import__("numpy").stack([gen() for _ in range(B)])).to(device)
    cpu = device.type == "cpu"
    teacher = build_clip_teacher("vit_tiny_patch16_224" if cpu else "clip_b16", None, num_frames=frames,
                                 img_size=img, return_cls=True, pretrained=False,
                                 dtype=torch.float32 if cpu or args.no_bf16 else torch.bfloat16).to(device)
    C = teacher.output_dim
    fine = timm.create_model(f"videomambapro_{S}", num_frames=frames, img_size=img, num_classes=400).to(device)
    student = timm.create_model(f"videomambapro_{S}_pretrain", num_frames=frames, img_size=img,
                                clip_output_dim=C).to(device)
    maskfeat = timm.create_model(f"videomambapro_{S}_maskfeat", num_frames=frames, img_size=img).to(device)
    y = torch.randint(0, 400, (B,), device=device)
    n_vis = int((~mask[0]).sum()) + 1
    target = torch.nn.functional.normalize(torch.randn(1, B, n_vis, C, device=device), dim=-1)
    clip_step = ClipDistillStep(teacher, mask_type="tube", mask_ratio=args.mask_ratio, return_cls=True)
    mf_step = MaskFeatStep(maskfeat, device)
    return {
        "finetune": lambda: torch.nn.functional.cross_entropy(fine(x).float(), y),
        "clip student": lambda: pretrain_loss(student(x, mask).float(), target, "l2"),
        "clip step": lambda: clip_step(student, x, mask),
        "maskfeat": lambda: mf_step(maskfeat, x, mask),
    }, {"tokens": mask.shape[1] + 1, "visible": n_vis}


def _train_step(fn, bf16, device):
    def one():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = fn()
        loss.backward()
    return one


def _cpu_memory(step, frames, argv):
    """Peak RSS growth (MiB) of one step, in a fresh process with a fixed mmap threshold (freed memory goes back to
    the system, so each row's peak is its own)."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--device", "cpu", "--mem_worker", step, str(frames)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_bench.cpu_malloc_env())
    if p.returncode != 0:
        raise RuntimeError(f"memory worker failed for {step} at {frames} frames:\n{p.stderr[-2000:]}")
    return float(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    args.size = args.size or ("test" if cpu else "tiny")
    args.img_size = args.img_size or (32 if cpu else 224)
    args.batch_size = args.batch_size or (2 if cpu else 8)
    frames_list = args.frames or ([8] if cpu else [8, 16])
    bf16 = not cpu and not args.no_bf16
    if args.mem_worker:  # one CPU memory measurement, printed as the last line
        name, frames = args.mem_worker[0], int(args.mem_worker[1])
        one = _train_step(_steps(args, frames, device)[0][name], bf16, device)
        one()  # lazy initialisation outside the measured step
        rss0 = (_bench.reset_rss_peak(), _bench.proc_status_mb("VmRSS"))[1]
        one()
        print(_bench.proc_status_mb("VmHWM") - rss0)
        return
    timer = _bench.Timer(device)
    print(f"device {device}, size {args.size}, img {args.img_size}, batch {args.batch_size}, mask ratio "
          f"{args.mask_ratio}, bf16 {bf16}; time and memory ratios vs the fine-tuning step")
    mem_name = "peak MiB" if not cpu else "peak RSS +MiB"
    print(f"{'frames':>6} {'step':<13} {'tokens':>7} | {'clips/s':>8} {'x finetune':>10} | {mem_name:>13} "
          f"{'x finetune':>10}")
    for frames in frames_list:
        steps, info = _steps(args, frames, device)
        rows = {}
        for name, fn in steps.items():
            if not cpu:
                _bench.reset_peak(device)
            sec = timer.measure(_train_step(fn, bf16, device), args.warmup, args.iters)
            mem = _cpu_memory(name, frames, argv) if cpu else _bench.peak_mib(device)
            rows[name] = (sec, mem)
        t0, m0 = rows["finetune"]
        for name, (sec, mem) in rows.items():
            tokens = info["visible"] if name.startswith("clip") else info["tokens"]
            print(f"{frames:>6} {name:<13} {tokens:>7} | {args.batch_size / sec:>8.2f} {sec / t0:>10.2f} | "
                  f"{mem:>13.0f} {mem / m0 if m0 else float('nan'):>10.2f}", flush=True)


if __name__ == "__main__":
    main()
