"""Shared test helpers for anything that needs video data (datasets, engines, entry points).

    from tests.data_utils import make_tiny_synthetic_dataset, tiny_data_args, synthetic_dataset  # noqa: F401

- ``make_tiny_synthetic_dataset(out, **kw) -> dict``: writes a tiny copy of the synthetic motion dataset
  (4 classes, 2 train / 1 val / 1 test video per class, 8 frames of 32x32 by default; ~0.2 s) and returns
  the paths dict of ``datasets.synthetic.make_dataset`` ('root', 'train', 'val', 'test', 'rawframes_train', ...).
- ``synthetic_dataset``: a session-scoped pytest fixture with that dict (made once per test session).
- ``tiny_data_args(paths, **overrides) -> argparse.Namespace``: every data arg of build_dataset set for the tiny
  set (data_set='video', nb_classes=4, num_frames=4, input_size=32, short_side_size=32, 2x2 test views).
- ``numbered_frames(T, H, W)``: uint8 frames where frame t is a uniform grey 10 + 15*t (t < 16), so decoded
  frames identify their index; ``write_video`` / ``write_frames`` write them as mp4 / JPEG folder.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from datasets.build import default_data_args
from datasets.synthetic import make_dataset, write_frames, write_mp4  # noqa: F401  (re-exported)

write_video = write_mp4


def make_tiny_synthetic_dataset(out: str, seed: int = 0, train_per_class: int = 2, val_per_class: int = 1,
                                test_per_class: int = 1, frames: int = 8, size: int = 32, **kw) -> dict:
    return make_dataset(out, seed=seed, num_classes=4, train_per_class=train_per_class, val_per_class=val_per_class,
                        test_per_class=test_per_class, frames=frames, size=size, **kw)


def tiny_data_args(paths: dict, **overrides):
    base = dict(data_set="video", data_path=paths["root"], nb_classes=4, num_frames=4, input_size=32,
                short_side_size=32, test_num_segment=2, test_num_crop=2, num_sample=1)
    if overrides.get("use_rawframes"):
        base.update(train_list=paths["rawframes_train"], val_list=paths["rawframes_val"],
                    test_list=paths["rawframes_test"])
    base.update(overrides)
    return default_data_args(**base)


def numbered_frames(num: int, height: int = 32, width: int = 64) -> np.ndarray:
    if num > 16:
        raise ValueError("numbered_frames supports at most 16 distinguishable frames")
    return np.stack([np.full((height, width, 3), 10 + 15 * t, np.uint8) for t in range(num)])


def frame_number(frame: np.ndarray) -> int:
    """Inverse of numbered_frames for a decoded (H, W, 3) uint8 frame (codec noise tolerated)."""
    return int(round((float(np.asarray(frame, dtype=np.float64).mean()) - 10) / 15))


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    paths = make_tiny_synthetic_dataset(os.path.join(out, "data"))
    return paths
