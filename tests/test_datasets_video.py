"""Video / raw-frame datasets: decoded pixels, reader agreement, items, bad data, DataLoader workers."""
import os
import random

import av
import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader

from datasets import (
    RawFrameClsDataset,
    VideoClsDataset,
    build_dataset,
    multiple_samples_collate,
    open_video,
    read_video_frames,
)
from tests.data_utils import frame_number, numbered_frames, synthetic_dataset, tiny_data_args, write_frames, write_video  # noqa: F401
from utils.errors import TooManyBadSamplesError, UnreadableEvalSampleError

EVAL = dict(num_frames=4, input_size=32, short_side_size=32, aa=None, reprob=0.0)


def _denorm_frame_numbers(clip):
    """(3, T, H, W) normalised clip of numbered frames -> frame numbers."""
    m = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1, 1)
    s = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1, 1)
    px = (clip * s + m) * 255
    return [frame_number(px[:, t].permute(1, 2, 0).numpy()) for t in range(clip.shape[1])]


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """12 numbered frames (32x64) as an mp4 and as a JPEG folder, with lists for both."""
    d = tmp_path_factory.mktemp("numbered")
    frames = numbered_frames(12, 32, 64)
    write_video(str(d / "v.mp4"), frames)
    write_frames(str(d / "fr"), frames)
    (d / "video.csv").write_text("v.mp4 1\n")
    (d / "raw.csv").write_text("fr 12 1\n")
    return d


@pytest.mark.parametrize("reader", ["decord", "pyav"])
def test_decoded_pixels_match_written_frames(numbered, reader):
    idx = [0, 5, 11, 3, 3]
    frames, got_idx, total = read_video_frames(str(numbered / "v.mp4"), lambda n: idx, reader)
    assert total == 12 and got_idx == idx and frames.shape == (5, 32, 64, 3) and frames.dtype == np.uint8
    assert [frame_number(f) for f in frames] == idx
    expected = numbered_frames(12, 32, 64)[idx].astype(np.float64)
    assert np.abs(frames.astype(np.float64) - expected).mean() < 3.0


def test_decord_and_pyav_agree(numbered):
    a = open_video(str(numbered / "v.mp4"), "decord").get(range(12)).astype(int)
    b = open_video(str(numbered / "v.mp4"), "pyav").get(range(12)).astype(int)
    assert np.abs(a - b).max() <= 2


@pytest.mark.parametrize("mode", ["validation", "test"])
def test_video_and_rawframe_datasets_give_the_same_clip(numbered, mode):
    kw = dict(EVAL, test_num_segment=3, test_num_crop=2)
    vid = VideoClsDataset(str(numbered / "video.csv"), mode, **kw)
    raw = RawFrameClsDataset(str(numbered / "raw.csv"), mode, **kw)
    assert len(vid) == len(raw) == (1 if mode == "validation" else 6)
    for i in range(len(vid)):
        a, b = vid[i], raw[i]
        assert a[0].shape == (3, 4, 32, 32) and a[0].dtype == torch.float32
        assert (a[0] - b[0]).abs().mean() < 0.05  # same content; mp4 vs JPEG compression
        assert a[1:3] == (1, "v.mp4") and b[1:3] == (1, "fr") and a[-1] is True
    # VideoMamba's sparse sampling of 12 frames in 4 segments of (12 - 1) / 4 = 2.75 frames, starting at
    # round(2.75 i) = 0, 3, 6, 8: val + int(2.75 / 2); test view k of 3: + int(2.75 / 4 * (k + 1))
    if mode == "validation":
        assert _denorm_frame_numbers(vid[0][0]) == [1, 4, 7, 9]
    else:
        items = [vid[i] for i in range(6)]
        assert [(it[3], it[4]) for it in items] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
        assert [_denorm_frame_numbers(items[2 * k][0]) for k in range(3)] == [[0, 3, 6, 8], [1, 4, 7, 9],
                                                                            [2, 5, 8, 10]]


def test_train_items_and_num_sample(synthetic_dataset):  # noqa: F811
    args = tiny_data_args(synthetic_dataset)
    ds, n = build_dataset(True, False, args)
    assert n == 4 and len(ds) == 8
    clip, label, index, bad = ds[3]
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32
    assert label == ds.samples[3].label and index == 3 and bad == ""
    ds2, _ = build_dataset(True, False, tiny_data_args(synthetic_dataset, num_sample=3))
    batch = multiple_samples_collate([ds2[0], ds2[1]])
    x, y, idx, bad = batch
    assert x.shape == (6, 3, 4, 32, 32) and y.tolist() == [ds2.samples[0].label] * 3 + [ds2.samples[1].label] * 3
    assert idx.tolist() == [0, 0, 0, 1, 1, 1] and bad == ["", ""]
    assert not torch.equal(x[0], x[1])  # repeated augmentation: different augmentations of one video


@pytest.mark.parametrize("raw", [False, True])
def test_dataloader_two_workers_runs_through(synthetic_dataset, raw):  # noqa: F811
    ds, _ = build_dataset(True, False, tiny_data_args(synthetic_dataset, use_rawframes=raw))
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True, drop_last=True)
    seen = []
    for x, _y, idx, bad in loader:
        assert x.shape == (4, 3, 4, 32, 32) and torch.isfinite(x).all() and list(bad) == [""] * 4
        seen += idx.tolist()
    assert sorted(seen) == list(range(8))
    ds, _ = build_dataset(False, True, tiny_data_args(synthetic_dataset, use_rawframes=raw))
    out = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert sum(len(b[0]) for b in out) == 4 * 2 * 2 and all(b[-1].all() for b in out)


