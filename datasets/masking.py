"""Token masks for masked video pretraining (MaskFeat / VideoMamba's masked alignment).

Token grid ``(T', H', W')``, frame-major as the models order their patch tokens (cls excluded): token index
``t * H'W' + h * W' + w``. A mask is a numpy bool array of length ``T'H'W'``, True = masked.

Every generator masks exactly ``num_masked(ratio, T'H'W')`` tokens per clip. It has *units* of tokens, permutes
them at random, concatenates their token lists and masks the first R tokens, so a mask is whole units plus at
most one partially masked unit (its first tokens, in the unit's own order):

    random      one token
    tube        one spatial position (h, w) through all T' frames (T' tokens, frame order)
    random_row  one row (t, h) of one frame (W' tokens; VideoMamba's Fig. 5 row masking): rows anywhere in the
                clip, so frames mask different numbers of rows
    tube_row    one row (t, h) of one frame, taken frame by frame in turns (each frame's rows in its own random
                order, the frames' turn order random): every frame masks the same number of rows, up to one,
                chosen independently per frame - VideoMamba's ``TubeRowMaskingGenerator`` ("masked rows are not
                shared between frames")

The spellings and meanings are VideoMamba's ``--mask_type`` choices; its counts are ``int(ratio x units)`` per
frame, ours the exact clip total above (equal when ``ratio x H'`` is a whole number of rows). ``attention``: the mask is drawn in the training step from a teacher's cls attention
(``attention_mask``); its ``MaskGenerator`` returns an all-False placeholder and has ``from_teacher`` True.

Randomness: ``MaskGenerator(...)(rng)`` draws from a ``np.random.Generator``, or from numpy's global RNG when
``rng`` is None. The training loader seeds numpy per item from (seed, epoch, rank, position)
(``engines.preemption.SeededItems`` / ``utils.seeding.seed_for``), so masks differ per rank, worker and epoch and
repeat on a rerun.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import torch

__all__ = ["MASK_TYPES", "MaskGenerator", "num_masked", "attention_mask"]

MASK_TYPES = ("random", "tube", "random_row", "tube_row", "attention")


def num_masked(ratio: float, tokens: int) -> int:
    """``round(ratio * tokens)``, halves rounded up, computed on the decimal value of ``ratio`` as written (so
    ``num_masked(0.7, 5) == 4`` although ``0.7 * 5`` is 3.4999... in binary floating point)."""
    return int((Decimal(repr(float(ratio))) * int(tokens)).to_integral_value(rounding=ROUND_HALF_UP))


def _check_ratio(ratio):
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {ratio!r}")
    return float(ratio)


def _units(mask_type: str, T: int, H: int, W: int) -> np.ndarray:
    """``(num_units, unit_size)`` token indices of the units of ``mask_type`` (see the module docstring)."""
    idx = np.arange(T * H * W).reshape(T, H, W)
    if mask_type == "random":
        return idx.reshape(-1, 1)
    if mask_type == "tube":
        return idx.reshape(T, H * W).T  # (H'W', T')
    if mask_type == "random_row":
        return idx.reshape(T * H, W)
    if mask_type == "tube_row":
        return idx.reshape(T, H, W)  # drawn per call: rows of each frame in turns (MaskGenerator._tube_rows)
    raise ValueError(f"unknown mask_type {mask_type!r}; choose one of {MASK_TYPES}")


class MaskGenerator:
    """``MaskGenerator(mask_type, grid=(T', H', W'), mask_ratio)``; ``gen(rng=None) -> np.ndarray`` bool
    ``(T'H'W',)``, exactly ``num_masked`` True. ``from_teacher``: True for ``'attention'`` (placeholder mask)."""

    def __init__(self, mask_type: str, grid, mask_ratio: float):
        if mask_type not in MASK_TYPES:
            raise ValueError(f"unknown mask_type {mask_type!r}; choose one of {MASK_TYPES}")
        T, H, W = (int(g) for g in grid)
        if min(T, H, W) < 1:
            raise ValueError(f"grid must be three positive sizes (T', H', W'), got {tuple(grid)}")
        self.mask_type, self.grid, self.mask_ratio = mask_type, (T, H, W), _check_ratio(mask_ratio)
        self.num_tokens = T * H * W
        self.num_masked = num_masked(self.mask_ratio, self.num_tokens)
        self.from_teacher = mask_type == "attention"
        self._units = None if self.from_teacher else _units(mask_type, T, H, W)

    def __call__(self, rng: np.random.Generator | None = None) -> np.ndarray:
        mask = np.zeros(self.num_tokens, dtype=bool)
        if self.from_teacher:
            return mask
        r = np.random if rng is None else rng
        if self.mask_type == "tube_row":
            units = self._tube_rows(r)
        else:
            units = self._units[r.permutation(len(self._units))]
        mask[units.reshape(-1)[: self.num_masked]] = True
        return mask

    def _tube_rows(self, r) -> np.ndarray:
        """``(T'H', W')`` rows in masking order: turn j takes the j-th row of every frame (each frame's rows
        permuted independently), the frames in one random order."""
        T, H, _ = self.grid
        row_order = np.argsort(r.random((T, H)), axis=1)  # (T', H'): frame t's rows, in its own random order
        frames = r.permutation(T)
        return self._units[frames[None, :], row_order[frames].T]  # (H', T', W'): [j, k] = row j of frame k

    def __repr__(self):
        return (f"MaskGenerator(type={self.mask_type}, grid={self.grid}, ratio={self.mask_ratio}, "
                f"masked={self.num_masked}/{self.num_tokens}" + (", from_teacher" if self.from_teacher else "") + ")")


def attention_mask(attn: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask ``(B, T'N)`` bool (frame-major, True = masked) from a teacher's cls attention ``attn (B, T', N)``
    (non-negative, any scale).

    Per frame the visible tokens are drawn without replacement with probability proportional to the attention
    and the rest are masked, so the most-attended tokens tend to stay visible. The draw is VideoMamba's
    ``torch.multinomial(attn, N)`` order (keep the first N_vis), done as Gumbel top-k (the same distribution,
    batched, and zero-attention tokens allowed). Each frame masks floor or ceil of ``ratio * N``; the clip total
    is exactly ``num_masked(ratio, T'N)``; the frames that get one more are random (from ``generator``, which
    must live on ``attn``'s device)."""
    ratio = _check_ratio(mask_ratio)
    if attn.dim() != 3:
        raise ValueError(f"attn must be (B, T', N), got shape {tuple(attn.shape)}")
    B, T, N = attn.shape
    total = num_masked(ratio, T * N)
    base, extra = divmod(total, T)
    dev = attn.device
    frame_rank = torch.rand(B, T, generator=generator, device=dev).argsort(dim=1).argsort(dim=1)
    n_mask = base + (frame_rank < extra).long()  # (B, T)
    u = torch.rand(B, T, N, generator=generator, device=dev).clamp_min(torch.finfo(torch.float32).tiny)
    keys = attn.float().clamp_min(0).log() - (-u.log()).log()  # log w + Gumbel
    order = keys.argsort(dim=-1, descending=True)  # the multinomial draw order
    masked_pos = torch.arange(N, device=dev) >= (N - n_mask)[..., None]  # draws past the visible ones
    mask = torch.zeros(B, T, N, dtype=torch.bool, device=dev).scatter_(-1, order, masked_pos)
    return mask.reshape(B, T * N)
