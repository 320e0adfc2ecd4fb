"""datasets/masking.py: exact masked counts, the unit structure of each mask type, attention masks, the seed rule."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from datasets.masking import MASK_TYPES, MaskGenerator, attention_mask, num_masked
from engines.preemption import PositionSampler, SeededItems
from utils.seeding import ITEM, seed_for

GRIDS = [(8, 14, 14), (4, 2, 2), (3, 5, 7), (1, 3, 3), (5, 1, 4), (2, 7, 1)]
RATIOS = [0.0, 0.1, 0.5, 0.7, 0.75, 0.9, 0.99]
DRAWN = [t for t in MASK_TYPES if t != "attention"]


def test_num_masked_half_up():
    assert num_masked(0.5, 5) == 3 and num_masked(0.7, 5) == 4 and num_masked(0.75, 1568) == 1176
    assert num_masked(0.0, 10) == 0 and num_masked(0.25, 2) == 1 and num_masked(0.2, 2) == 0


@pytest.mark.parametrize("mask_type", DRAWN)
@pytest.mark.parametrize("grid", GRIDS)
def test_exact_count(mask_type, grid):
    rng = np.random.default_rng(0)
    n = int(np.prod(grid))
    for ratio in RATIOS:
        gen = MaskGenerator(mask_type, grid, ratio)
        for _ in range(3):
            m = gen(rng)
            assert m.dtype == bool and m.shape == (n,)
            assert m.sum() == num_masked(ratio, n) == gen.num_masked


def _partial_units(units):
    """(number of fully masked units, number of partially masked units) of a (num_units, unit_size) bool array."""
    s = units.sum(1)
    return int((s == units.shape[1]).sum()), int(((s > 0) & (s < units.shape[1])).sum())


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75, 0.9])
def test_unit_structure(grid, ratio):
    T, H, W = grid
    rng = np.random.default_rng(1)
    n = T * H * W
    for _ in range(5):
        tube = MaskGenerator("tube", grid, ratio)(rng).reshape(T, H * W)
        full, part = _partial_units(tube.T)
        assert part <= 1 and full == num_masked(ratio, n) // T
        if part == 0:  # identical in every frame
            assert (tube == tube[:1]).all()
        else:  # identical except one partial tube, masked in its first frames
            col = np.flatnonzero((tube.sum(0) > 0) & (tube.sum(0) < T))[0]
            k = tube[:, col].sum()
            assert tube[:k, col].all() and not tube[k:, col].any()
            others = np.delete(tube, col, axis=1)
            assert (others == others[:1]).all()
        rows = MaskGenerator("random_row", grid, ratio)(rng).reshape(T * H, W)
        full, part = _partial_units(rows)
        assert part <= 1 and full == num_masked(ratio, n) // W
        # tube_row (VideoMamba's): whole rows, chosen per frame, every frame the same number of rows up to one
        trow = MaskGenerator("tube_row", grid, ratio)(rng).reshape(T, H, W)
        full, part = _partial_units(trow.reshape(T * H, W))
        assert part <= 1 and full == num_masked(ratio, n) // W
        per_frame = (trow.sum(2) == W).sum(1)  # whole rows per frame
        assert per_frame.max() - per_frame.min() <= 1, per_frame


def test_tube_rows_are_drawn_per_frame():
    """VideoMamba's tube_row: the masked rows are not shared between frames (they are for ``tube``'s positions)."""
    gen = MaskGenerator("tube_row", (4, 8, 3), 0.5)
    rng = np.random.default_rng(0)
    shared = [len({tuple(np.flatnonzero(f.all(1))) for f in gen(rng).reshape(4, 8, 3)}) for _ in range(20)]
    assert max(shared) > 1  # some clip has frames with different masked rows
    assert all((gen(rng).reshape(4, 8, 3).all(2).sum(1) == 4).all() for _ in range(20))  # 4 of 8 rows per frame


def test_random_masks_cover_every_token():
    gen = MaskGenerator("random", (2, 3, 3), 0.5)
    hits = sum(gen(np.random.default_rng(s)).astype(int) for s in range(200))
    assert (hits > 60).all() and (hits < 140).all()


def test_attention_placeholder_and_errors():
    gen = MaskGenerator("attention", (4, 3, 3), 0.8)
    assert gen.from_teacher and not gen().any() and gen().shape == (36,)
    assert not MaskGenerator("tube", (4, 3, 3), 0.8).from_teacher
    assert "tube" in repr(MaskGenerator("tube", (4, 3, 3), 0.8)) and "\n" not in repr(gen)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            MaskGenerator("random", (2, 2, 2), bad)
    with pytest.raises(ValueError, match="tube_row"):
        MaskGenerator("blocks", (2, 2, 2), 0.5)


@pytest.mark.parametrize("shape", [(2, 4, 9), (3, 5, 7), (1, 1, 6), (4, 8, 16)])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.8, 0.9])
def test_attention_mask_exact_counts(shape, ratio):
    B, T, N = shape
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(shape, generator=g)
    attn[..., 0] = 0  # zero attention is allowed
    m = attention_mask(attn, ratio, generator=g)
    assert m.dtype == torch.bool and m.shape == (B, T * N)
    assert (m.sum(1) == num_masked(ratio, T * N)).all()
    per_frame = m.reshape(B, T, N).sum(-1)
    lo = int(np.floor(ratio * N + 1e-9))
    assert ((per_frame == lo) | (per_frame == lo + 1)).all()
    assert per_frame.max() - per_frame.min() <= 1


def test_attention_mask_prefers_attended_tokens():
    g = torch.Generator().manual_seed(0)
    B, T, N = 256, 2, 16
    attn = torch.linspace(0.01, 1.0, N).expand(B, T, N).contiguous()
    attn[..., -1] = 20.0  # one dominant token
    m = attention_mask(attn, 0.75, generator=g).reshape(B, T, N).float()
    rate = m.mean(dim=(0, 1))  # masking frequency per token
    assert rate[-1] < 0.05  # the dominant token stays visible almost always
    assert rate[:4].mean() > rate[-5:-1].mean() + 0.1  # low attention is masked more often
    assert torch.equal(attention_mask(attn, 0.75, torch.Generator().manual_seed(3)),
                       attention_mask(attn, 0.75, torch.Generator().manual_seed(3)))


class _Masks(Dataset):
    """Each item: one mask from numpy's global RNG (as a dataset's __getitem__ in a loader worker)."""

    def __init__(self, n):
        self.n, self.gen = n, MaskGenerator("tube", (4, 7, 7), 0.75)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.gen()


def _epoch(seed, epoch, rank, n=6):
    ds, sampler = SeededItems(_Masks(n)), PositionSampler(list(range(n)), seed, rank)
    sampler.set_epoch(epoch)
    return [ds[key] for key in sampler]


def test_seed_rule_through_seeded_items():
    a = _epoch(0, 0, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, _epoch(0, 0, 0)))  # a rerun draws the same
    assert all(not np.array_equal(x, y) for x, y in zip(a, _epoch(0, 0, 1)))  # another rank: others
    assert all(not np.array_equal(x, y) for x, y in zip(a, _epoch(0, 1, 0)))  # another epoch: others
    assert len({x.tobytes() for x in a}) == len(a)  # positions differ within an epoch
    ds = SeededItems(_Masks(1))
    assert np.array_equal(ds[(seed_for(0, 0, 0, ITEM, 2), 0)], a[2])  # the key is seed_for(seed, epoch, rank, ITEM, pos)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attention_mask_on_cuda():
    attn = torch.rand(3, 4, 196, device="cuda")
    m = attention_mask(attn, 0.8, generator=torch.Generator(device="cuda").manual_seed(0))
    assert m.device.type == "cuda" and (m.sum(1) == num_masked(0.8, 4 * 196)).all()
