"""Data pipeline: list parsing, frame sampling, video-consistent transforms, datasets, mixup.

Our top-level ``datasets`` package shadows Hugging Face ``datasets`` on purpose (run from the repo root).
"""
from .build import DATA_ARG_DEFAULTS, DATASET_CLASSES, build_dataset, default_data_args
from .imagenet import ImageNetDataset
from .lists import Sample, read_list
from .mixup import VideoMixup, build_mixup_fn
from .sampling import dense_indices, sample_indices, sparse_indices
from .transforms import VideoTrainTransform, video_eval_transform
from .video import RawFrameClsDataset, VideoClsDataset, multiple_samples_collate
from .video_io import VideoReadError, open_video, read_rawframes, read_video_frames

__all__ = [
    "DATA_ARG_DEFAULTS", "DATASET_CLASSES", "build_dataset", "default_data_args", "ImageNetDataset", "Sample",
    "read_list", "VideoMixup", "build_mixup_fn", "dense_indices", "sample_indices", "sparse_indices",
    "VideoTrainTransform", "video_eval_transform", "RawFrameClsDataset", "VideoClsDataset",
    "multiple_samples_collate", "VideoReadError", "open_video", "read_rawframes", "read_video_frames",
]
