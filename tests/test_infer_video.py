"""scripts/infer_video.py without training: label maps, the multi-view protocol (identical to the test dataset's
views), model settings from the checkpoint's stored args, unreadable videos (error / reported skip)."""
import os
import sys

import pytest
import torch

from tests.data_utils import make_tiny_synthetic_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import infer_video as iv  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_synthetic_dataset(str(tmp_path_factory.mktemp("syn")), train_per_class=1, val_per_class=1,
                                       test_per_class=1, frames=8, size=32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A run_class_finetuning-style checkpoint of a random videomamba_test (no training needed here)."""
    import timm

    import models  # noqa: F401

    torch.manual_seed(0)
    kw = dict(num_classes=4, num_frames=4, img_size=32, tubelet_size=1)
    model = timm.create_model("videomamba_test", **kw)
    path = str(tmp_path_factory.mktemp("ck") / "checkpoint-best.pth")
    args = {"model": "videomamba_test", "nb_classes": 4, "num_frames": 4, "input_size": 32, "short_side_size": 32,
            "tubelet_size": 1, "sampling_rate": 0, "test_num_segment": 3, "test_num_crop": 2, "bwd_mask": None,
            "residual_start": None, "no_gate": False}
    torch.save({"model": model.state_dict(), "args": args,
                "model_cfg": dict(kw, model="videomamba_test", **model.options)}, path)
    return path, model


def test_label_map_forms(tmp_path):
    p = tmp_path / "names.txt"
    p.write_text("move_up\nmove_down\nmove_sideways\nstay\n\n")
    assert iv.read_label_map(str(p), 4) == {0: "move_up", 1: "move_down", 2: "move_sideways", 3: "stay"}
    p.write_text("3 stay still\n0 move_up\n\n1,move_down\n")
    assert iv.read_label_map(str(p), 4) == {3: "stay still", 0: "move_up", 1: "move_down"}
    p.write_text("0 a\n0 b\n")
    with pytest.raises(ValueError, match=r"names.txt:2: class id 0 given twice"):
        iv.read_label_map(str(p))
    p.write_text("a\n\nb\n")
    with pytest.raises(ValueError, match=r"names.txt:2: empty class name"):
        iv.read_label_map(str(p))
    p.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="names class 2 but the model has 2 classes"):
        iv.read_label_map(str(p), 2)


def test_views_match_the_test_dataset(data):
    """Same frames, crops and order as VideoClsDataset in test mode (the protocol of --eval)."""
    from datasets import VideoClsDataset

    cfg = {"num_frames": 4, "sampling_rate": 0, "test_num_segment": 3, "test_num_crop": 2, "short_side_size": 40,
           "input_size": 32}
    ds = VideoClsDataset(data["test"], "test", data_root=data["root"], num_frames=4, input_size=32,
                         short_side_size=40, test_num_segment=3, test_num_crop=2)
    video = ds.samples[0].path
    views = iv.video_views(video, cfg)
    assert views.shape == (6, 3, 4, 32, 32)
    for i in range(6):
        clip, _, _, chunk, split, ok = ds[i]
        assert ok and i == chunk * 2 + split
        torch.testing.assert_close(views[i], clip, rtol=0, atol=0)
    # segments 0 and 2 differ (8 frames, 4 per clip, 3 views: upstream's offsets int(1.75 / 4 * (k + 1)) = 0, 0, 1);
    # the crops of a square video coincide, as upstream's (its crops move along the long side only)
    assert not torch.equal(views[0], views[4]) and torch.equal(views[0], views[1])


def test_prediction_is_softmax_average_over_views(data, ckpt, tmp_path):
    path, model = ckpt
    video = os.path.join(data["root"], "videos", "test_2_0000.mp4")
    res = iv.main(["--ckpt", path, video, "--topk", "2", "--json", str(tmp_path / "r.jsonl")])
    # settings came from the checkpoint: 3 x 2 views, 4 frames of 32 px
    assert res[0]["views"] == 6 and len(res[0]["topk"]) == 2
    model.eval()
    cfg = {"num_frames": 4, "sampling_rate": 0, "test_num_segment": 3, "test_num_crop": 2, "short_side_size": 32,
           "input_size": 32}
    with torch.no_grad():
        want = torch.softmax(model(iv.video_views(video, cfg)), -1).mean(0)
    p, i = want.topk(2)
    assert [t["id"] for t in res[0]["topk"]] == i.tolist()
    assert [t["prob"] for t in res[0]["topk"]] == pytest.approx(p.tolist(), abs=1e-5)
    assert res[0]["topk"][0]["label"] == f"class_{int(i[0])}"
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 1
    # a flag wins over the checkpoint: one view
    res1 = iv.main(["--ckpt", path, video, "--test_num_segment", "1", "--test_num_crop", "1"])
    assert res1[0]["views"] == 1


def test_bare_state_dict_needs_model_flags(data, ckpt, tmp_path):
    _, model = ckpt
    bare = str(tmp_path / "bare.pth")
    torch.save(model.state_dict(), bare)
    video = os.path.join(data["root"], "videos", "test_0_0000.mp4")
    with pytest.raises(SystemExit, match="--model"):
        iv.main(["--ckpt", bare, video])
    with pytest.raises(SystemExit, match="do not fit videomamba_test"):  # wrong frame count -> temporal embedding
        iv.main(["--ckpt", bare, video, "--model", "videomamba_test", "--num_frames", "8", "--input_size", "32"])
    res = iv.main(["--ckpt", bare, video, "--model", "videomamba_test", "--num_frames", "4", "--input_size", "32"])
    assert res[0]["views"] == 2 and res[0]["topk"][0]["id"] in range(4)  # defaults 2 x 1 views, 4 classes from head


def test_unreadable_video_error_or_reported_skip(data, ckpt, tmp_path, capsys):
    path, _ = ckpt
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    good = os.path.join(data["root"], "videos", "test_1_0000.mp4")
    with pytest.raises(SystemExit, match=r"cannot read video .*broken.mp4.*--skip_bad"):
        iv.main(["--ckpt", path, good, str(bad)])
    res = iv.main(["--ckpt", path, good, str(bad), str(tmp_path / "missing.mp4"), "--skip_bad"])
    out = capsys.readouterr().out
    assert [r.get("error") is None for r in res] == [True, False, False]
    assert "2 of 3 videos skipped as unreadable" in out and "broken.mp4" in out and "missing.mp4" in out
