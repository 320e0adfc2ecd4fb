"""DeepSpeed config generated from our flags (nothing hard-coded: betas, eps, clipping, ZeRO stage,
precision, lr, weight decay, batch sizes and accumulation all come from args)."""
from __future__ import annotations

import json
import os


def build_deepspeed_config(args) -> dict:
    micro = int(args.batch_size)
    accum = int(args.update_freq)
    world = int(getattr(args, "world_size", 1))
    opt = args.opt.lower()
    if opt not in ("adamw", "adam"):
        raise ValueError(f"--enable_deepspeed supports --opt adamw/adam, not {args.opt!r}")
    params = {"lr": args.lr, "weight_decay": args.weight_decay,
              "betas": list(args.opt_betas) if args.opt_betas is not None else [0.9, 0.999],
              "eps": args.opt_eps if args.opt_eps is not None else 1e-8}
    if opt == "adamw":
        params["adam_w_mode"] = True
    if not str(getattr(args, "device", "cpu")).startswith("cuda"):
        params["torch_adam"] = True  # CPU: torch's AdamW instead of compiling DeepSpeed's fused C++ Adam
    cfg = {
        "train_batch_size": micro * accum * world,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "steps_per_print": 1000,
        "wall_clock_breakdown": False,
        "optimizer": {"type": "AdamW" if opt == "adamw" else "Adam", "params": params},
        "zero_optimization": {"stage": int(args.zero_stage)},
        "zero_allow_untested_optimizer": True,
    }
    if args.clip_grad is not None and args.clip_grad > 0:
        cfg["gradient_clipping"] = float(args.clip_grad)
    amp = not getattr(args, "no_amp", False)
    if amp and getattr(args, "bf16", False):
        cfg["bf16"] = {"enabled": True}
    elif amp and str(getattr(args, "device", "cpu")).startswith("cuda"):
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                       "hysteresis": 2, "min_loss_scale": 1}
    return cfg


def write_deepspeed_config(args) -> tuple[str, dict]:
    """Build the config (every rank, identically) and write it to output_dir/deepspeed_config.json on rank 0.
    Returns (path, config); pass the dict to deepspeed.initialize so no rank waits for the file."""
    cfg = build_deepspeed_config(args)
    out = args.output_dir or "."
    path = os.path.join(out, "deepspeed_config.json")
    if int(getattr(args, "rank", os.environ.get("RANK", "0"))) == 0:
        os.makedirs(out, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(cfg, f, indent=2)
        os.replace(path + ".tmp", path)
    args.deepspeed_config = path
    return path, cfg
