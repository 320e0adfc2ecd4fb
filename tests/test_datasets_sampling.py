"""Exact frame indices of every sampling mode."""
import random

import pytest

from datasets import dense_indices, sample_indices, sparse_indices


def test_sparse_val_and_test_views_exact():
    assert sparse_indices(100, 4, "val") == [12, 37, 62, 87]
    views = [sparse_indices(100, 4, "test", view=k, num_views=3) for k in range(3)]
    assert views == [[6, 31, 56, 81], [12, 37, 62, 87], [18, 43, 68, 93]]
    assert sparse_indices(100, 4, "test", view=0, num_views=1) == sparse_indices(100, 4, "val")


@pytest.mark.parametrize("total,frames,views", [(100, 4, 5), (37, 8, 2), (64, 16, 3)])
def test_sparse_test_views_distinct_and_covering(total, frames, views):
    all_views = [sparse_indices(total, frames, "test", view=k, num_views=views) for k in range(views)]
    assert len({tuple(v) for v in all_views}) == views
    for v in all_views:
        assert v == sorted(v) and all(0 <= i < total for i in v)
        seg = total / frames
        assert all(int(j * seg) <= i < int((j + 1) * seg) + 1 for j, i in enumerate(v))  # one per segment
    flat = [i for v in all_views for i in v]
    assert min(flat) < total / frames and max(flat) >= total - total / frames  # first and last segment used


def test_sparse_train_one_random_frame_per_segment():
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        idx = sparse_indices(100, 4, "train", rng=rng)
        assert all(25 * j <= i < 25 * (j + 1) for j, i in enumerate(idx))
        seen.add(idx[0])
    assert len(seen) > 15  # actually random within the segment


def test_dense_exact_and_padding():
    assert dense_indices(100, 4, 2, "val") == [46, 48, 50, 52]
    views = [dense_indices(100, 4, 2, "test", view=k, num_views=3) for k in range(3)]
    assert views == [[0, 2, 4, 6], [46, 48, 50, 52], [92, 94, 96, 98]]
    assert dense_indices(100, 4, 2, "test", view=0, num_views=1) == [46, 48, 50, 52]
    assert dense_indices(5, 4, 2, "val") == [0, 2, 4, 4]  # short video: last frame repeated
    rng = random.Random(1)
    starts = {dense_indices(20, 4, 3, "train", rng=rng)[0] for _ in range(200)}
    assert starts == set(range(0, 20 - 12 + 1))
    assert sample_indices(100, 4, 2, "val") == dense_indices(100, 4, 2, "val")
    assert sample_indices(100, 4, 0, "val") == sparse_indices(100, 4, "val")


@pytest.mark.parametrize("rate", [0, 4])
@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_short_videos_stay_in_range(rate, mode):
    for total in (1, 2, 3, 7):
        for k in range(4):
            idx = sample_indices(total, 8, rate, mode, view=k, num_views=4)
            assert len(idx) == 8 and all(0 <= i < total for i in idx) and idx == sorted(idx)
    assert sparse_indices(3, 4, "val") == [0, 1, 1, 2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="no frames"):
        sparse_indices(0, 4, "val")
    with pytest.raises(ValueError, match="view"):
        sparse_indices(10, 4, "test", view=3, num_views=3)
    with pytest.raises(ValueError, match="mode"):
        sparse_indices(10, 4, "eval")
