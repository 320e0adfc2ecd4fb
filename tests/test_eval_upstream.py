"""Our validation and multi-view test clips equal VideoMamba's, pixel for pixel (max difference 0.0).

The reference below is written out from upstream's formulas, independently of datasets/: its frame indices
(kinetics_sparse.py ``_get_seq_frames``, kinetics.py ``loadvideo_decord``, ssv2.py ``loadvideo_decord`` /
``load_frame`` with their sort-and-stride test views), ``functional.resize_clip`` (OpenCV INTER_LINEAR to
``get_resize_sizes``), ``CenterCrop`` (``int(round(slack / 2.))``), the test ``__getitem__`` crop
(``int(split_nb * spatial_step)``) and ``ClipToTensor`` + ``Normalize``. It decodes with decord's VideoReader
directly (negative indices included, as upstream hands them to decord) and reads JPEG frames with cv2.imdecode,
as upstream does; our side goes through build_dataset, the path every recipe takes.
"""
import os

import cv2
import numpy as np
import pytest
import torch

from datasets import build_dataset, default_data_args
from tests.data_utils import write_frames, write_video

T = 8
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# (height, width, frames): landscape / portrait with an odd long-side slack whose half rounds to even (55 - 32 = 23),
# an upscaled one, one already at the short side, a square one, one shorter than T frames
VIDEOS = [(58, 100, 37), (90, 52, 50), (24, 40, 23), (32, 56, 64), (40, 40, 8), (36, 64, 5)]  # widths decord decodes
FRAME_DIRS = [(58, 100, 37), (90, 52, 16), (36, 64, 5), (24, 40, 23)]


def _texture(h, w, n, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h, w, 3)).astype(np.int32)
    ramp = (np.arange(w)[None, :, None] * 3 + np.arange(h)[:, None, None] * 2)
    return np.stack([(base + ramp + 17 * t) % 256 for t in range(n)]).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("upstream_eval")
    rows = []
    for i, (h, w, n) in enumerate(VIDEOS):
        write_video(str(d / f"v{i}.mp4"), _texture(h, w, n, i))
        rows.append(f"v{i}.mp4 {i % 3}\n")
    (d / "videos.csv").write_text("".join(rows))
    rows = []
    for i, (h, w, n) in enumerate(FRAME_DIRS):
        write_frames(str(d / f"f{i}"), _texture(h, w, n, 10 + i))
        rows.append(f"f{i} {n} {i % 3}\n")
    (d / "frames.csv").write_text("".join(rows))
    return d


