"""Frame-index sampling. All functions return a list of ``num_frames`` ints in ``[0, total_frames)``.

Sparse (TSN, the default): the video is cut into ``num_frames`` equal segments; train takes a random frame
per segment, val the segment middle, test view k of S the offset (k+1)/(S+1) into each segment
(``test_offsets='kinetics'``), or k/S (``'ssv2'``: VideoMamba's SSV2 test views, segment start and middle for S=2).
Dense (``sampling_rate > 0``): a clip of ``num_frames * sampling_rate`` frames with stride
``sampling_rate``; train starts at random, val in the centre, test at S evenly spaced starts; a clip
running past the end repeats the last frame. Videos shorter than ``num_frames`` repeat indices.
"""
from __future__ import annotations

import random
from typing import List, Optional


def _check(total_frames: int, num_frames: int) -> None:
    if total_frames < 1:
        raise ValueError(f"video has no frames (total_frames={total_frames})")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def _clamp(idx: List[int], total_frames: int) -> List[int]:
    return [min(max(int(i), 0), total_frames - 1) for i in idx]


def sparse_indices(total_frames: int, num_frames: int, mode: str, view: int = 0, num_views: int = 1,
                   rng: Optional[random.Random] = None, test_offsets: str = "kinetics") -> List[int]:
    """TSN segment sampling. ``mode``: 'train' | 'val' | 'test' (``view`` of ``num_views``)."""
    _check(total_frames, num_frames)
    seg = total_frames / num_frames
    if mode == "train":
        r = rng or random
        idx = [int(i * seg + r.random() * seg) for i in range(num_frames)]
    elif mode == "val":
        idx = [int(i * seg + seg / 2) for i in range(num_frames)]
    elif mode == "test":
        if not 0 <= view < num_views:
            raise ValueError(f"test view {view} not in [0, {num_views})")
        if test_offsets == "kinetics":
            off = (view + 1) / (num_views + 1)
        elif test_offsets == "ssv2":
            off = view / num_views
        else:
            raise ValueError(f"test_offsets must be 'kinetics' or 'ssv2', got {test_offsets!r}")
        idx = [int(i * seg + off * seg) for i in range(num_frames)]
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return _clamp(idx, total_frames)


def dense_indices(total_frames: int, num_frames: int, sampling_rate: int, mode: str, view: int = 0,
                  num_views: int = 1, rng: Optional[random.Random] = None) -> List[int]:
    """Dense clip sampling with stride ``sampling_rate``; see the module docstring."""
    _check(total_frames, num_frames)
    if sampling_rate < 1:
        raise ValueError(f"sampling_rate must be >= 1 for dense sampling, got {sampling_rate}")
    clip_len = num_frames * sampling_rate  # frames covered by the clip, as in VideoMAE
    max_start = max(total_frames - clip_len, 0)
    if mode == "train":
        start = (rng or random).randint(0, max_start)
    elif mode == "val":
        start = max_start // 2
    elif mode == "test":
        if not 0 <= view < num_views:
            raise ValueError(f"test view {view} not in [0, {num_views})")
        start = max_start // 2 if num_views == 1 else int(round(view * max_start / (num_views - 1)))
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return _clamp([start + i * sampling_rate for i in range(num_frames)], total_frames)


def sample_indices(total_frames: int, num_frames: int, sampling_rate: int, mode: str, view: int = 0,
                   num_views: int = 1, rng: Optional[random.Random] = None, test_offsets: str = "kinetics") -> List[int]:
    """Sparse when ``sampling_rate <= 0``, dense otherwise."""
    if sampling_rate and sampling_rate > 0:
        return dense_indices(total_frames, num_frames, sampling_rate, mode, view, num_views, rng)
    return sparse_indices(total_frames, num_frames, mode, view, num_views, rng, test_offsets)
