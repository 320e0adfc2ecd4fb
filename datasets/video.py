"""Video classification datasets: VideoClsDataset (mp4 etc. via decord / PyAV) and RawFrameClsDataset.

Items (see the data contract):
    train -> (clip, label, index, bad)                   clip float32 (3, T, S, S)
             with num_sample > 1: ([clip]*k, [label]*k, [index]*k, bad) -> multiple_samples_collate
    val   -> (clip, label, video_id, ok)
    test  -> (clip, label, video_id, chunk_nb, split_nb, ok)   len = videos x test_num_segment x test_num_crop

LongVideoClsDataset (LVU / COIN / Breakfast ``video_path label duration`` lists): every item is a window of a video
(VideoMamba's ``--trimmed`` / ``--time_stride``; datasets.sampling.trimmed_windows), so len counts windows; a test
item's ``chunk_nb`` is ``window * test_num_segment + view``, so the merge averages every window's views per video.

Unreadable samples: in train they are replaced by a random other sample; ``bad`` names the files this item
replaced, newline-joined ('' when none), so the engine can count distinct files over the whole run (all workers
and ranks) against --max_bad_samples and log each once. A worker that alone has seen more than
``max_bad_samples`` distinct unreadable files raises TooManyBadSamplesError (the run's set is at least as large).
In val/test they are never replaced: UnreadableEvalSampleError naming the file and list line, or with
``skip_bad_test`` a zero clip and ok=False (reported by name and counted as a miss by the engine).
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from functools import partial
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.errors import TooManyBadSamplesError, UnreadableEvalSampleError

from .lists import Sample, read_list
from .sampling import (
    SCHEMES,
    TIME_STRIDE_DEFAULT,
    TRIMMED_DEFAULT,
    describe_convention,
    sample_indices,
    scheme_for,
    trimmed_windows,
    window_frames,
)
from .transforms import RESIZE_MODES, VideoTrainTransform, video_eval_transform
from .video_io import VideoReadError, open_video, read_rawframes, read_video_frames

logger = logging.getLogger(__name__)

MODES = ("train", "validation", "test")


def _video_id(rel_path: str) -> str:
    """The id written to prediction files: the path as listed, whitespace replaced so ids stay one token."""
    return re.sub(r"\s", "_", rel_path)


class _ClipDataset(Dataset):
    kind = "video"

    def __init__(self, list_file: str, mode: str = "train", *, data_root: str = "", split: str = " ",
                 nb_classes: Optional[int] = None, num_frames: int = 16, sampling_rate: int = 0,
                 input_size: int = 224, short_side_size: int = 224, test_num_segment: int = 5,
                 test_num_crop: int = 3, aa: Optional[str] = "rand-m7-n4-mstd0.5-inc1", reprob: float = 0.25,
                 remode: str = "pixel", recount: int = 1, num_sample: int = 1, flip: bool = True,
                 train_interpolation: str = "bicubic", max_bad_samples: int = 10, skip_bad_test: bool = False,
                 list_flag: str = "", scheme: Optional[str] = None, resize_mode: str = "videomamba"):
        if mode == "val":
            mode = "validation"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if test_num_segment < 1 or test_num_crop < 1:
            raise ValueError(f"test_num_segment and test_num_crop must be >= 1, got {test_num_segment}, {test_num_crop}")
        if num_sample < 1:
            raise ValueError(f"num_sample must be >= 1, got {num_sample}")
        self.list_file = list_file
        self.mode = mode
        self.samples: List[Sample] = read_list(list_file, self.kind, sep=split, data_root=data_root,
                                               nb_classes=nb_classes, flag=list_flag)
        self.num_frames = int(num_frames)
        self.sampling_rate = int(sampling_rate or 0)
        self.input_size = int(input_size)
        self.short_side_size = int(short_side_size)
        self.test_num_segment = int(test_num_segment)
        self.test_num_crop = int(test_num_crop)
        self.num_sample = int(num_sample)
        self.max_bad_samples = int(max_bad_samples)
        self.skip_bad_test = bool(skip_bad_test)
        self.scheme = scheme or scheme_for("", False, self.sampling_rate)
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown sampling scheme {self.scheme!r}; choose one of {SCHEMES}")
        if self.scheme == "kinetics_dense" and self.sampling_rate < 1:
            raise ValueError("the kinetics_dense scheme needs sampling_rate >= 1")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.resize_mode = resize_mode
        self.train_transform = (VideoTrainTransform(input_size, aa=aa, reprob=reprob, remode=remode, recount=recount,
                                                    flip=flip, interpolation=train_interpolation, resize=resize_mode)
                                if mode == "train" else None)
        self.bad_samples: List[Tuple[str, str]] = []   # (path, reason) of every failure seen by this instance

    # -- reading -----------------------------------------------------------------------------------------
    def read_frames(self, sample: Sample, mode: str, view: int = 0) -> np.ndarray:
        """uint8 (T, H, W, 3) frames of ``sample`` for ``mode`` ('train'|'val'|'test', test ``view``)."""
        raise NotImplementedError

    def _index_fn(self, mode: str, view: int = 0):
        return partial(sample_indices, num_frames=self.num_frames, sampling_rate=self.sampling_rate, mode=mode,
                       view=view, num_views=self.test_num_segment, scheme=self.scheme)

    @property
    def convention(self) -> str:
        """One line: the sampling and resize convention this dataset feeds the model (logged; eval_zoo prints it)."""
        return describe_convention(self.scheme, self.resize_mode, self.sampling_rate)

    # -- items ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        n = len(self.samples)
        return n * self.test_num_segment * self.test_num_crop if self.mode == "test" else n

    def _record_bad(self, sample: Sample, err: VideoReadError) -> None:
        if sample.path not in {p for p, _ in self.bad_samples}:
            logger.debug("unreadable sample %s (%s:%d): %s", sample.path, self.list_file, sample.line_no, err.reason)
        self.bad_samples.append((sample.path, err.reason))

    def __getitem__(self, index: int):
        if self.mode == "train":
            return self._train_item(index)
        if self.mode == "validation":
            sample = self.samples[index]
            clip, ok = self._eval_clip(sample, "val", 0, 0, 1)
            return clip, sample.label, _video_id(sample.rel_path), ok
        per_video = self.test_num_segment * self.test_num_crop
        sample = self.samples[index // per_video]
        chunk_nb = (index % per_video) // self.test_num_crop
        split_nb = index % self.test_num_crop
        clip, ok = self._eval_clip(sample, "test", chunk_nb, split_nb, self.test_num_crop)
        return clip, sample.label, _video_id(sample.rel_path), chunk_nb, split_nb, ok

    def _train_item(self, index: int):
        bad: List[str] = []
        while True:
            sample = self.samples[index]
            try:
                frames = self.read_frames(sample, "train")
                break
            except VideoReadError as e:
                self._record_bad(sample, e)
                distinct = dict(self.bad_samples)
                if len(distinct) > self.max_bad_samples or len(bad) >= 100:
                    listed = "; ".join(f"{p}: {r}" for p, r in list(distinct.items())[-10:])
                    raise TooManyBadSamplesError(
                        f"{len(distinct)} distinct unreadable training files in {self.list_file} (more than "
                        f"--max_bad_samples {self.max_bad_samples}): {listed}") from e
                bad.append(sample.path)
                index = random.randrange(len(self.samples))
        clips = [self.train_transform(frames) for _ in range(self.num_sample)]
        names = "\n".join(dict.fromkeys(bad))
        if self.num_sample == 1:
            return clips[0], sample.label, index, names
        k = self.num_sample
        return clips, [sample.label] * k, [index] * k, names

    def _eval_clip(self, sample: Sample, mode: str, view: int, crop: int, num_crops: int):
        try:
            frames = self.read_frames(sample, mode, view)
        except VideoReadError as e:
            self._record_bad(sample, e)
            if not self.skip_bad_test:
                raise UnreadableEvalSampleError(
                    f"cannot read {mode} sample {sample.path} ({self.list_file}:{sample.line_no}): {e.reason}. Fix or "
                    f"remove it, or pass --skip_bad_test to exclude it from the evaluation (it is then reported by "
                    f"name and counted as a miss)") from e
            return torch.zeros(3, self.num_frames, self.input_size, self.input_size), False
        return video_eval_transform(frames, self.short_side_size, self.input_size, crop, num_crops, mode=mode,
                                    resize=self.resize_mode), True


class VideoClsDataset(_ClipDataset):
    """``video_path label`` lists; decoding with decord, or PyAV (``video_reader='pyav'`` or decord missing)."""

    kind = "video"

    def __init__(self, list_file: str, mode: str = "train", *, video_reader: str = "decord", **kwargs):
        if video_reader not in ("decord", "pyav"):
            raise ValueError(f"unknown video_reader {video_reader!r} (choose decord or pyav)")
        self.video_reader = video_reader
        super().__init__(list_file, mode, **kwargs)

    def read_frames(self, sample: Sample, mode: str, view: int = 0) -> np.ndarray:
        frames, _, _ = read_video_frames(sample.path, self._index_fn(mode, view), self.video_reader)
        return frames


class RawFrameClsDataset(_ClipDataset):
    """``frame_folder_path total_frames label`` lists; frames ``filename_tmpl.format(start_idx + i)``."""

    kind = "rawframe"

    def __init__(self, list_file: str, mode: str = "train", *, filename_tmpl: str = "img_{:05}.jpg",
                 start_idx: int = 1, **kwargs):
        self.filename_tmpl = filename_tmpl
        self.start_idx = int(start_idx)
        super().__init__(list_file, mode, **kwargs)

    def read_frames(self, sample: Sample, mode: str, view: int = 0) -> np.ndarray:
        indices = self._index_fn(mode, view)(sample.total_frames)
        return read_rawframes(sample.path, indices, self.filename_tmpl, self.start_idx)


@dataclass(frozen=True)
class WindowSample(Sample):
    """One ``--trimmed`` window of a long video: seconds ``start``..``end``, ``window``-th of its video."""
    start: float = 0.0
    end: float = 0.0
    window: int = 0


class LongVideoClsDataset(VideoClsDataset):
    """``video_path label duration`` lists (VideoMamba's LVU class, used upstream for LVU, COIN and Breakfast):
    each video is cut into windows of ``trimmed`` seconds every ``time_stride`` seconds, one item per window."""

    kind = "long_video"

    def __init__(self, list_file: str, mode: str = "train", *, trimmed: int = TRIMMED_DEFAULT,
                 time_stride: int = TIME_STRIDE_DEFAULT, **kwargs):
        self.trimmed, self.time_stride = int(trimmed), int(time_stride)
        kwargs.setdefault("scheme", "lvu_trimmed")
        super().__init__(list_file, mode, **kwargs)
        if self.scheme != "lvu_trimmed":
            raise ValueError(f"LongVideoClsDataset samples with the lvu_trimmed scheme, not {self.scheme!r}")
        self.videos: List[Sample] = self.samples
        self.samples = [WindowSample(**{**v.__dict__, "start": a, "end": b, "window": w})
                        for v in self.videos
                        for w, (a, b) in enumerate(trimmed_windows(v.duration, self.trimmed, self.time_stride))]

    @property
    def convention(self) -> str:
        return describe_convention(self.scheme, self.resize_mode, self.sampling_rate, self.trimmed, self.time_stride)

    def read_frames(self, sample: WindowSample, mode: str, view: int = 0) -> np.ndarray:
        video = open_video(sample.path, self.video_reader)
        window = window_frames(sample.start, sample.end, video.fps)
        indices = sample_indices(len(video), self.num_frames, self.sampling_rate, mode, view, self.test_num_segment,
                                 scheme=self.scheme, window=window)
        return video.get(indices)

    def __getitem__(self, index: int):
        item = super().__getitem__(index)
        if self.mode != "test":
            return item
        clip, label, vid, chunk_nb, split_nb, ok = item
        window = self.samples[index // (self.test_num_segment * self.test_num_crop)].window
        return clip, label, vid, window * self.test_num_segment + chunk_nb, split_nb, ok


def multiple_samples_collate(batch):
    """Collate for ``num_sample > 1``: flattens the per-video lists into one batch of B*k clips.

    Returns (clips (B*k, 3, T, S, S), labels (B*k,), indices (B*k,), bad: list of the items' bad-file strings).
    Items with a single clip (num_sample == 1) are accepted too."""
    clips, labels, indices, bad = [], [], [], []
    for item in batch:
        c, y, i, names = item
        if isinstance(c, (list, tuple)):
            clips.extend(c)
            labels.extend(y)
            indices.extend(i)
        else:
            clips.append(c)
            labels.append(y)
            indices.append(i)
        bad.append(names)
    return (torch.stack(clips), torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long), bad)
