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


def scaled_lr(lr: float, batch_size: int, update_freq: int, world_size: int, num_sample: int = 1) -> float:
    """Linear LR scaling rule: ``lr * batch_size * update_freq * world_size * num_sample / 256``."""
    return lr * batch_size * update_freq * world_size * num_sample / 256.0
