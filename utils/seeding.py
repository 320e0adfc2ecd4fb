"""The one seed rule: every random stream of a run is a function of (--seed, epoch, rank, ...)."""
from __future__ import annotations

import random

import numpy as np
import torch

ITEM, STEP = 1, 2  # tags of the per-item (data) and per-step (process RNG) streams within an epoch


def seed_for(seed: int, epoch: int, rank: int, *more: int) -> int:
    """Every (seed, epoch, rank[, tag, position]) its own 32-bit seed (rank 1 of seed s never equals rank 0 of
    seed s+1). Used for the global RNGs, the train loader's generator, each training item (``ITEM``, its position
    in the epoch) and each training step (``STEP``, its index); so ranks draw different augmentation, a rerun draws
    the same, and a run resumed mid-epoch continues with the draws it would have made."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank), *map(int, more)]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def seed_epoch(args, loader, epoch: int, rank: int) -> None:
    """Seed the global RNGs and the train loader (sampler order, worker seeds) for ``epoch`` on ``rank``: the
    epoch's randomness depends only on (seed, epoch, rank), so a resumed run continues exactly."""
    s = seed_for(args.seed, epoch, rank)
    seed_everything(s)
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(s)
