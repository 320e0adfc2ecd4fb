"""scripts/prepare_videos.py on real encoded files (VP9 webm and H.264 mp4 written here with PyAV): the outputs decode,
have the short side asked for and the source's frames (identified by their grey level), the lists written beside
read back; a rerun skips what is done; a run killed mid-write leaves no half-written file under a final name and
its rerun ends with exactly the outputs of an uninterrupted run."""
import hashlib
import multiprocessing
import os
import signal
import sys
import time

import numpy as np
import pytest

from datasets import build_dataset, default_data_args
from datasets.synthetic import make_clip, write_mp4
from datasets.video_io import PyAVVideo, probe_rawframes, probe_video, read_rawframes
from scripts import prepare_videos as pv
from tests.data_utils import frame_number, numbered_frames


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    write_mp4(str(d / "a" / "x.webm"), numbered_frames(12, height=64, width=96), fps=12, codec="libvpx-vp9")
    write_mp4(str(d / "b.mp4"), numbered_frames(14, height=80, width=64), fps=25)
    (d / "bad.mp4").write_bytes(b"not a video" * 20)
    (d / "list.csv").write_text("a/x.webm 1\nb.mp4 0\nbad.mp4 2\n")
    return d


def _quiet_main(argv):
    sys.stdout = sys.stderr = open(os.devnull, "w")
    pv.main(argv)


def _tree_hashes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.md5(f.read()).hexdigest()
    return out


def test_encoder_choice_and_sizes(monkeypatch):
    assert pv.scaled_size(1280, 720, 320) == (568, 320) and pv.scaled_size(720, 1280, 320) == (320, 568)
    assert pv.scaled_size(341, 256, 320) == (340, 256)  # never enlarged; even for yuv420p
    assert pv.scaled_size(96, 64, 0) == (96, 64)
    # this machine's PyAV wheel has libx264; without it the best H.264 encoder, else mpeg4 with a message
    assert pv.pick_encoder("auto", log=None) == "libx264"
    monkeypatch.setattr(pv, "available_encoders", lambda: {"libopenh264", "mpeg4"})
    said = []
    assert pv.pick_encoder("auto", log=said.append) == "libopenh264" and "libx264 is not in" in said[0]
    monkeypatch.setattr(pv, "available_encoders", lambda: {"mpeg4"})
    assert pv.pick_encoder("auto", log=said.append) == "mpeg4" and "no H.264 encoder" in said[1]
    with pytest.raises(SystemExit, match="--codec libx264 is not in this PyAV build"):
        pv.pick_encoder("libx264")


def test_resize_and_frames_from_webm_and_mp4(src, tmp_path, capsys):
    r, f = tmp_path / "r", tmp_path / "f"
    res = pv.prepare(str(src), lists=[str(src / "list.csv")], resize_out=str(r), frames_out=str(f), short_side=48,
                     workers=1, log=lambda *a: None)
    assert [rel for rel, _ in res["failed"]] == ["bad.mp4"] and "unreadable source" in res["failed"][0][1]
    assert (r / "list.csv").read_text() == "a/x.mp4 1\nb.mp4 0\n"
    assert (f / "list.csv").read_text() == "a/x 12 1\nb 14 0\n"
    assert "bad.mp4\tunreadable source" in (r / "prepare_report.txt").read_text()
    for rel, n, size in (("a/x", 12, (72, 48)), ("b", 14, (48, 60))):
        p = probe_video(str(r / f"{rel}.mp4"))
        assert (p.frames, (p.width, p.height)) == (n, size)
        with __import__("av").open(str(r / f"{rel}.mp4")) as c:
            assert c.streams.video[0].codec_context.name == "h264"
        video = PyAVVideo(str(r / f"{rel}.mp4"))
        assert [frame_number(x) for x in video.get(list(range(n)))] == list(range(n))
        p = probe_rawframes(str(f / rel))
        assert (p.frames, (p.width, p.height)) == (n, size)
        assert [frame_number(x) for x in read_rawframes(str(f / rel), list(range(n)))] == list(range(n))
    args = default_data_args(data_set="rawframe", train_list=str(f / "list.csv"), data_root=str(f), nb_classes=3,
                             num_frames=2, input_size=32, short_side_size=32)
    ds, _ = build_dataset(True, False, args)
    assert [(s.rel_path, s.total_frames, s.label) for s in ds.samples] == [("a/x", 12, 1), ("b", 14, 0)]
    # a rerun skips the finished outputs (not rewritten) and writes the same lists
    before = {p: os.stat(p).st_mtime_ns for p in (r / "a" / "x.mp4", f / "b" / "img_00001.jpg")}
    hashes = _tree_hashes(r), _tree_hashes(f)
    assert pv.main(["--videos", str(src), "--lists", str(src / "list.csv"), "--resize_out", str(r), "--frames_out",
                    str(f), "--short_side", "48", "--workers", "1"]) == 1  # exit 1: bad.mp4 failed again
    out = capsys.readouterr().out
    assert "0 converted, 2 already done (skipped), 1 failed" in out and "failed: bad.mp4: unreadable source" in out
    assert {p: os.stat(p).st_mtime_ns for p in before} == before
    assert (_tree_hashes(r), _tree_hashes(f)) == hashes
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.csv").write_text("b.mp4 0\n")
    with pytest.raises(SystemExit, match="would overwrite"):
        pv.prepare(str(src), lists=[str(tmp_path / "lists" / "train.csv")], frames_out=str(tmp_path / "lists"),
                   log=lambda *a: None)


