"""VideoMamba's long-video sampling (its LVU class, used by its build.py for --data_set LVU / COIN / Breakfast):
--trimmed / --time_stride windows and the frame indices inside a window, written out by hand from upstream's
formulas (video_sm/datasets/lvu.py: LVU.__init__ windows, loadvideo_decord's int(seconds * fps), _get_seq_frames),
a synthetic long video read through the dataset, and the flag checks."""
import os
import random

import pytest

import run_class_finetuning as rcf
from datasets.build import build_dataset, default_data_args, sampling_convention
from datasets.sampling import (
    kinetics_sparse_indices,
    lvu_indices,
    sample_indices,
    scheme_for,
    trimmed_windows,
    window_frames,
)
from datasets.video import LongVideoClsDataset, VideoClsDataset
from tests.data_utils import frame_number, numbered_frames, write_video


class _Edge:
    """A stand-in rng whose randint returns the low (or high) end: shows the train bounds exactly."""

    def __init__(self, high):
        self.high = high

    def randint(self, a, b):
        return b if self.high else a


# -- windows ------------------------------------------------------------------------------------------------------

def test_windows_follow_upstream():
    # 100.5 s, 60 / 16: starts range(0, 100, 16) = 0 16 32 48 64 80 96; 48 and 64 end past 100.5 but keep >= 30 s
    # (cut at 100.5); 80 (20.5 s left) and 96 (4.5 s) are dropped
    assert trimmed_windows(100.5, 60, 16) == [(0, 60), (16, 76), (32, 92), (48, 100.5), (64, 100.5)]
    assert trimmed_windows(45, 60, 16) == [(0, 45)]  # shorter than --trimmed: the whole video
    assert trimmed_windows(60, 60, 16) == [(0, 60), (16, 60)]  # 60 is not < 60; 32 leaves 28 < 30 s
    assert trimmed_windows(16, 8, 4) == [(0, 8), (4, 12), (8, 16), (12, 16)]  # 12: 4 s left = 8 / 2, kept
    assert trimmed_windows(0, 60, 16) == [(0, 0)]
    assert trimmed_windows(100.5) == trimmed_windows(100.5, 60, 16)  # VideoMamba's defaults
    with pytest.raises(ValueError):
        trimmed_windows(10, 8, 0)
    with pytest.raises(ValueError):
        trimmed_windows(-1, 8, 4)


def test_window_seconds_to_frames():
    assert window_frames(4, 12, 10.0) == (40, 120)
    assert window_frames(48, 100.5, 29.97) == (1438, 3011)  # int(1438.56), int(3011.985)


# -- indices in a window --------------------------------------------------------------------------------------------

def test_val_and_test_views_in_a_window():
    # 300 frames, window frames 40..120, T 4: seg = 80 / 4 = 20, segment starts 40 60 80 100
    assert lvu_indices(300, 4, "val", window=(40, 120)) == [50, 70, 90, 110]  # + int(20 / 2)
    views = [lvu_indices(300, 4, "test", k, 3, window=(40, 120)) for k in range(3)]
    assert views == [[45, 65, 85, 105], [50, 70, 90, 110], [55, 75, 95, 115]]  # + int(20 / 4 * (k + 1))
    assert sample_indices(300, 4, 0, "test", 2, 3, scheme="lvu_trimmed", window=(40, 120)) == views[2]


def test_window_past_the_end_of_a_short_video():
    # 50 frames, window (0, 600) clamped to 0..49: seg = 49 / 4 = 12.25; starts round(12.25 i) = 0 12 24 37
    # (24.5 -> 24, 36.75 -> 37)
    assert lvu_indices(50, 4, "val", window=(0, 600)) == [6, 18, 30, 43]  # + int(6.125)
    assert [lvu_indices(50, 4, "test", k, 2, window=(0, 600)) for k in range(2)] == [[4, 16, 28, 41],
                                                                                    [8, 20, 32, 45]]
    # a window that starts past the last frame (the list's duration longer than the video): all the last frame
    assert lvu_indices(50, 4, "val", window=(640, 1005)) == [49] * 4
    # fewer frames in the window than T: 3 frames, seg 0.5, starts 0 0 1 2 (0.5 -> 0, 1.5 -> 2)
    assert lvu_indices(3, 4, "val", window=(0, 3)) == [0, 0, 1, 2]
    assert lvu_indices(3, 4, "test", 1, 2, window=(0, 3)) == [0, 0, 1, 2]