# ---- the reference: upstream's formulas, written out ---------------------------------------------------------
def ref_indices(kind, n, mode, k=0, s=1, rate=2):
    """Frame indices as upstream computes them (before decoding; negative ones included)."""
    if kind == "kinetics_sparse":
        seg = max(0.0, float(n - 1) / T)
        views = s if mode == "test" else 1
        duration = seg / (views + 1)
        return [min(int(np.round(seg * i)) + int(duration * (k + 1)), n - 1) for i in range(T)]
    if kind == "kinetics_dense":
        converted = int(T * rate)
        if mode == "test":
            step = max(1.0 * (n - converted) / (s - 1), 0)
            start = int(k * step)
            idx = [x for x in range(start, min(start + converted, n), rate)]
            while len(idx) < T:
                idx.append(idx[-1])
            return idx
        if n <= converted:
            index = np.linspace(0, n, num=n // rate)
            index = np.concatenate((index, np.ones(T - n // rate) * n))
            return list(np.clip(index, 0, n - 1).astype(np.int64))
        end = (n - converted) // 2
        index = np.linspace(end - converted, end, num=T)
        return list(np.clip(index, end - converted, end - 1).astype(np.int64))
    tick = n / float(T)
    if kind == "ssv2_video":
        if mode == "test":  # its S = 2 views: middles + starts, sorted, then [chunk_nb::2]
            idx = [int(tick / 2.0 + tick * x) for x in range(T)] + [int(tick * x) for x in range(T)]
            while len(idx) < T * s:
                idx.append(idx[-1])
            return list(np.sort(np.array(idx)))[k::2]
        return [int(tick / 2.0 + tick * x) for x in range(T)]
    if mode == "test":  # ssv2 raw frames: every view, sorted, then [chunk_nb::test_num_segment]
        idx = [int(t * tick / s + tick * x) for t in range(s) for x in range(T)]
        return list(np.sort(np.array(idx)))[k::s]
    avg = n // T
    if avg > 0:
        return list(np.multiply(list(range(T)), avg) + np.ones(T, dtype=int) * (avg // 2))
    return [0] * (T - n) + list(range(n))


def ref_decode(path, idx):
    import decord

    return decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0)).get_batch(list(idx)).asnumpy()


def ref_read_frames(folder, idx):
    out = []
    for i in idx:
        with open(os.path.join(folder, "img_{:05}.jpg".format(i + 1)), "rb") as f:
            img = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, img)
        out.append(img)
    return np.array(out)


def ref_resize(frames, size):
    h, w = frames.shape[1:3]
    if (w <= h and w == size) or (h <= w and h == size):
        return list(frames)
    oh, ow = (int(size * h / w), size) if w < h else (size, int(size * w / h))
    return [cv2.resize(f, (ow, oh), interpolation=cv2.INTER_LINEAR) for f in frames]


def ref_to_tensor(clip):
    h, w = clip[0].shape[:2]
    arr = np.zeros([3, len(clip), h, w])
    for t, img in enumerate(clip):
        arr[:, t] = img.transpose(2, 0, 1)
    x = torch.div(torch.from_numpy(arr).float(), 255)
    return x.sub_(torch.as_tensor(MEAN)[:, None, None, None]).div_(torch.as_tensor(STD)[:, None, None, None])


def ref_val(frames, short, crop):
    clip = ref_resize(frames, short)
    h, w = clip[0].shape[:2]
    y1, x1 = int(round((h - crop) / 2.)), int(round((w - crop) / 2.))
    return ref_to_tensor([f[y1:y1 + crop, x1:x1 + crop] for f in clip])


def ref_test(frames, short, split_nb, num_crop):
    buf = np.stack(ref_resize(frames, short), 0)
    if num_crop == 1:
        start = int(1.0 * (max(buf.shape[1], buf.shape[2]) - short) / 2)
    else:
        start = int(split_nb * (1.0 * (max(buf.shape[1], buf.shape[2]) - short) / (num_crop - 1)))
    buf = buf[:, start:start + short] if buf.shape[1] >= buf.shape[2] else buf[:, :, start:start + short]
    return ref_to_tensor(list(buf))


# ---- our side ------------------------------------------------------------------------------------------------
CASES = {  # name: (data_set, list, scheme of the reference, extra args, test views)
    "k400": ("Kinetics-400", "videos.csv", "kinetics_sparse", {}, (4, 3)),
    "kinetics_sparse": ("Kinetics_sparse", "videos.csv", "kinetics_sparse", {}, (4, 3)),
    "kinetics_dense": ("Kinetics", "videos.csv", "kinetics_dense", {"sampling_rate": 2}, (4, 3)),
    "ssv2_videos": ("SSV2", "videos.csv", "ssv2_video", {"use_rawframes": False}, (2, 3)),
    "ssv2_rawframes": ("SSV2", "frames.csv", "ssv2_rawframes", {}, (2, 3)),
}


def _dataset(data, case, mode, short=32, crop=32, **kw):
    data_set, lst, _, extra, (segs, crops) = CASES[case]
    args = default_data_args(data_set=data_set, train_list=str(data / lst), val_list=str(data / lst),
                             test_list=str(data / lst), nb_classes=None, num_frames=T, input_size=crop,
                             short_side_size=short, test_num_segment=segs, test_num_crop=crops,
                             **{**extra, **kw})
    return build_dataset(False, mode == "test", args)[0]


def _source(data, case, sample_path, idx):
    return ref_read_frames(sample_path, idx) if CASES[case][1] == "frames.csv" else ref_decode(sample_path, idx)


def _totals(data, case):
    sizes = FRAME_DIRS if CASES[case][1] == "frames.csv" else VIDEOS
    return [n for _, _, n in sizes]


@pytest.mark.parametrize("case", [c for c in CASES if c != "kinetics_sparse"])  # its test path is k400's
def test_every_test_view_equals_upstreams(data, case):
    ds = _dataset(data, case, "test")
    _, _, kind, extra, (segs, crops) = CASES[case]
    assert ds.scheme == kind and len(ds) == len(_totals(data, case)) * segs * crops
    frames_of = {}
    for i in range(len(ds)):
        clip, label, vid, chunk, split, ok = ds[i]
        s = ds.samples[i // (segs * crops)]
        key = (s.path, chunk)
        if key not in frames_of:
            n = s.total_frames or _totals(data, case)[i // (segs * crops)]
            frames_of[key] = _source(data, case, s.path, ref_indices(kind, n, "test", chunk, segs,
                                                                      extra.get("sampling_rate", 2)))
        ref = ref_test(frames_of[key], 32, split, crops)
        assert ok and clip.shape == ref.shape == (3, T, 32, 32)
        assert (clip - ref).abs().max().item() == 0.0, f"{case} {vid} view ({chunk}, {split})"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("short", [32, 39])  # 39: a centre crop of 32 on both sides, its slack 7 rounds to 4
def test_every_validation_clip_equals_upstreams(data, case, short):
    ds = _dataset(data, case, "validation", short=short)
    kind = CASES[case][2]
    for i, s in enumerate(ds.samples):
        n = s.total_frames or _totals(data, case)[i]
        ref = ref_val(_source(data, case, s.path, ref_indices(kind, n, "val", rate=2)), short, 32)
        clip = ds[i][0]
        assert clip.shape == ref.shape == (3, T, 32, 32)
        assert (clip - ref).abs().max().item() == 0.0, f"{case} {s.rel_path}"


def test_the_comparison_is_sensitive(data):
    """The fixtures hit the cases where the conventions part: an odd long-side slack whose half rounds to even
    (CenterCrop 12, not 11; crop 1 of 3 at int(11.5) = 11, not 12), segments of (N - 1) / T frames, a decoded dense
    index below 0; and the antialiased option gives other pixels on the downscaled videos."""
    assert int(round((55 - 32) / 2.)) == 12 and (55 - 32) // 2 == 11 and int(1 * 23 / 2) == 11
    assert [int(32 * w / h) if w > h else int(32 * h / w) for h, w, _ in VIDEOS[:2]] == [55, 55]
    assert ref_indices("kinetics_sparse", 37, "val") != [int(i * 37 / T + 37 / T / 2) for i in range(T)]
    assert min(ref_indices("kinetics_dense", 37, "val")) < 0
    assert _dataset(data, "kinetics_sparse", "test").scheme == _dataset(data, "k400", "test").scheme
    ours = _dataset(data, "k400", "validation")
    anti = _dataset(data, "k400", "validation", resize_mode="antialias")
    assert "OpenCV INTER_LINEAR" in ours.convention and "antialias" in anti.convention
    for i in (0, 1):  # downscaled videos
        assert (ours[i][0] - anti[i][0]).abs().max().item() > 0.01
    with pytest.raises(ValueError, match="resize_mode"):
        _dataset(data, "k400", "validation", resize_mode="pil")
