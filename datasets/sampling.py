"""Frame-index sampling: VideoMamba's formulas, one scheme per upstream dataset class.

Every function returns ``num_frames`` ints in ``[0, total_frames)``. ``mode`` is 'train' | 'val' | 'test'; test view
``view`` of ``num_views`` (= --test_num_segment). Random draws come from ``rng`` (a ``random.Random``; the global
``random`` when None), one draw where upstream makes one, so that a run samples the distribution upstream trained on.

Schemes (``SCHEMES``; :func:`scheme_for` picks one from the dataset name, the list kind and --sampling_rate):

- ``kinetics_sparse`` -- VideoMamba's ``VideoClsDataset_sparse._get_seq_frames`` (datasets/kinetics_sparse.py; also
  its LVU / COIN / Breakfast class on a whole video): ``T`` segments of ``seg = (N - 1) / T`` frames; segment ``i``
  starts at ``round(seg * i)``. Train: a random frame in ``[round(seg * i), round(seg * (i + 1))]``; val:
  ``start + int(seg / 2 * 1)``; test view ``k`` of ``S``: ``start + int(seg / (S + 1) * (k + 1))``; all capped at
  ``N - 1``.
- ``kinetics_dense`` -- ``VideoClsDataset.loadvideo_decord`` (datasets/kinetics.py), clips of ``L = T * rate`` frames.
  Test view ``k``: ``range(int(k * step), ..., rate)`` with ``step = max((N - L) / (S - 1), 0)``, the last frame
  repeated past the end (``S = 1``, where upstream divides by zero: the centred clip). Train / val (``N > L``): ``T``
  points of ``linspace(end - L, end, T)`` truncated and capped at ``end - 1``, ``end`` random in ``[L, N)`` (train)
  or ``(N - L) // 2`` (val: so the clip starts at ``(N - L) // 2 - L``; its negative indices count from the end of
  the video, as decord reads them upstream); ``N <= L``: ``linspace(0, N, N // rate)`` then ``N``, capped at
  ``N - 1``.
- ``ssv2_video`` -- ``SSVideoClsDataset`` (datasets/ssv2.py), ``tick = N / T``. Val: ``int(tick / 2 + tick * i)``;
  test view ``k`` of ``S``: ``int(k * tick / S + tick * i)`` (its ``[chunk_nb::2]`` of the sorted starts and middles
  for ``S = 2``: segment starts, then middles); train: ``i * (N // T) + randint(N // T)``, all frame 0 when
  ``N < T``.
- ``ssv2_rawframes`` -- ``SSRawFrameClsDataset.load_frame``: integer segments ``avg = N // T``. Val:
  ``i * avg + avg // 2``; train: ``i * avg + randint(avg)``; ``N < T``: ``[0] * (T - N) + range(N)``; test as
  ``ssv2_video`` (its ``[chunk_nb::test_num_segment]`` of the sorted views).
- ``lvu_trimmed`` -- VideoMamba's ``LVU`` class (datasets/lvu.py), which its build.py uses for ``--data_set LVU``,
  ``COIN`` and ``Breakfast``, on ``video_path label duration`` lists (duration in seconds). Each video becomes
  windows (:func:`trimmed_windows`, one item each in train, val and test): a video shorter than ``--trimmed`` seconds
  is one window ``(0, duration)``; a longer one has a window starting every ``--time_stride`` seconds
  (``range(0, int(duration), time_stride)``), ``trimmed`` seconds long, the last ones cut at ``duration`` while at
  least ``trimmed / 2`` seconds remain and dropped otherwise. A window's seconds become frames ``int(start * fps)``,
  ``int(end * fps)`` (decord's average fps), clamped: ``s = max(0, min(s, N - 1))``, ``e = max(s, min(e, N - 1))``;
  then the ``kinetics_sparse`` formula on frames ``s..e``: ``seg = (e - s) / T``, segment ``i`` starts at
  ``s + round(seg * i)``; train a random frame up to ``s + round(seg * (i + 1))``, val ``+ int(seg / 2)``, test
  view ``k`` of ``S`` ``+ int(seg / (S + 1) * (k + 1))``, all capped at ``e`` (:func:`lvu_indices`). On the whole
  video (``s = 0``, ``e = N - 1``) it is ``kinetics_sparse``.
"""
from __future__ import annotations