def test_train_draws_in_the_window_segments():
    assert lvu_indices(300, 4, "train", rng=_Edge(False), window=(40, 120)) == [40, 60, 80, 100]
    assert lvu_indices(300, 4, "train", rng=_Edge(True), window=(40, 120)) == [60, 80, 100, 120]
    assert lvu_indices(50, 4, "train", rng=_Edge(True), window=(0, 600)) == [12, 24, 37, 49]
    rng = random.Random(0)
    for _ in range(100):
        idx = lvu_indices(300, 4, "train", rng=rng, window=(40, 120))
        assert all(40 + 20 * i <= x <= 60 + 20 * i for i, x in enumerate(idx))


def test_whole_video_is_kinetics_sparse():
    for n, mode, k, s in ((100, "val", 0, 1), (100, "test", 2, 3), (12, "test", 1, 3), (3, "val", 0, 1)):
        assert lvu_indices(n, 4, mode, k, s) == kinetics_sparse_indices(n, 4, mode, k, s)
    assert lvu_indices(100, 4, "train", rng=random.Random(3)) == kinetics_sparse_indices(100, 4, "train",
                                                                                      rng=random.Random(3))


def test_scheme_for_long_video_sets():
    for ds in ("LVU", "COIN", "Breakfast"):
        assert scheme_for(ds, False, 0, durations=True) == "lvu_trimmed"
        assert scheme_for(ds, False, 4, durations=True) == "lvu_trimmed"  # upstream's LVU ignores the rate
        assert scheme_for(ds, False, 0) == "kinetics_sparse"  # 'video_path label' lists: whole videos
    assert scheme_for("Kinetics-400", False, 0, durations=True) == "kinetics_sparse"
    with pytest.raises(ValueError, match="lvu_trimmed"):
        sample_indices(100, 4, 0, "val", scheme="kinetics_sparse", window=(0, 10))


# -- a synthetic long video through the dataset -------------------------------------------------------------------

# 16 numbered frames at 1 fps (16 s); --trimmed 8 --time_stride 4: windows (0, 8) (4, 12) (8, 16) (12, 16) s =
# frames 0..8, 4..12, 8..15, 12..15 (16 clamped to the last frame). T 4, 2 test views:
#   0..8:   seg 2;    val +1: 1 3 5 7;      views +0 / +int(4/3): 0 2 4 6 / 1 3 5 7
#   4..12:  seg 2:    5 7 9 11;             4 6 8 10 / 5 7 9 11
#   8..15:  seg 1.75, starts 8 10 12 13 (3.5 -> 4); val +int(0.875) = +0; views +0 / +int(1.17): 9 11 13 14
#   12..15: seg 0.75, starts 12 13 14 14 (1.5 -> 2, 2.25 -> 2); every offset 0
VAL = [[1, 3, 5, 7], [5, 7, 9, 11], [8, 10, 12, 13], [12, 13, 14, 14]]
TEST = [[[0, 2, 4, 6], [1, 3, 5, 7]], [[4, 6, 8, 10], [5, 7, 9, 11]], [[8, 10, 12, 13], [9, 11, 13, 14]],
        [[12, 13, 14, 14], [12, 13, 14, 14]]]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    write_video(str(d / "long.mp4"), numbered_frames(16, 32, 64), fps=1)
    write_video(str(d / "short.mp4"), numbered_frames(6, 32, 64), fps=1)
    for split in ("train", "val", "test"):
        (d / f"{split}.csv").write_text("long.mp4,3,16\nshort.mp4,5,6\n")
    (d / "whole.csv").write_text("long.mp4,3\n")
    return d


def _args(d, **kw):
    base = dict(data_set="COIN", data_path=str(d), split=",", num_frames=4, input_size=32, short_side_size=32,
                test_num_segment=2, test_num_crop=1, num_sample=1, trimmed=8, time_stride=4)
    base.update(kw)
    return default_data_args(**base)


def _read(ds, i, mode, view=0):
    return [frame_number(f) for f in ds.read_frames(ds.samples[i], mode, view)]


