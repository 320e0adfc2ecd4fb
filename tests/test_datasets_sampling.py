"""Exact frame indices of every sampling scheme (VideoMamba's formulas; tests/test_eval_upstream.py checks the decoded
clips against a written-out reference of them)."""
import random

import pytest

from datasets.sampling import (
    SCHEMES,
    describe_convention,
    kinetics_dense_indices,
    kinetics_sparse_indices,
    sample_indices,
    scheme_for,
    ssv2_rawframe_indices,
    ssv2_video_indices,
)


def test_kinetics_sparse_val_and_test_views_exact():
    # seg = (100 - 1) / 4 = 24.75; starts round(24.75 i) = 0, 25, 50, 74 (49.5 -> 50, 74.25 -> 74)
    assert kinetics_sparse_indices(100, 4, "val") == [12, 37, 62, 86]  # + int(24.75 / 2)
    views = [kinetics_sparse_indices(100, 4, "test", view=k, num_views=3) for k in range(3)]
    assert views == [[6, 31, 56, 80], [12, 37, 62, 86], [18, 43, 68, 92]]  # + int(24.75 / 4 * (k + 1))
    assert kinetics_sparse_indices(100, 4, "test", view=0, num_views=1) == kinetics_sparse_indices(100, 4, "val")
    # the per-view offset is int() of its own product, not of the sum: 12 frames / 4 -> seg 2.75
    assert [kinetics_sparse_indices(12, 4, "test", k, 3) for k in range(3)] == [[0, 3, 6, 8], [1, 4, 7, 9],
                                                                               [2, 5, 8, 10]]


def test_kinetics_sparse_train_draws_in_rounded_segment_bounds():
    rng = random.Random(0)
    seen = [set() for _ in range(4)]
    for _ in range(300):
        idx = kinetics_sparse_indices(100, 4, "train", rng=rng)
        for j, i in enumerate(idx):
            lo, hi = round(24.75 * j), round(24.75 * (j + 1))
            assert lo <= i <= min(hi, 99)
            seen[j].add(i)
    assert all(len(s) == len(range(round(24.75 * j), round(24.75 * (j + 1)) + 1)) for j, s in enumerate(seen))


def test_kinetics_dense_exact():
    # test: start int(k * (N - L) / (S - 1)), stride rate, last frame repeated past the end
    views = [kinetics_dense_indices(100, 4, 2, "test", view=k, num_views=3) for k in range(3)]
    assert views == [[0, 2, 4, 6], [46, 48, 50, 52], [92, 94, 96, 98]]
    assert kinetics_dense_indices(100, 4, 2, "test", view=0, num_views=1) == [46, 48, 50, 52]  # upstream: 1/0
    assert kinetics_dense_indices(5, 4, 2, "test", view=1, num_views=2) == [0, 2, 4, 4]
    # val: 4 points of linspace(end - L, end) with end = (N - L) // 2, truncated and capped at end - 1
    assert kinetics_dense_indices(200, 8, 4, "val") == [52, 56, 61, 65, 70, 74, 79, 83]
    # N < 3L: the clip starts before frame 0 and its negative indices count from the end (decord's reading)
    assert kinetics_dense_indices(40, 8, 4, "val") == [12, 17, 22, 26, 31, 35, 0, 3]
    # N <= L: linspace(0, N, N // rate), then N, capped at N - 1 (train and val alike)
    assert kinetics_dense_indices(20, 8, 4, "val") == [0, 5, 10, 15, 19, 19, 19, 19]
    assert kinetics_dense_indices(20, 8, 4, "train") == [0, 5, 10, 15, 19, 19, 19, 19]
    assert kinetics_dense_indices(3, 8, 4, "val") == [2] * 8
    rng = random.Random(1)
    ends = set()
    for _ in range(300):
        idx = kinetics_dense_indices(50, 4, 3, "train", rng=rng)
        ends.add(idx[0] + 12)
        assert idx[-1] == idx[0] + 11 and idx == sorted(idx)
    assert ends == set(range(12, 50))  # end uniform in [L, N)


def test_ssv2_exact():
    # video: float segments tick = N / T
    assert ssv2_video_indices(37, 8, "val") == [2, 6, 11, 16, 20, 25, 30, 34]
    assert [ssv2_video_indices(37, 8, "test", k, 2) for k in range(2)] == [[0, 4, 9, 13, 18, 23, 27, 32],
                                                                          [2, 6, 11, 16, 20, 25, 30, 34]]
    assert ssv2_video_indices(5, 8, "train") == [0] * 8  # shorter than T: frame 0
    # raw frames: integer segments avg = N // T; [0] * (T - N) + range(N) when N < T
    assert ssv2_rawframe_indices(37, 8, "val") == [2, 6, 10, 14, 18, 22, 26, 30]
    assert ssv2_rawframe_indices(5, 8, "val") == ssv2_rawframe_indices(5, 8, "train") == [0, 0, 0, 0, 1, 2, 3, 4]
    assert ssv2_rawframe_indices(37, 8, "test", 1, 2) == ssv2_video_indices(37, 8, "test", 1, 2)
    # S = 3 (upstream's raw-frame [k::3] of the sorted views)
    assert [ssv2_rawframe_indices(30, 3, "test", k, 3) for k in range(3)] == [[0, 10, 20], [3, 13, 23], [6, 16, 26]]
    rng = random.Random(0)
    for _ in range(100):
        idx = ssv2_rawframe_indices(37, 8, "train", rng=rng)
        assert all(4 * j <= i < 4 * (j + 1) for j, i in enumerate(idx))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_every_scheme_stays_in_range(scheme, mode):
    for total in (1, 2, 3, 7, 8, 9, 31, 33, 100):
        for k in range(4):
            idx = sample_indices(total, 8, 4 if scheme == "kinetics_dense" else 0, mode, view=k, num_views=4,
                                 rng=random.Random(k), scheme=scheme)
            assert len(idx) == 8 and all(isinstance(i, int) and 0 <= i < total for i in idx), (total, k, idx)


def test_scheme_choice_and_description():
    assert scheme_for("Kinetics-400", False, 0) == scheme_for("Kinetics_sparse", False, 0) == "kinetics_sparse"
    assert scheme_for("UCF101", False, 4) == scheme_for("Kinetics", False, 4) == "kinetics_dense"
    assert scheme_for("SSV2", True, 0) == "ssv2_rawframes" and scheme_for("SSV2", False, 0) == "ssv2_video"
    assert scheme_for("rawframe", True, 0) == "kinetics_sparse"
    assert sample_indices(100, 4, 2, "val") == kinetics_dense_indices(100, 4, 2, "val")
    assert sample_indices(100, 4, 0, "val") == kinetics_sparse_indices(100, 4, "val")
    d = describe_convention("ssv2_rawframes")
    assert "SSRawFrameClsDataset" in d and "INTER_LINEAR" in d
    assert "not VideoMamba's" in describe_convention("kinetics_sparse", "antialias")


def test_bad_arguments():
    with pytest.raises(ValueError, match="no frames"):
        kinetics_sparse_indices(0, 4, "val")
    with pytest.raises(ValueError, match="view"):
        ssv2_video_indices(10, 4, "test", view=3, num_views=3)
    with pytest.raises(ValueError, match="mode"):
        kinetics_sparse_indices(10, 4, "eval")
    with pytest.raises(ValueError, match="scheme"):
        sample_indices(10, 4, 0, "val", scheme="tsn")
    with pytest.raises(ValueError, match="sampling_rate"):
        kinetics_dense_indices(10, 4, 0, "val")