import random
from typing import List, Optional, Tuple

import numpy as np

SCHEMES = ("kinetics_sparse", "kinetics_dense", "ssv2_video", "ssv2_rawframes", "lvu_trimmed")

# The --data_set names VideoMamba's build.py reads with its LVU class (long videos cut into --trimmed windows), and
# its run_class_finetuning.py defaults of --trimmed / --time_stride (seconds).
LONG_VIDEO_DATA_SETS = ("LVU", "COIN", "Breakfast")
TRIMMED_DEFAULT = 60
TIME_STRIDE_DEFAULT = 16

# The upstream code each scheme reproduces (for logs, eval_zoo and the README table).
UPSTREAM_FUNCTIONS = {
    "kinetics_sparse": "VideoClsDataset_sparse._get_seq_frames (kinetics_sparse.py)",
    "kinetics_dense": "VideoClsDataset.loadvideo_decord (kinetics.py)",
    "ssv2_video": "SSVideoClsDataset.loadvideo_decord + __getitem__ (ssv2.py)",
    "ssv2_rawframes": "SSRawFrameClsDataset.load_frame + __getitem__ (ssv2.py)",
    "lvu_trimmed": "LVU.__init__ windows + LVU._get_seq_frames (lvu.py)",
}


def scheme_for(data_set: str, rawframes: bool, sampling_rate: int, durations: bool = False) -> str:
    """The sampling scheme VideoMamba uses for ``data_set``: its LVU class for LVU / COIN / Breakfast videos listed
    with their duration (``durations``: ``video_path label duration`` rows; it ignores ``sampling_rate``, as
    upstream), dense clips when ``sampling_rate > 0``, its SSV2 classes for SSV2 (raw frames or videos), its sparse
    Kinetics class for everything else (LVU / COIN / Breakfast ``video_path label`` lists: whole videos)."""
    if data_set in LONG_VIDEO_DATA_SETS and durations and not rawframes:
        return "lvu_trimmed"
    if sampling_rate and sampling_rate > 0:
        return "kinetics_dense"
    if data_set == "SSV2":
        return "ssv2_rawframes" if rawframes else "ssv2_video"
    return "kinetics_sparse"


