"""scripts/build_lists.py: each dataset's official annotation format (written here, a few rows each, with malformed
rows, unknown classes, duplicates, missing and unreadable videos) becomes exact lists, class maps and reports; the
lists read back through our datasets unchanged and a second run writes the same files."""
import json
import os
import shutil

import numpy as np
import pytest

from datasets import build_dataset, default_data_args
from datasets.synthetic import make_clip, write_frames, write_mp4
from scripts import build_lists as bl


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One good H.264 mp4, one good VP9 webm, a truncated and a zero-byte file, copied to any name by ``put``."""
    d = tmp_path_factory.mktemp("clips")
    frames = make_clip(1, np.random.default_rng(0), frames=6, size=32)
    write_mp4(str(d / "good.mp4"), frames)
    write_mp4(str(d / "good.webm"), frames, codec="libvpx-vp9")
    data = (d / "good.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "empty.mp4").write_bytes(b"")
    return {"dir": d, "frames": frames}


def put(clips, root, rel, kind="good.mp4"):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(str(clips["dir"] / kind), path)
    return path


def report_rows(res):
    """The dropped lines of the report (split, annotation, video, reason) without the path-dependent reasons'
    details, plus the header lines."""
    with open(res["report"]) as f:
        lines = f.read().splitlines()
    head = [x for x in lines if x.startswith("#")]
    rows = [tuple(x.split("\t")) for x in lines if not x.startswith("#")]
    return head, rows


def read(path):
    with open(path) as f:
        return f.read()


def run(ann, videos, out, **kw):
    return bl.build(ann, str(videos), str(out), workers=1, log=lambda *a: None, **kw)


def test_kinetics_lists_labels_and_report(clips, tmp_path):
    v = tmp_path / "videos"
    put(clips, v, "abseiling/aaa_000010_000020.mp4")                # class folders
    put(clips, v, "bbb_000000_000010.mp4")                          # flat
    put(clips, v, "train/ccc.mkv")                                   # youtube id only, another container name
    put(clips, v, "abseiling/ddd_000001_000011.mp4", "truncated.mp4")
    put(clips, v, "eee_000005_000015.mp4", "empty.mp4")
    put(clips, v, "val/fff_000002_000012.mp4")
    put(clips, v, "val/ggg_000003_000013.webm", "good.webm")
    hdr = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(
        hdr + "abseiling,aaa,10,20,train\n"
        '"passing American football (in game), x",bbb,0,10,train\n'
        "zumba,ccc,4,14,train\n"
        "abseiling,ddd,1,11,train\n"
        "zumba,eee,5,15,train\n"
        "zumba,missing,0,10,train\n"
        "abseiling,aaa,10,20,train\n"           # duplicate
        "abseiling,short\n"                      # malformed: 2 columns
        "zumba,hhh,zero,10,train\n"              # malformed: non-integer time
        "\n")
    (tmp_path / "val.csv").write_text(hdr + "zumba,fff,2,12,validate\nunknown class,fff,2,12,validate\n"
                                            "abseiling,ggg,3,13,validate\n")
    ann = bl.parse_kinetics(str(tmp_path / "train.csv"), str(tmp_path / "val.csv"))
    res = run(ann, v, tmp_path / "lists", dataset="kinetics")
    assert read(res["labels"]) == "abseiling\npassing American football (in game), x\nzumba\n"
    assert read(res["lists"]["train"]) == ("abseiling/aaa_000010_000020.mp4,0\nbbb_000000_000010.mp4,1\n"
                                           "train/ccc.mkv,2\n")
    assert read(res["lists"]["val"]) == "val/fff_000002_000012.mp4,2\nval/ggg_000003_000013.webm,0\n"
    assert read(res["lists"]["test"]) == read(res["lists"]["val"])
    head, rows = report_rows(res)
    assert [r[:3] for r in rows] == [
        ("train", "train.csv:9", "-"), ("train", "train.csv:10", "hhh"),
        ("val", "val.csv:3", "fff_000002_000012"),
        ("train", "train.csv:7", "missing_000000_000010"),
        ("train", "train.csv:8", "abseiling/aaa_000010_000020.mp4"),
        ("train", "train.csv:5", "abseiling/ddd_000001_000011.mp4"),
        ("train", "train.csv:6", "eee_000005_000015.mp4")]
    reasons = [r[3] for r in rows]
    assert reasons[0].startswith("malformed row: 2 columns, the header has 5")
    assert reasons[1].startswith("malformed row: empty label / youtube_id or non-integer")
    assert reasons[2] == "unknown class 'unknown class' (not in the class map)"
    assert reasons[3].startswith("missing: no video file for 'missing_000000_000010'")
    assert reasons[4] == "duplicate of train.csv:2"
    assert reasons[5].startswith("unreadable: ") and reasons[6].startswith("unreadable: zero-byte file")
    assert "# train: 3 listed, 6 dropped" in head and "# val: 2 listed, 1 dropped" in head
    # the lists read back through our datasets unchanged
    for split, mode in (("train", True), ("val", False)):
        args = default_data_args(data_set="Kinetics-400", data_path=os.path.dirname(res["lists"]["train"]),
                                 data_root=str(v), split=",", num_frames=2, input_size=32, short_side_size=32)
        ds, nb = build_dataset(mode, False, args)
        rows = [line.rsplit(",", 1) for line in read(res["lists"][split]).splitlines()]
        assert nb == 400 and [(s.rel_path, s.label) for s in ds.samples] == [(p, int(y)) for p, y in rows]
    assert ds[1][0].shape == (3, 2, 32, 32)  # the VP9 webm decodes through the loader
    # a second run over the same folder writes the same files; --classes keeps an existing map
    before = {p: read(p) for p in (*res["lists"].values(), res["labels"], res["report"])}
    again = run(bl.parse_kinetics(str(tmp_path / "train.csv"), str(tmp_path / "val.csv")), v, tmp_path / "lists",
                dataset="kinetics")
    assert {p: read(p) for p in (*again["lists"].values(), again["labels"], again["report"])} == before
    (tmp_path / "map.txt").write_text("zumba\nabseiling\npassing American football (in game), x\n")
    res = run(bl.parse_kinetics(str(tmp_path / "train.csv"), str(tmp_path / "val.csv"), classes_file=str(
        tmp_path / "map.txt")), v, tmp_path / "lists2")
    assert read(res["lists"]["val"]) == "val/fff_000002_000012.mp4,0\nval/ggg_000003_000013.webm,1\n"


def test_kinetics_refuses_unlabelled_test_csv_and_wrong_header(tmp_path):
    (tmp_path / "a.csv").write_text("label,youtube_id,time_start,time_end,split\nx,aaa,0,10,train\n")
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\naaa,0,10,test\n")
    (tmp_path / "b.csv").write_text("name,label\nx,1\n")
    with pytest.raises(SystemExit, match=r"test.csv:1: no label column .*validation set as the test set"):
        bl.parse_kinetics(str(tmp_path / "a.csv"), str(tmp_path / "a.csv"), str(tmp_path / "test.csv"))
    with pytest.raises(SystemExit, match=r"b.csv:1: not a Kinetics annotation CSV"):
        bl.parse_kinetics(str(tmp_path / "b.csv"), str(tmp_path / "a.csv"))


def _ssv2_files(tmp_path):
    labels = {"Holding something": "1", "Pushing something from left to right": "0", "Tearing something": "2"}
    train = [{"id": "11", "label": "pushing a cup from left to right", "template": "Pushing [something] from left "
              "to right", "placeholders": ["a cup"]},
             {"id": "12", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]},
             {"id": "13", "label": "x", "template": "Spinning [something]", "placeholders": ["x"]},
             {"label": "no id", "template": "Holding [something]"},
             {"id": "14", "label": "y", "template": "Tearing [something]", "placeholders": ["y"]},
             {"id": "15", "label": "z", "template": "Holding [something]", "placeholders": ["z"]}]
    val = [{"id": "21", "label": "tearing paper", "template": "Tearing [something]", "placeholders": ["paper"]}]
    for name, obj in (("labels.json", labels), ("train.json", train), ("validation.json", val)):
        (tmp_path / name).write_text(json.dumps(obj, indent=1))
    return [str(tmp_path / n) for n in ("labels.json", "train.json", "validation.json")]


def test_ssv2_webm_and_rawframes(clips, tmp_path):
    labels, train, val = _ssv2_files(tmp_path)
    v = tmp_path / "videos"
    for vid in ("11", "12", "21"):
        put(clips, v, f"{vid}.webm", "good.webm")
    put(clips, v, "14.webm", "truncated.mp4")
    res = run(bl.parse_ssv2(labels, train, val), v, tmp_path / "lists", dataset="ssv2")
    assert read(res["labels"]) == "Pushing something from left to right\nHolding something\nTearing something\n"
    assert read(res["lists"]["train"]) == "11.webm 0\n12.webm 1\n"
    assert read(res["lists"]["val"]) == read(res["lists"]["test"]) == "21.webm 2\n"
    _, rows = report_rows(res)
    assert [r[:3] for r in rows] == [("train", "train.json:entry 3", "13"), ("train", "train.json:entry 4", "-"),
                                     ("train", "train.json:entry 6", "15"), ("train", "train.json:entry 5", "14.webm")]
    assert rows[0][3] == "unknown class 'Spinning something' (not in the labels file)"
    assert rows[1][3] == "malformed entry: needs 'id' and 'template'" and rows[2][3].startswith("missing:")
    assert rows[3][3].startswith("unreadable:")
    # raw frames: 3-column lists with the counted frames; an empty folder and a broken last frame are dropped
    f = tmp_path / "frames"
    write_frames(str(f / "11"), clips["frames"])
    write_frames(str(f / "12"), clips["frames"][:4])
    write_frames(str(f / "21"), clips["frames"][:5])
    os.makedirs(f / "14")
    write_frames(str(f / "15"), clips["frames"][:3])
    (f / "15" / "img_00003.jpg").write_bytes(b"not a jpeg")
    res = run(bl.parse_ssv2(labels, train, val, frames=True), f, tmp_path / "flists", kind="rawframe",
              dataset="ssv2")
    assert read(res["lists"]["train"]) == "11 6 0\n12 4 1\n"
    assert read(res["lists"]["val"]) == "21 5 2\n"
    _, rows = report_rows(res)
    assert rows[-2][2:] == ("14", "unreadable: no frame img_00001.jpg")
    assert rows[-1][2:] == ("15", "unreadable: frame img_00003.jpg undecodable")
    args = default_data_args(data_set="SSV2", data_path=str(tmp_path / "flists"), data_root=str(f), num_frames=2,
                             input_size=32, short_side_size=32)
    ds, nb = build_dataset(False, False, args)
    assert nb == 174 and [(s.rel_path, s.total_frames, s.label) for s in ds.samples] == [("21", 5, 2)]


def test_ucf101_split_files(clips, tmp_path):
    s = tmp_path / "ucfTrainTestlist"
    s.mkdir()
    (s / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n3 YoYo\n")
    (s / "trainlist02.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
        "YoYo/v_YoYo_g08_c01.avi 1\r\n"                  # label does not match the folder
        "Juggling/v_Juggling_g08_c01.avi 4\r\n"          # unknown class
        "YoYo/v_YoYo_g09_c01.avi 3 extra\r\n")            # malformed
    (s / "testlist02.txt").write_text("YoYo/v_YoYo_g01_c01.avi\nhandstandpushups/v_HandStandPushups_g01_c01.avi\n")
    v = tmp_path / "UCF-101"
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                "YoYo/v_YoYo_g08_c01.avi", "YoYo/v_YoYo_g01_c01.avi", "HandstandPushups/v_HandStandPushups_g01_c01.avi"):
        put(clips, v, rel)
    res = run(bl.parse_ucf101(str(s), 2), v, tmp_path / "lists", dataset="ucf101")
    assert read(res["labels"]) == "ApplyEyeMakeup\nHandstandPushups\nYoYo\n"
    assert read(res["lists"]["train"]) == ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n"
                                           "HandstandPushups/v_HandStandPushups_g08_c01.avi 1\n")
    # the test list's lower-case folder is found case-insensitively and listed as it is on disk
    assert read(res["lists"]["test"]) == read(res["lists"]["val"]) == (
        "YoYo/v_YoYo_g01_c01.avi 2\nHandstandPushups/v_HandStandPushups_g01_c01.avi 1\n")
    _, rows = report_rows(res)
    assert [(r[1], r[3][:30]) for r in rows] == [
        ("trainlist02.txt:3", "label 1 does not match the cla"), ("trainlist02.txt:4", "unknown class 'Juggling' (not "),
        ("trainlist02.txt:5", "malformed row 'YoYo/v_YoYo_g09")]
    with pytest.raises(SystemExit, match="trainlist01.txt"):
        bl.parse_ucf101(str(s), 1)


def test_hmdb51_split_files_via_the_command_line(clips, tmp_path, capsys):
    s = tmp_path / "splits"
    s.mkdir()
    (s / "wave_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    (s / "brush_hair_test_split1.txt").write_text("b1.avi 2 \nb2.avi 1 \nb3.avi 7 \n")
    (s / "wave_test_split2.txt").write_text("w1.avi 2 \n")
    v = tmp_path / "hmdb51"
    for rel in ("wave/w1.avi", "wave/w2.avi", "brush_hair/b1.avi", "brush_hair/b2.avi"):
        put(clips, v, rel)
    out = tmp_path / "lists"
    assert bl.main(["hmdb51", "--splits_dir", str(s), "--split_id", "1", "--videos", str(v), "--out", str(out),
                    "--workers", "2"]) == 0
    assert read(out / "labels.txt") == "brush_hair\nwave\n"
    assert read(out / "train.csv") == "brush_hair/b2.avi 0\nwave/w1.avi 1\n"
    assert read(out / "test.csv") == read(out / "val.csv") == "brush_hair/b1.avi 0\nwave/w2.avi 1\n"
    text = read(out / "build_report.txt")
    assert "train/test\tbrush_hair_test_split1.txt:3\tb3.avi\tmalformed row 'b3.avi 7'" in text
    assert "# note: 1 videos marked 0 (not used by split 1)" in text
    assert "--data_path" in capsys.readouterr().out


def test_breakfast_vis4mer_csv(clips, tmp_path):
    hdr = "file_name,duration,action,class_id\n"
    (tmp_path / "train.csv").write_text(hdr + "P03-cam01-P03_cereals,56,cereals,0\nP03-stereo-P03_tea_ch0,88,tea,2\n"
                                              "P04-cam01-P04_milk,51,coffee,0\n"  # class_id 0 named otherwise
                                              "P05-cam01-P05_juice,187,juice\n")
    (tmp_path / "test.csv").write_text(hdr + "P40-webcam02-P40_tea,30,tea,2\nP41-cam01-P41_tea,20,tea,2\n")
    v = tmp_path / "BreakfastII_15fps_qvga_sync"
    for rel in ("P03/cam01/P03_cereals.avi", "P03/stereo/P03_tea_ch0.avi", "P40/webcam02/P40_tea.avi"):
        put(clips, v, rel)
    res = run(bl.parse_breakfast(str(tmp_path / "train.csv"), str(tmp_path / "test.csv")), v, tmp_path / "l",
              dataset="breakfast")
    assert read(res["labels"]) == "cereals\n<unused 1>\ntea\n"
    assert read(res["lists"]["train"]) == "P03/cam01/P03_cereals.avi,0\nP03/stereo/P03_tea_ch0.avi,2\n"
    assert read(res["lists"]["val"]) == read(res["lists"]["test"]) == "P40/webcam02/P40_tea.avi,2\n"
    head, rows = report_rows(res)
    assert [r[:3] for r in rows] == [("train", "train.csv:4", "P04-cam01-P04_milk"), ("train", "train.csv:5", "-"),
                                     ("val", "test.csv:3", "P41-cam01-P41_tea"),
                                     ("test", "test.csv:3", "P41-cam01-P41_tea")]
    assert rows[0][3] == "class_id 0 is 'coffee' here but 'cereals' at train.csv:2"
    assert any("class ids [1] have no rows" in h for h in head)


def test_coin_json(clips, tmp_path):
    db = {"vid_a": {"recipe_type": 1, "class": "AssembleBed", "subset": "training", "annotation": []},
          "vid_b": {"recipe_type": 0, "class": "ArcWeld", "subset": "testing", "annotation": []},
          "vid_c": {"recipe_type": "1", "class": "AssembleBed", "subset": "training"},
          "vid_d": {"recipe_type": 0, "class": "ArcWeld", "subset": "training"},
          "vid_e": {"recipe_type": 1, "class": "AssembleBed", "subset": "validation"}}
    (tmp_path / "COIN.json").write_text(json.dumps({"database": db}))
    v = tmp_path / "videos"
    put(clips, v, "0/vid_b.mp4")
    put(clips, v, "0/vid_d.mp4", "empty.mp4")
    with pytest.raises(SystemExit, match="no train video is left"):  # vid_a missing, vid_d unreadable
        run(bl.parse_coin(str(tmp_path / "COIN.json")), v, tmp_path / "none", dataset="coin")
    assert not os.path.exists(tmp_path / "none" / "train.csv")
    assert "vid_d.mp4\tunreadable: zero-byte file" in read(tmp_path / "none" / "build_report.txt")
    put(clips, v, "1/vid_a.mp4")
    res = run(bl.parse_coin(str(tmp_path / "COIN.json")), v, tmp_path / "unprobed", dataset="coin", probe=False)
    assert read(res["lists"]["train"]) == "1/vid_a.mp4,1\n0/vid_d.mp4,0\n"  # --no_probe lists the empty file
    assert "NOT probed (--no_probe)" in read(res["report"])
    put(clips, v, "0/vid_d.mp4")
    res = run(bl.parse_coin(str(tmp_path / "COIN.json")), v, tmp_path / "l", dataset="coin")
    assert read(res["labels"]) == "ArcWeld\nAssembleBed\n"
    assert read(res["lists"]["train"]) == "1/vid_a.mp4,1\n0/vid_d.mp4,0\n"
    assert read(res["lists"]["test"]) == read(res["lists"]["val"]) == "0/vid_b.mp4,0\n"
    _, rows = report_rows(res)
    assert [r[1] for r in rows] == ["COIN.json:vid_c", "COIN.json:vid_e"]
    assert all(r[3].startswith("malformed entry") for r in rows)


def test_breakfast_and_coin_lists_with_durations(clips, tmp_path, capsys):
    """--with_duration: rows video_path,label,duration (seconds = frames / frame rate, from the probe) that read back
    as the long_video kind and build --data_set Breakfast --trimmed windows; without it the lists stay path,label."""
    from datasets.build import is_long_video_list
    from datasets.lists import read_list
    from datasets.video import LongVideoClsDataset

    v = tmp_path / "videos"
    (v / "P03" / "cam01").mkdir(parents=True)
    long_clip = make_clip(0, np.random.default_rng(1), frames=20, size=32)
    write_mp4(str(v / "P03" / "cam01" / "P03_cereals.avi"), long_clip, fps=8)  # 20 frames at 8 fps: 2.5 s
    put(clips, v, "P40/webcam02/P40_tea.avi")  # 6 frames at 8 fps: 0.75 s
    put(clips, v, "P41/cam01/P41_tea.avi", "truncated.mp4")
    hdr = "file_name,duration,action,class_id\n"
    (tmp_path / "train.csv").write_text(hdr + "P03-cam01-P03_cereals,56,cereals,0\n")
    (tmp_path / "test.csv").write_text(hdr + "P40-webcam02-P40_tea,30,tea,1\nP41-cam01-P41_tea,20,tea,1\n")
    ann = bl.parse_breakfast(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"))
    res = run(ann, v, tmp_path / "l", dataset="breakfast", with_duration=True)
    assert read(res["lists"]["train"]) == "P03/cam01/P03_cereals.avi,0,2.500\n"
    assert read(res["lists"]["test"]) == read(res["lists"]["val"]) == "P40/webcam02/P40_tea.avi,1,0.750\n"
    assert "rows video_path label duration (seconds)" in read(res["report"])
    assert "P41/cam01/P41_tea.avi\tunreadable" in read(res["report"])  # probed as before: a bad file is dropped
    samples = read_list(res["lists"]["train"], "long_video", sep=",", data_root=str(v))
    assert [(s.rel_path, s.label, s.duration) for s in samples] == [("P03/cam01/P03_cereals.avi", 0, 2.5)]
    assert is_long_video_list(res["lists"]["test"], ",")
    args = default_data_args(data_set="Breakfast", data_path=str(tmp_path / "l"), data_root=str(v), split=",",
                             num_frames=2, input_size=32, short_side_size=32, trimmed=2, time_stride=1)
    ds, nb = build_dataset(True, False, args)
    assert nb == 10 and isinstance(ds, LongVideoClsDataset) and len(ds) == 2  # 2.5 s: windows at 0 s and 1 s
    assert ds[0][0].shape == (3, 2, 32, 32)
    # the default stays upstream's Kinetics_sparse format; the flag needs the probe; the command line has it
    plain = run(bl.parse_breakfast(str(tmp_path / "train.csv"), str(tmp_path / "test.csv")), v, tmp_path / "p",
                dataset="breakfast")
    assert read(plain["lists"]["train"]) == "P03/cam01/P03_cereals.avi,0\n"
    with pytest.raises(SystemExit, match="drop --no_probe"):
        run(ann, v, tmp_path / "x", dataset="breakfast", with_duration=True, probe=False)
    db = {"vid_a": {"recipe_type": 0, "class": "ArcWeld", "subset": "training"},
          "vid_b": {"recipe_type": 0, "class": "ArcWeld", "subset": "testing"}}
    (tmp_path / "COIN.json").write_text(json.dumps({"database": db}))
    put(clips, v, "coin/vid_a.mp4")
    put(clips, v, "coin/vid_b.mp4")
    assert bl.main(["coin", "--annotations", str(tmp_path / "COIN.json"), "--videos", str(v / "coin"), "--out",
                    str(tmp_path / "c"), "--workers", "1", "--with_duration"]) == 0
    assert read(tmp_path / "c" / "train.csv") == "vid_a.mp4,0,0.750\n"
    assert "--data_set COIN --trimmed 60 --time_stride 16" in capsys.readouterr().out