# ---- bad data ----------------------------------------------------------------------------------------------
def _make_bad(d, kind):
    p = str(d / f"{kind}.mp4")
    if kind == "zero_byte":
        open(p, "wb").close()
    elif kind == "truncated":
        write_video(p, numbered_frames(8, 32, 64))
        data = open(p, "rb").read()
        open(p, "wb").write(data[: len(data) // 2])
    elif kind == "truncated_data":  # moov header first (faststart), frame data cut off
        with av.open(p, "w", options={"movflags": "faststart"}) as c:
            s = c.add_stream("libx264", rate=8)
            s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
            for f in numbered_frames(12, 32, 64):
                for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        data = open(p, "rb").read()
        assert b"moov" in data[:64]
        open(p, "wb").write(data[: int(len(data) * 0.6)])
    elif kind == "zero_frames":
        with av.open(p, "w") as c:
            s = c.add_stream("mpeg4", rate=8)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
            c.start_encoding()
            for pkt in s.encode():
                c.mux(pkt)
        assert os.path.getsize(p) > 0  # a valid container holding no frames
    elif kind != "missing":
        raise ValueError(kind)
    return os.path.basename(p)


BAD = ["zero_byte", "truncated", "truncated_data", "zero_frames", "missing"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_train_video_is_named_and_replaced(tmp_path, kind):
    name = _make_bad(tmp_path, kind)
    write_video(str(tmp_path / "good.mp4"), numbered_frames(8, 32, 64))
    (tmp_path / "train.csv").write_text(f"{name} 0\ngood.mp4 1\n")
    ds = VideoClsDataset(str(tmp_path / "train.csv"), "train", **EVAL)
    random.seed(0)
    clip, label, index, bad = ds[0]
    assert (label, index) == (1, 1) and len(ds.bad_samples) >= 1
    assert bad.split("\n") == [ds.samples[0].path] and bad.endswith(name)  # each file once per item
    assert clip.shape == (3, 4, 32, 32)


@pytest.mark.parametrize("kind", BAD)
def test_bad_eval_video_raises_or_is_skipped(tmp_path, kind):
    name = _make_bad(tmp_path, kind)
    (tmp_path / "val.csv").write_text(f"{name} 2\n")
    ds = VideoClsDataset(str(tmp_path / "val.csv"), "validation", **EVAL)
    with pytest.raises(UnreadableEvalSampleError, match=f"{name}.*--skip_bad_test"):
        ds[0]
    ds = VideoClsDataset(str(tmp_path / "val.csv"), "test", skip_bad_test=True, test_num_segment=2, test_num_crop=1,
                         **EVAL)
    clip, label, vid, chunk, split, ok = ds[1]
    assert ok is False and (label, vid, chunk, split) == (2, name, 1, 0)
    assert clip.shape == (3, 4, 32, 32) and not clip.any()
    assert len(ds.bad_samples) == 1 and ds.bad_samples[0][0].endswith(name)


def test_bad_sample_cap_raises_with_names(tmp_path):
    names = [_make_bad(tmp_path, k) for k in ("zero_byte", "missing", "truncated")]
    (tmp_path / "train.csv").write_text("".join(f"{n} 0\n" for n in names))
    ds = VideoClsDataset(str(tmp_path / "train.csv"), "train", max_bad_samples=2, **EVAL)
    with pytest.raises(TooManyBadSamplesError, match=r"3 distinct unreadable training files.*max_bad_samples 2") as e:
        ds[0]
    assert all(n in str(e.value) for n in names)
    # a list where every file is bad never loops forever, whatever the cap
    ds = VideoClsDataset(str(tmp_path / "train.csv"), "train", max_bad_samples=1000, **EVAL)
    with pytest.raises(TooManyBadSamplesError):
        ds[0]


def test_missing_rawframe_is_bad_sample(tmp_path, numbered):
    # list claims 20 frames but the folder has 12: the missing frame is reported, val raises
    (tmp_path / "raw.csv").write_text(f"{numbered / 'fr'} 20 1\n")
    ds = RawFrameClsDataset(str(tmp_path / "raw.csv"), "validation", **EVAL)
    with pytest.raises(RuntimeError, match="img_000(1[3-9]|20).jpg missing"):
        ds[0]


def test_pyav_reader_choice(numbered):
    ds = VideoClsDataset(str(numbered / "video.csv"), "validation", video_reader="pyav", **EVAL)
    assert _denorm_frame_numbers(ds[0][0]) == [1, 4, 7, 9]
    with pytest.raises(ValueError, match="video_reader"):
        VideoClsDataset(str(numbered / "video.csv"), "validation", video_reader="opencv", **EVAL)


def test_decord_failures_fall_back_to_pyav(tmp_path, monkeypatch):
    import datasets.video_io as vio

    # decord 0.6 returns wrongly sized buffers for some widths (here 48): PyAV decodes those files instead
    write_video(str(tmp_path / "w48.mp4"), numbered_frames(6, 32, 48))
    v = open_video(str(tmp_path / "w48.mp4"), "decord")
    assert isinstance(v, vio.DecordVideo)
    assert [frame_number(f) for f in v.get([5, 0, 2])] == [5, 0, 2]
    # decord not installed: PyAV is used
    monkeypatch.setattr(vio, "decord_available", lambda: False)
    v = open_video(str(tmp_path / "w48.mp4"), "decord")
    assert isinstance(v, vio.PyAVVideo) and [frame_number(f) for f in v.get([1, 4])] == [1, 4]