def describe_convention(scheme: str, resize_mode: str = "videomamba", sampling_rate: int = 0,
                        trimmed: Optional[int] = None, time_stride: Optional[int] = None) -> str:
    """One line naming the convention: the upstream sampling function, the resize and the crops."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sampling scheme {scheme!r}; choose one of {SCHEMES}")
    rate = f", rate {sampling_rate}" if scheme == "kinetics_dense" else ""
    if scheme == "lvu_trimmed":
        rate = (f", windows of --trimmed {trimmed or TRIMMED_DEFAULT} s every --time_stride "
                f"{time_stride or TIME_STRIDE_DEFAULT} s")
    resize = ("OpenCV INTER_LINEAR" if resize_mode == "videomamba"
              else "antialiased bilinear (--resize_mode antialias, not VideoMamba's)")
    return (f"VideoMamba {scheme}{rate}: frames as {UPSTREAM_FUNCTIONS[scheme]}; short side resized with {resize} "
            f"to int(S * long / short); val centre crop int(round(slack / 2)), test crops int(k * step)")


def _check(total_frames: int, num_frames: int, mode: str, view: int, num_views: int) -> None:
    if total_frames < 1:
        raise ValueError(f"video has no frames (total_frames={total_frames})")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if mode not in ("train", "val", "test"):
        raise ValueError(f"unknown sampling mode {mode!r}")
    if mode == "test" and not 0 <= view < num_views:
        raise ValueError(f"test view {view} not in [0, {num_views})")


def kinetics_sparse_indices(total_frames: int, num_frames: int, mode: str, view: int = 0, num_views: int = 1,
                            rng: Optional[random.Random] = None) -> List[int]:
    """``VideoClsDataset_sparse`` sampling; see the module docstring."""
    _check(total_frames, num_frames, mode, view, num_views)
    seg = max(0.0, float(total_frames - 1) / num_frames)
    last = total_frames - 1
    if mode == "train":
        r = rng or random
        return [min(r.randint(int(round(seg * i)), int(round(seg * (i + 1)))), last) for i in range(num_frames)]
    if mode == "val":
        view, num_views = 0, 1
    step = seg / (num_views + 1)
    return [min(int(round(seg * i)) + int(step * (view + 1)), last) for i in range(num_frames)]


def kinetics_dense_indices(total_frames: int, num_frames: int, sampling_rate: int, mode: str, view: int = 0,
                           num_views: int = 1, rng: Optional[random.Random] = None) -> List[int]:
    """``VideoClsDataset`` (dense clip) sampling; see the module docstring."""
    _check(total_frames, num_frames, mode, view, num_views)
    if sampling_rate < 1:
        raise ValueError(f"sampling_rate must be >= 1 for dense sampling, got {sampling_rate}")
    n, clip_len = total_frames, int(num_frames * sampling_rate)
    if mode == "test":
        if num_views == 1:
            start = max(n - clip_len, 0) // 2
        else:
            start = int(view * max(1.0 * (n - clip_len) / (num_views - 1), 0))
        idx = list(range(start, min(start + clip_len, n), sampling_rate))
        return idx + [idx[-1]] * (num_frames - len(idx))
    if n <= clip_len:
        k = n // sampling_rate
        pts = np.concatenate((np.linspace(0, n, num=k), np.ones(num_frames - k) * n))
        return [int(i) for i in np.clip(pts, 0, n - 1).astype(np.int64)]
    end = (rng or random).randrange(clip_len, n) if mode == "train" else (n - clip_len) // 2
    start = end - clip_len
    pts = np.clip(np.linspace(start, end, num=num_frames), start, end - 1).astype(np.int64)
    return [int(i) + n if i < 0 else int(i) for i in pts]  # negative: from the end of the video, as decord reads it


def _ssv2_test(total_frames: int, num_frames: int, view: int, num_views: int) -> List[int]:
    tick = total_frames / float(num_frames)
    return [int(view * tick / num_views + tick * i) for i in range(num_frames)]


def ssv2_video_indices(total_frames: int, num_frames: int, mode: str, view: int = 0, num_views: int = 1,
                       rng: Optional[random.Random] = None) -> List[int]:
    """``SSVideoClsDataset`` sampling; see the module docstring."""
    _check(total_frames, num_frames, mode, view, num_views)
    if mode == "test":
        return _ssv2_test(total_frames, num_frames, view, num_views)
    if mode == "val":
        tick = total_frames / float(num_frames)
        return [int(tick / 2.0 + tick * i) for i in range(num_frames)]
    avg = total_frames // num_frames
    if avg == 0:
        return [0] * num_frames
    r = rng or random
    return [i * avg + r.randrange(avg) for i in range(num_frames)]


def ssv2_rawframe_indices(total_frames: int, num_frames: int, mode: str, view: int = 0, num_views: int = 1,
                          rng: Optional[random.Random] = None) -> List[int]:
    """``SSRawFrameClsDataset`` sampling; see the module docstring."""
    _check(total_frames, num_frames, mode, view, num_views)
    if mode == "test":
        return _ssv2_test(total_frames, num_frames, view, num_views)
    avg = total_frames // num_frames
    if avg == 0:
        return [0] * (num_frames - total_frames) + list(range(total_frames))
    if mode == "val":
        return [i * avg + avg // 2 for i in range(num_frames)]
    r = rng or random
    return [i * avg + r.randrange(avg) for i in range(num_frames)]


def trimmed_windows(duration: float, trimmed: int = TRIMMED_DEFAULT,
                    time_stride: int = TIME_STRIDE_DEFAULT) -> List[Tuple[float, float]]:
    """VideoMamba's ``LVU.__init__`` windows of a ``duration``-second video: ``[(start, end)]`` in seconds; see the
    module docstring (``lvu_trimmed``)."""
    if duration < 0:
        raise ValueError(f"video duration must be >= 0 seconds, got {duration}")
    if trimmed < 1 or time_stride < 1:
        raise ValueError(f"--trimmed and --time_stride must be >= 1 second, got {trimmed}, {time_stride}")
    if duration < trimmed:
        return [(0, duration)]
    windows = []
    for start in range(0, int(duration), time_stride):
        end = start + trimmed
        if end > duration:
            if duration - start < trimmed / 2:
                continue
            end = duration
        windows.append((start, end))
    return windows


def window_frames(start: float, end: float, fps: float) -> Tuple[int, int]:
    """A window's seconds as frame numbers, as ``LVU.loadvideo_decord``: ``int(start * fps), int(end * fps)``."""
    return int(start * fps), int(end * fps)


