"""Per-step schedules (lr and weight decay): linear warmup then half-cosine, as in MAE/VideoMAE."""
from __future__ import annotations

import math

import numpy as np


def cosine_scheduler(base_value: float, final_value: float, epochs: int, niter_per_ep: int,
                     warmup_epochs: int = 0, start_warmup_value: float = 0.0, warmup_steps: int = -1) -> np.ndarray:
    """One value per optimizer step, ``epochs * niter_per_ep`` long.

    Warmup is ``warmup_steps`` if > 0, else ``warmup_epochs * niter_per_ep`` steps, linear from
    ``start_warmup_value`` to ``base_value``; then cosine from ``base_value`` to ``final_value``.
    """
    total = int(epochs * niter_per_ep)
    if total <= 0:
        raise ValueError(f"empty schedule: epochs={epochs} x steps per epoch={niter_per_ep}")
    warmup_iters = int(warmup_steps) if warmup_steps is not None and warmup_steps > 0 else int(warmup_epochs * niter_per_ep)
    warmup_iters = min(warmup_iters, total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters, endpoint=False) if warmup_iters else np.array([])
    n = total - warmup_iters
    iters = np.arange(n)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(math.pi * iters / max(n, 1)))
    sched = np.concatenate((warmup, cosine)).astype(np.float64)
    assert len(sched) == total
    return sched


LR_SCALE_RULES = ("linear256", "deit512")


def scale_lrs(args, world_size: int) -> dict:
    """The effective ``lr`` / ``min_lr`` / ``warmup_lr`` for ``args.lr_scale_rule`` (returned, not set).

    ``linear256`` (VideoMAE / VideoMamba video fine-tuning): all three are multiplied by
    ``batch_size * update_freq * world_size * num_sample / 256``.
    ``deit512`` (DeiT / VideoMamba ImageNet ``main.py``): only ``lr`` is multiplied, by
    ``batch_size * world_size / 512``; ``min_lr`` and ``warmup_lr`` are absolute values.
    """
    rule = getattr(args, "lr_scale_rule", None) or "linear256"
    if rule == "linear256":
        f = args.batch_size * args.update_freq * world_size * getattr(args, "num_sample", 1) / 256.0
        return {"lr": args.lr * f, "min_lr": args.min_lr * f, "warmup_lr": args.warmup_lr * f, "factor": f,
                "rule": "x batch x update_freq x world x num_sample / 256 (lr, min_lr and warmup_lr)"}
    if rule == "deit512":
        f = args.batch_size * world_size / 512.0
        return {"lr": args.lr * f, "min_lr": args.min_lr, "warmup_lr": args.warmup_lr, "factor": f,
                "rule": "x batch x world / 512 (lr only; min_lr and warmup_lr unscaled, as DeiT)"}
    raise ValueError(f"--lr_scale_rule must be one of {LR_SCALE_RULES}, got {rule!r}")