@pytest.mark.parametrize("data_set", ["COIN", "Breakfast", "LVU"])
def test_dataset_reads_the_window_frames(long_video, data_set):
    ds, nb = build_dataset(False, False, _args(long_video, data_set=data_set, nb_classes=10))
    assert isinstance(ds, LongVideoClsDataset) and ds.scheme == "lvu_trimmed"
    assert [(s.rel_path, s.start, s.end, s.window) for s in ds.samples] == [
        ("long.mp4", 0, 8, 0), ("long.mp4", 4, 12, 1), ("long.mp4", 8, 16, 2), ("long.mp4", 12, 16, 3),
        ("short.mp4", 0, 6.0, 0)]  # 6 s < 8 s: one window
    assert len(ds) == 5 and nb == {"COIN": 180, "Breakfast": 10, "LVU": 10}[data_set]
    assert [_read(ds, w, "val") for w in range(4)] == VAL
    assert _read(ds, 4, "val") == lvu_indices(6, 4, "val", window=(0, 5))  # [0, 2, 3, 4]
    clip, label, vid, ok = ds[1]
    assert tuple(clip.shape) == (3, 4, 32, 32) and (label, vid, ok) == (3, "long.mp4", True)
    assert "--trimmed 8 s every --time_stride 4 s" in ds.convention


def test_test_views_and_their_chunk_numbers(long_video):
    ds, _ = build_dataset(False, True, _args(long_video))
    assert len(ds) == 5 * 2 * 1
    assert [[_read(ds, w, "test", k) for k in range(2)] for w in range(4)] == TEST
    # every window's views reach the merge as distinct views of the video: chunk = window * test_num_segment + view
    items = [ds[i] for i in range(8)]
    assert [(it[2], it[3], it[4]) for it in items] == [("long.mp4", c, 0) for c in range(8)]
    assert (ds[8][2], ds[8][3]) == ("short.mp4", 0)


def test_train_frames_stay_in_their_window(long_video):
    ds, _ = build_dataset(True, False, _args(long_video))
    random.seed(0)
    for _ in range(5):
        for w, (lo, hi) in enumerate(((0, 8), (4, 12), (8, 15), (12, 15))):
            got = _read(ds, w, "train")
            assert all(lo <= f <= hi for f in got) and got == sorted(got)
    clip, label, index, bad = ds[2]
    assert tuple(clip.shape) == (3, 4, 32, 32) and label == 3 and bad == ""


def test_defaults_and_whole_video_lists(long_video):
    ds, _ = build_dataset(False, False, _args(long_video, trimmed=None, time_stride=None))
    assert (ds.trimmed, ds.time_stride) == (60, 16) and len(ds) == 2  # 16 s and 6 s < 60 s: whole videos
    assert "--trimmed 60 s every --time_stride 16 s" in sampling_convention(_args(long_video, trimmed=None, time_stride=None))
    # 'video_path label' lists: whole videos (the released COIN / Breakfast recipes' lists), unless the flags are given
    whole = str(long_video / "whole.csv")
    ds, _ = build_dataset(False, False, _args(long_video, val_list=whole, trimmed=None, time_stride=None))
    assert type(ds) is VideoClsDataset and ds.scheme == "kinetics_sparse"
    with pytest.raises(ValueError, match="no duration column"):
        build_dataset(False, False, _args(long_video, val_list=whole))
    with pytest.raises(ValueError, match="raw frames"):
        build_dataset(False, False, _args(long_video, use_rawframes=True))


# -- flags ----------------------------------------------------------------------------------------------------------

def _parse(*flags):
    return rcf.get_args_parser().parse_args(["--dry_run", *flags])


def test_flags_are_real_and_checked():
    a = _parse("--data_set", "LVU", "--nb_classes", "10", "--trimmed", "60", "--time_stride", "16")
    assert (a.trimmed, a.time_stride) == (60, 16)
    a = _parse("--data_set", "Breakfast")
    assert (a.trimmed, a.time_stride) == (None, None)  # not given: VideoMamba's 60 / 16 when the dataset is built
    assert "trimmed" not in {d for d, _, _ in rcf.IGNORED_UPSTREAM_FLAGS}
    for data_set in ("Kinetics-400", "Kinetics_sparse", "SSV2", "video"):
        with pytest.raises(SystemExit, match="only to --data_set LVU / COIN / Breakfast"):
            _parse("--data_set", data_set, "--trimmed", "30")
    with pytest.raises(SystemExit, match="--time_stride 0: must be >= 1"):
        _parse("--data_set", "COIN", "--time_stride", "0")
    a = _parse("--data_set", "COIN", "--sampling_rate", "4")
    assert any("--sampling_rate 4" in w for w in a._flag_warnings)
    helps = {a.dest: a.help for a in rcf.get_args_parser()._actions}
    assert "60" in helps["trimmed"] and "16" in helps["time_stride"]


