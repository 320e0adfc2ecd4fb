"""List parsing and build_dataset bookkeeping: malformed rows, empty/missing lists, class counts, --split."""
import os

import pytest

from datasets import build_dataset, default_data_args, read_list


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_video_and_rawframe_rows_parse_and_resolve(tmp_path):
    f = _write(tmp_path, "l.csv", "a/x.mp4 0\n\n/abs/y.mp4 3\n")
    s = read_list(f, "video", nb_classes=4)
    assert [(x.rel_path, x.label, x.line_no) for x in s] == [("a/x.mp4", 0, 1), ("/abs/y.mp4", 3, 3)]
    assert s[0].path == os.path.join(str(tmp_path), "a/x.mp4")  # relative to the list folder by default
    assert s[1].path == "/abs/y.mp4"
    s = read_list(f, "video", data_root="/data/k400")
    assert s[0].path == "/data/k400/a/x.mp4"
    r = read_list(_write(tmp_path, "r.csv", "frames/v1 30 2\n"), "rawframe")
    assert (r[0].rel_path, r[0].total_frames, r[0].label) == ("frames/v1", 30, 2)


def test_paths_with_spaces_and_comma_split(tmp_path):
    s = read_list(_write(tmp_path, "a.csv", "my videos/clip one.mp4 1\n"), "video")
    assert (s[0].rel_path, s[0].label) == ("my videos/clip one.mp4", 1)
    s = read_list(_write(tmp_path, "b.csv", "my videos/a, b.mp4,2\nc.mp4, 0\n"), "video", sep=",")
    assert [(x.rel_path, x.label) for x in s] == [("my videos/a, b.mp4", 2), ("c.mp4", 0)]
    s = read_list(_write(tmp_path, "c.csv", "fr/my clip 12 1\n"), "rawframe")
    assert (s[0].rel_path, s[0].total_frames, s[0].label) == ("fr/my clip", 12, 1)


@pytest.mark.parametrize("kind,row,why", [
    ("video", "x.mp4 1 2", "malformed row"),             # a raw-frame row in a video list
    ("video", "x.mp4", "malformed row"),                  # too few columns
    ("video", "x.mp4 cat", "not an integer"),
    ("video", "x.mp4 -1", "negative label"),
    ("video", "x.mp4 7", "out of range"),
    ("rawframe", "fr/x abc 1", "total_frames"),
    ("rawframe", "fr/x 0 1", "total_frames must be >= 1"),
    ("rawframe", "fr/x 10", "malformed row"),
])
def test_malformed_rows_name_file_line_and_content(tmp_path, kind, row, why):
    f = _write(tmp_path, "bad.csv", ("ok.mp4 0\n" if kind == "video" else "fr/ok 5 0\n") + row + "\n")
    with pytest.raises(ValueError) as e:
        read_list(f, kind, nb_classes=5)
    msg = str(e.value)
    assert f"{f}:2:" in msg and repr(row) in msg and why in msg


def test_empty_and_missing_lists(tmp_path):
    f = _write(tmp_path, "empty.csv", "\n  \n")
    with pytest.raises(ValueError, match="empty.*empty.csv"):
        read_list(f, "video")
    with pytest.raises(FileNotFoundError, match="nope.csv.*--train_list"):
        read_list(str(tmp_path / "nope.csv"), "video", flag="--train_list")


def test_build_dataset_checks_class_count_and_defaults(tmp_path, capsys):
    _write(tmp_path, "train.csv", "a.mp4 0\nb.mp4 173\n")
    ds, n = build_dataset(True, False, default_data_args(data_set="SSV2", data_path=str(tmp_path)))
    assert n == 174 and len(ds) == 2
    assert ds.train_transform.flip is False  # SSv2: no horizontal flip
    assert "2 samples" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"train.csv:2:.*out of range for 101"):
        build_dataset(True, False, default_data_args(data_set="UCF101", data_path=str(tmp_path)))
    ds, n = build_dataset(True, False, default_data_args(data_set="Kinetics-400", data_path=str(tmp_path)))
    assert n == 400 and ds.train_transform.flip is True
    ds, n = build_dataset(True, False, default_data_args(data_set="video", data_path=str(tmp_path)))
    assert n == 174  # generic without --nb_classes: inferred from the labels (and logged)
    with pytest.raises(ValueError, match="out of range for 100"):
        build_dataset(True, False, default_data_args(data_set="video", nb_classes=100, data_path=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="val.csv"):
        build_dataset(False, False, default_data_args(data_set="video", data_path=str(tmp_path)))
    args = default_data_args(data_set="SSV2", data_path=str(tmp_path))
    args.prefix = "/videos"  # VideoMAE's --prefix works like --data_root
    ds, _ = build_dataset(True, False, args)
    assert ds.samples[0].path == "/videos/a.mp4"
    with pytest.raises(ValueError, match="unknown --data_set"):
        build_dataset(True, False, default_data_args(data_set="K400", data_path=str(tmp_path)))
