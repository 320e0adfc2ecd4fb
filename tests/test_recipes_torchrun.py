"""The recipes as a cluster runs them: the real exp/ scripts, unchanged, under torchrun with 2 CPU ranks (gloo).

Only what a CPU cannot afford is overridden, by flags appended to the recipe (recipes forward extra arguments) and
the recipes' own environment variables: the model size (the *_test variant), input size and frames, the data
(a small synthetic set in each recipe's list format), epochs, batch and loader workers. Each run trains,
validates, runs the multi-view test, is run again with one more epoch (auto-resume from its checkpoint), and
must log every epoch once and a `Final top-1` over every test video counted exactly once.

K400 native bf16 and K400 DeepSpeed ZeRO-2 bf16 run in the default suite; SSV2 (raw frames), ImageNet
pre-training and the demo are marked slow.
"""
import json
import os
import shutil
import subprocess

import pytest

from tests.test_engine_common import ROOT
from utils.distributed import free_port

SMALL = ["--input_size", "32", "--short_side_size", "32", "--num_frames", "4", "--batch_size", "2",
         "--num_workers", "1"]
N_TEST, VIEWS = 8, 4 * 3  # test videos; test_num_segment x test_num_crop of the K400 recipes


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The synthetic motion set (4 classes; 16 train / 8 val / 8 test videos of 16 frames at 32 px) in the layouts
    the recipes expect: K400 comma-separated video lists, SSV2 raw-frame lists, an ImageNet class-folder tree."""
    from datasets.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synth")
    make_dataset(str(root / "data"), seed=0, num_classes=4, train_per_class=4, val_per_class=2, test_per_class=2,
                 frames=16, size=32)
    data = root / "data"
    for fmt, src in (("k400", "{s}.csv"), ("ssv2", "rawframes_{s}.csv")):
        (root / fmt).mkdir()
        for s in ("train", "val", "test"):
            rows = (data / src.format(s=s)).read_text().splitlines()
            sep = "," if fmt == "k400" else " "
            (root / fmt / f"{s}.csv").write_text("".join(sep.join(r.split(" ")) + "\n" for r in rows))
    for split, src in (("train", "train"), ("val", "val")):
        for row in (data / f"rawframes_{src}.csv").read_text().splitlines():
            folder, _, label = row.split(" ")
            dst = root / "imagenet" / split / f"class{label}"
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / folder / "img_00001.jpg", dst / f"{os.path.basename(folder)}.JPEG")
    return root


def _recipe(recipe, out, *extra, timeout=900, **env):
    e = dict(os.environ, GPUS="2", MASTER_PORT=str(free_port()), OUTPUT_DIR=str(out), FINETUNE="none",
             OMP_NUM_THREADS="1", **env)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        e.pop(k, None)
    res = subprocess.run(["bash", os.path.join(ROOT, "exp", recipe), *extra], env=e, capture_output=True,
                         text=True, timeout=timeout, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res.stdout + res.stderr


def _log(out):
    return [json.loads(x) for x in open(os.path.join(out, "log.txt")) if x.strip()]


def _check_test_views(out, n_videos, views):
    """Every test video scored exactly once over both ranks' prediction files, with all of its views."""
    seen = {}
    for r in (0, 1):
        for line in open(os.path.join(out, "predictions", f"{r}.txt")):
            vid = line.split(" ", 1)[0]
            chunk, split = line.rsplit(" ", 2)[1:]
            key = (vid, int(chunk), int(split))
            assert key not in seen, f"{key} predicted twice"
            seen[key] = r
    assert len({k[0] for k in seen}) == n_videos and len(seen) == n_videos * views


def _train_then_resume(recipe, out, extra, expect_test=True, **env):
    """Epoch 0, then the same command with --epochs 2: auto-resume continues at epoch 1."""
    first = _recipe(recipe, out, *extra, "--epochs", "1", **env)
    assert "distributed init (torchrun, cpu:gloo): rank 0/2" in first
    second = _recipe(recipe, out, *extra, "--epochs", "2", **env)
    assert "auto-resume" in second and "start epoch 1" in second
    lines = _log(out)
    epochs = [x["epoch"] for x in lines if "epoch" in x]
    assert epochs == [0, 1], epochs  # every epoch logged once
    final = [x for x in lines if "Final top-1" in x]
    assert len(final) == 2 and all(0.0 <= f["Final top-1"] <= 100.0 for f in final)
    if expect_test:
        assert all(f["n_videos"] == N_TEST and f["n_unreadable"] == 0 for f in final)
        assert final[-1]["views_per_video"] == [VIEWS, VIEWS]
        _check_test_views(out, N_TEST, VIEWS)
    return first, second, lines