def test_lists_with_duration_parse(tmp_path):
    from datasets.lists import read_list
    from utils.errors import ListError

    p = tmp_path / "l.csv"
    p.write_text("a b.mp4,7,123.5\nc.mp4,0,2\n")
    s = read_list(str(p), "long_video", sep=",")
    assert [(x.rel_path, x.label, x.duration) for x in s] == [("a b.mp4", 7, 123.5), ("c.mp4", 0, 2.0)]
    p.write_text("c.mp4,0,long\n")
    with pytest.raises(ListError, match=r"l.csv:1: .*duration 'long'"):
        read_list(str(p), "long_video", sep=",")
    assert os.path.isfile(p)


def test_lvu_classes_from_the_task_in_data_path():
    from datasets.build import resolve_nb_classes

    assert resolve_nb_classes(default_data_args(data_set="LVU", data_path="/lists/lvu/director")) == 10
    assert resolve_nb_classes(default_data_args(data_set="LVU", data_path="/lists/LVU/Scene", nb_classes=6)) == 6
    assert resolve_nb_classes(default_data_args(data_set="LVU", data_path="/lists/mine", nb_classes=3)) == 3
    with pytest.raises(ValueError, match="names the year task, which has 9 classes"):
        resolve_nb_classes(default_data_args(data_set="LVU", data_path="/lists/lvu/year", nb_classes=10))


def test_merge_counts_every_window_of_a_video(long_video, tmp_path):
    """Prediction lines for every test item, merged by engines.evaluate.merge: the 4 windows x 2 views of the long
    video are 8 distinct views of one video (upstream's merge would keep one window per (chunk, split))."""
    import json

    from engines.evaluate import merge

    ds, nb = build_dataset(False, True, _args(long_video))
    with open(tmp_path / "0.txt", "w") as f:
        for i in range(len(ds)):
            _, label, vid, chunk, split, _ = ds[i]
            logits = [0.0] * nb
            logits[label] = 1.0
            f.write(f"{vid} {json.dumps(logits)} {label} {chunk} {split}\n")
    res = merge(str(tmp_path), 1, log=lambda *a: None)
    assert res["n_views"] == 10 and res["views_per_video"] == (2, 8) and res["n_duplicate_views"] == 0


# VideoMamba's video_sm/exp/lvu/run_class_trim.sh, its flags unchanged (paths to the synthetic lists)
LVU_TRIM = """--model videomamba_tiny --finetune none --data_path {data} --prefix {data} --data_set LVU --split ,
--nb_classes 10 --batch_size 8 --num_sample 2 --input_size 224 --short_side_size 224 --save_ckpt_freq 100
--num_frames 32 --orig_t_size 32 --trimmed 60 --time_stride 16 --num_workers 12 --warmup_epochs 5 --tubelet_size 1
--epochs 70 --lr 4e-4 --drop_path 0.15 --aa rand-m5-n2-mstd0.25-inc1 --opt adamw --opt_betas 0.9 0.999
--weight_decay 0.1 --test_num_segment 4 --test_num_crop 3 --dist_eval --test_best --bf16"""


def test_upstream_lvu_command_parses_and_builds_its_data(long_video, tmp_path):
    from engines.runner import run
    from utils.config import parse_with_config

    argv = LVU_TRIM.format(data=long_video).split() + ["--output_dir", str(tmp_path), "--dry_run", "--device", "cpu",
                                                   "--batch_size", "1", "--num_workers", "0"]  # 2 videos here
    args = parse_with_config(rcf.get_args_parser(), argv)
    assert (args.data_set, args.trimmed, args.time_stride, args.nb_classes) == ("LVU", 60, 16, 10)
    assert run(args, rcf.wiring())["dry_run"]
    ds, _ = build_dataset(False, True, args)
    assert isinstance(ds, LongVideoClsDataset) and len(ds) == 2 * 4 * 3  # 16 s and 6 s < 60 s: one window each