def lvu_indices(total_frames: int, num_frames: int, mode: str, view: int = 0, num_views: int = 1,
                rng: Optional[random.Random] = None, window: Optional[Tuple[int, int]] = None) -> List[int]:
    """``LVU._get_seq_frames`` on the frames ``window = (first, last)`` (default: the whole video), clamped to the
    video; see the module docstring."""
    _check(total_frames, num_frames, mode, view, num_views)
    first, last = window if window is not None else (0, total_frames - 1)
    first = max(0, min(int(first), total_frames - 1))
    last = max(first, min(int(last), total_frames - 1))
    seg = max(0.0, float(last - first) / num_frames)
    if mode == "train":
        r = rng or random
        return [min(r.randint(first + int(round(seg * i)), first + int(round(seg * (i + 1)))), last)
                for i in range(num_frames)]
    if mode == "val":
        view, num_views = 0, 1
    step = seg / (num_views + 1)
    return [min(first + int(round(seg * i)) + int(step * (view + 1)), last) for i in range(num_frames)]


# The names of the first versions (Kinetics conventions), kept for callers.
sparse_indices = kinetics_sparse_indices
dense_indices = kinetics_dense_indices


def sample_indices(total_frames: int, num_frames: int, sampling_rate: int, mode: str, view: int = 0,
                   num_views: int = 1, rng: Optional[random.Random] = None, scheme: Optional[str] = None,
                   window: Optional[Tuple[int, int]] = None) -> List[int]:
    """Indices by ``scheme`` (default: ``kinetics_dense`` when ``sampling_rate > 0``, else ``kinetics_sparse``);
    ``window``: the frames ``(first, last)`` of an ``lvu_trimmed`` window (other schemes take none)."""
    if window is not None and scheme != "lvu_trimmed":
        raise ValueError(f"a frame window applies to the lvu_trimmed scheme only, not {scheme!r}")
    if scheme == "lvu_trimmed":
        return lvu_indices(total_frames, num_frames, mode, view, num_views, rng, window)
    if scheme is None:
        scheme = scheme_for("", False, sampling_rate)
    if scheme == "kinetics_dense":
        return kinetics_dense_indices(total_frames, num_frames, sampling_rate, mode, view, num_views, rng)
    if scheme == "kinetics_sparse":
        return kinetics_sparse_indices(total_frames, num_frames, mode, view, num_views, rng)
    if scheme == "ssv2_video":
        return ssv2_video_indices(total_frames, num_frames, mode, view, num_views, rng)
    if scheme == "ssv2_rawframes":
        return ssv2_rawframe_indices(total_frames, num_frames, mode, view, num_views, rng)
    raise ValueError(f"unknown sampling scheme {scheme!r}; choose one of {SCHEMES}")
