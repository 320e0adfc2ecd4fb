"""Synthetic motion dataset: layout, determinism, motion = label, single frames carry no label."""
import importlib.util
import os

import numpy as np
import pytest

from datasets import open_video, read_list
from datasets.synthetic import make_clip
from tests.data_utils import synthetic_dataset  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIFT = {0: [(-1, 0)], 1: [(1, 0)], 2: [(0, -1), (0, 1)], 3: [(0, 0)]}  # class 2: left or right


def _square_mask(frame):
    return (frame >= 165).all(axis=-1)  # square colours are >= 170; the background stays far below


@pytest.mark.parametrize("label", [0, 1, 2, 3])
def test_square_moves_in_the_label_direction(label):
    speed = 40 // 20
    seen = set()
    for seed in range(6):
        clip = make_clip(label, np.random.default_rng(seed), frames=8, size=40)
        masks = [_square_mask(f) for f in clip]
        assert masks[0].sum() == (40 // 4) ** 2  # side = size // 4
        moves = [d for d in SHIFT[label]
                 if all(np.array_equal(np.roll(masks[t], (d[0] * speed, d[1] * speed), axis=(0, 1)), masks[t + 1])
                        for t in range(7))]
        assert len(moves) == 1
        seen.add(moves[0])
        bg = ~masks[0] & ~masks[-1]
        assert np.array_equal(clip[0][bg], clip[-1][bg])  # static background
    assert seen == set(SHIFT[label])  # sideways: both directions occur


def test_classes_survive_a_horizontal_flip():
    speed = 40 // 20
    for label in range(4):
        clip = make_clip(label, np.random.default_rng(label), frames=4, size=40)[:, :, ::-1]
        masks = [_square_mask(f) for f in clip]
        assert any(all(np.array_equal(np.roll(masks[t], (d[0] * speed, d[1] * speed), axis=(0, 1)), masks[t + 1])
                       for t in range(3)) for d in SHIFT[label])


def test_single_frame_position_does_not_depend_on_class():
    size, n = 20, 240
    for label in range(4):
        rng = np.random.default_rng(100 + label)
        for t in (0, 5):
            ys, xs = [], []
            for _ in range(n):
                m = _square_mask(make_clip(label, rng, frames=6, size=size)[t])
                # top-left corner of the (possibly wrapped) square: the pixel whose up/left neighbours are off
                corner = m & ~np.roll(m, 1, axis=0) & ~np.roll(m, 1, axis=1)
                y, x = np.argwhere(corner)[0]
                ys.append(y)
                xs.append(x)
            for pos in (ys, xs):
                counts = np.bincount(np.asarray(pos) * 4 // size, minlength=4)
                assert counts.min() > n / 4 - 30 and counts.max() < n / 4 + 30, (label, t, counts)


def test_deterministic_from_seed(tmp_path):
    from datasets.synthetic import make_dataset

    a = make_dataset(str(tmp_path / "a"), seed=3, train_per_class=1, val_per_class=1, test_per_class=0, frames=4,
                     size=16)
    b = make_dataset(str(tmp_path / "b"), seed=3, train_per_class=1, val_per_class=1, test_per_class=0, frames=4,
                     size=16)
    c = make_clip(0, np.random.default_rng(4), frames=4, size=16)
    assert open(a["train"]).read() == open(b["train"]).read()
    name = open(a["train"]).readline().split()[0]
    fa = open_video(os.path.join(a["root"], name)).get(range(4))
    fb = open_video(os.path.join(b["root"], name)).get(range(4))
    assert np.array_equal(fa, fb)
    assert not np.array_equal(make_clip(0, np.random.default_rng(3), frames=4, size=16), c)


def test_layout_and_lists(synthetic_dataset):  # noqa: F811
    p = synthetic_dataset
    assert open(p["labels"]).read().split() == ["move_up", "move_down", "move_sideways", "stay"]
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        vids = read_list(p[split], "video", nb_classes=4)
        raws = read_list(p["rawframes_" + split], "rawframe", nb_classes=4)
        assert len(vids) == len(raws) == n and sorted(s.label for s in vids) == sorted(list(range(4)) * (n // 4))
        assert all(v.rel_path.startswith("videos/") and v.rel_path.endswith(".mp4") for v in vids)
        for v, r in zip(vids, raws):
            assert os.path.basename(r.path) == os.path.basename(v.path)[:-4] and r.label == v.label
            assert r.total_frames == 8 == len(os.listdir(r.path)) == len(open_video(v.path))
    frames = open_video(vids[0].path).get([0, 7])
    assert frames.shape == (2, 32, 32, 3)


def test_script_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mksyn", os.path.join(ROOT, "scripts", "make_synthetic_dataset.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.main(["--out", str(tmp_path / "d"), "--num_classes", "2", "--train_per_class", "1",
                      "--val_per_class", "1", "--test_per_class", "1", "--frames", "4", "--size", "16"])
    assert "train 2 videos" in capsys.readouterr().out
    assert len(read_list(paths["test"], "video", nb_classes=2)) == 2
    assert os.path.isfile(os.path.join(tmp_path, "d", "rawframes_val.csv"))