def test_k400_recipe_native_bf16_two_ranks(synth, tmp_path):
    out = tmp_path / "k400"
    first, second, lines = _train_then_resume(
        "k400/videomambapro_tiny_f8_res224.sh", out, ["--model", "videomambapro_test", *SMALL],
        DATA_PATH=str(synth / "k400"), DATA_ROOT=str(synth / "data"))
    assert "precision: bf16" in first and "back end: native" in first
    assert "from scratch" in first.lower()  # FINETUNE=none says so
    assert all(x["val_n"] == 8 for x in lines if "epoch" in x)


def test_k400_recipe_deepspeed_zero2_bf16_two_ranks(synth, tmp_path):
    out = tmp_path / "k400_ds"
    first, second, lines = _train_then_resume(
        "k400/videomambapro_tiny_f8_res224.sh", out,
        ["--model", "videomambapro_test", *SMALL, "--enable_deepspeed", "--zero_stage", "2"],
        DATA_PATH=str(synth / "k400"), DATA_ROOT=str(synth / "data"))
    assert "precision: bf16" in first and "back end: deepspeed" in first
    assert "resumed DeepSpeed state from" in second
    cfg = json.load(open(out / "deepspeed_config.json"))
    assert cfg["bf16"] == {"enabled": True} and cfg["zero_optimization"]["stage"] == 2
    # retention: a tag folder only beside a kept checkpoint-N.pth (each run's last epoch is kept) or the newest
    tags = sorted(f for f in os.listdir(out) if os.path.isdir(out / f) and f.startswith("checkpoint-"))
    assert tags == ["checkpoint-0", "checkpoint-1"] and all((out / f"{t}.pth").is_file() for t in tags)


@pytest.mark.slow
def test_ssv2_recipe_rawframes_two_ranks(synth, tmp_path):
    out = tmp_path / "ssv2"
    first, _, _ = _train_then_resume(
        "ssv2/videomambapro_tiny_f8_res224.sh", out, ["--model", "videomambapro_test", *SMALL],
        expect_test=False, DATA_PATH=str(synth / "ssv2"), DATA_ROOT=str(synth / "data"))
    final = [x for x in _log(out) if "Final top-1" in x][-1]
    views = 2 * 3  # SSV2 recipes: 2 temporal x 3 spatial views
    assert final["n_videos"] == N_TEST and final["views_per_video"] == [views, views]
    _check_test_views(out, N_TEST, views)
    assert "rawframe" in first.lower()


@pytest.mark.slow
def test_imagenet_pretraining_recipe_two_ranks(synth, tmp_path):
    out = tmp_path / "imnet"
    _, _, lines = _train_then_resume(
        "imagenet/videomambapro_tiny_res224.sh", out,
        ["--model", "videomambapro_test_image", "--input_size", "32", "--batch_size", "2", "--num_workers", "1"],
        expect_test=False, DATA_PATH=str(synth / "imagenet"), DATA_ROOT="")
    assert all(x["val_n"] == 8 for x in lines if "epoch" in x)


@pytest.mark.slow
def test_demo_recipe_two_ranks(tmp_path):
    out, data = tmp_path / "demo", tmp_path / "demo_data"
    small = ["--epochs", "1", "--train_per_class", "4", "--val_per_class", "2", "--test_per_class", "2",
             "--frames", "8", "--size", "32", "--model", "videomambapro_test"]
    env = dict(DATA_PATH=str(data))
    first = _recipe("demo/videomambapro_demo.sh", out, *small, "--",
                    "--input_size", "32", "--short_side_size", "32", "--batch_size", "2", **env)
    assert "distributed init (torchrun, cpu:gloo): rank 0/2" in first and "final multi-view test top-1" in first
    small[1] = "2"
    second = _recipe("demo/videomambapro_demo.sh", out, *small, "--keep_log", "--",
                     "--input_size", "32", "--short_side_size", "32", "--batch_size", "2", "--auto_resume", **env)
    assert "start epoch 1" in second
    lines = _log(out)
    assert [x["epoch"] for x in lines if "epoch" in x] == [0, 1]
    final = [x for x in lines if "Final top-1" in x]
    assert len(final) == 2 and final[-1]["n_videos"] == 8 and final[-1]["views_per_video"] == [2, 2]
    _check_test_views(out, 8, 2)