def test_killed_run_leaves_no_partial_output_and_rerun_matches(tmp_path):
    s = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_mp4(str(s / f"v{i}.mp4"), make_clip(i % 4, rng, frames=40, size=128)[:, 16:112], fps=25)
    clean_r, clean_f = tmp_path / "clean_r", tmp_path / "clean_f"
    pv.prepare(str(s), resize_out=str(clean_r), frames_out=str(clean_f), short_side=64, workers=1,
               log=lambda *a: None)
    r, f = tmp_path / "r", tmp_path / "f"
    # the run itself in a forked process (the CLI's code path, without a second interpreter's start-up), SIGKILLed
    argv = ["--videos", str(s), "--resize_out", str(r), "--frames_out", str(f), "--short_side", "64", "--workers", "1"]
    p = multiprocessing.get_context("fork").Process(target=_quiet_main, args=(argv,))
    p.start()
    seen_part, t0 = False, time.time()
    try:
        while time.time() - t0 < 120 and p.is_alive():
            parts = [n for d in (r, f) if d.is_dir() for n in os.listdir(d) if ".part" in n]
            done = [n for n in os.listdir(r) if n.endswith(".mp4") and not n.startswith(".")] if r.is_dir() else []
            if parts and done:  # one video finished and the next one half-written
                seen_part = True
                break
            time.sleep(0.002)
    finally:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(timeout=60)
    assert p.exitcode == -signal.SIGKILL
    assert seen_part, "the run ended before it could be killed mid-write"
    for name in os.listdir(r):  # every file under a final name is complete
        if name.endswith(".mp4") and not name.startswith("."):
            assert probe_video(str(r / name)).frames == 40
    for name in os.listdir(f):
        if not name.startswith("."):
            assert probe_rawframes(str(f / name)).frames == 40
    res = pv.prepare(str(s), resize_out=str(r), frames_out=str(f), short_side=64, workers=1, log=lambda *a: None)
    assert not res["failed"] and {x["status"] for x in res["results"].values()} == {"done", "skipped"}
    assert not [n for d in (r, f) for n in os.listdir(d) if ".part" in n]
    # the same outputs as an uninterrupted run: the same files, lists and JPEG frames byte for byte; the same
    # H.264 frames (libx264 in this PyAV build is not byte-reproducible from run to run: now and then it takes
    # another encoding decision for the same input, so the videos are compared decoded)
    assert _tree_hashes(f) == _tree_hashes(clean_f)
    got, want = _tree_hashes(r), _tree_hashes(clean_r)
    assert sorted(got) == sorted(want) and got["prepare_report.txt"] == want["prepare_report.txt"]
    for name in got:
        if name.endswith(".mp4"):
            a, b = PyAVVideo(str(r / name)), PyAVVideo(str(clean_r / name))
            assert len(a) == len(b) == 40
            x, y = a.get(list(range(40))).astype(np.float32), b.get(list(range(40))).astype(np.float32)
            assert x.shape == y.shape == (40, 64, 84, 3) and np.abs(x - y).mean() < 3.0
