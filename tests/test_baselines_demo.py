"""The baselines in the demo pipeline: run_demo.py / run_class_finetuning.py train and multi-view test each of them,
scripts/infer_video.py classifies videos from their checkpoints (reproducing the run's merged test prediction),
scripts/baseline_table.py reads the runs into one table, and exp/demo/baselines.sh runs every model with the
demo's recipe and one seed. The slow test trains the baselines on a reduced demo and checks they beat chance."""
import json
import os
import stat
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import baseline_table  # noqa: E402
import infer_video  # noqa: E402
from count_flops import count_model  # noqa: E402

import run_demo  # noqa: E402

BASELINES = ("timesformer_test", "vivit_test", "videomambaout_test")
TINY = ["--epochs", "1", "--train_per_class", "2", "--val_per_class", "1", "--test_per_class", "1", "--frames", "8",
        "--size", "32", "--train_crop_scale", "0.5",
        "--", "--num_frames", "4", "--input_size", "32", "--short_side_size", "32", "--batch_size", "4",
        "--num_workers", "0", "--test_num_segment", "2", "--test_num_crop", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("baselines")
    data = str(base / "data")
    out = {}
    for model in BASELINES:
        out[model] = str(base / model)
        run_demo.main(["--data_path", data, "--output_dir", out[model], "--model", model, "--seed", "1"] + TINY)
    return {"data": data, "out": out}


@pytest.mark.parametrize("model", BASELINES)
def test_infer_video_matches_the_runs_multi_view_test(runs, model):
    out, data = runs["out"][model], runs["data"]
    preds = {}
    for line in open(os.path.join(out, "predictions", "0.txt")):
        vid, rest = line.split(" ", 1)
        preds.setdefault(vid, []).append(torch.softmax(torch.tensor(json.loads(rest[:rest.index("]") + 1])), -1))
    videos = [os.path.join(data, v) for v in sorted(preds)]
    res = infer_video.main(["--ckpt", os.path.join(out, "checkpoint-latest.pth"), "--topk", "4"] + videos)
    for v, r in zip(sorted(preds), res):
        got = torch.zeros(4)
        for t in r["topk"]:
            got[t["id"]] = t["prob"]
        assert r["views"] == 2
        torch.testing.assert_close(got, torch.stack(preds[v]).mean(0), atol=2e-4, rtol=0)


def test_baseline_table_reads_the_runs(runs, tmp_path, capsys):
    dirs = [runs["out"][m] for m in BASELINES]
    rows = baseline_table.main(dirs + ["--chance", "25", "--csv", str(tmp_path / "t.csv")])
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("| model") and len(text) == 2 + len(BASELINES)
    for model, row in zip(BASELINES, rows):
        log = [json.loads(x) for x in open(os.path.join(runs["out"][model], "log.txt"))]
        assert row["model"] == model and row["epochs"] == 1
        assert row["params_M"] == pytest.approx(log[0]["n_parameters"] / 1e6)
        assert row["test_top1"] == log[-1]["Final top-1"] and row["beats_chance"] == (row["test_top1"] > 25)
        # the demo recipe patches 2 frames together (--tubelet_size 2)
        assert row["GFLOPs"] == pytest.approx(count_model(model, 4, 32, 4, 2)["total"] / 1e9)
        assert row["time_min"] > 0
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("model,params_M,GFLOPs")


def _shim(tmp_path):
    shim = tmp_path / "python_shim"
    shim.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" >> "$ARGV_OUT"\nprintf "\\n" >> "$ARGV_OUT"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return str(shim)


def test_baselines_script_runs_every_model_with_the_demo_recipe(tmp_path):
    out = tmp_path / "argv"
    env = dict(os.environ, PYTHON=_shim(tmp_path), ARGV_OUT=str(out), OUTPUT_DIR=str(tmp_path / "o"))
    res = subprocess.run(["bash", os.path.join(ROOT, "exp", "demo", "baselines.sh"), "--epochs", "2"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    calls = [c.split("\0")[:-1] for c in out.read_text().split("\n") if c]
    runs, table = calls[:-1], calls[-1]
    models = []
    for argv in runs:
        assert os.path.basename(argv[0]) == "run_demo.py"
        a = run_demo.get_args_parser().parse_args(argv[1:])
        assert a.epochs == 2 and a.seed == 0 and not a.extra  # the demo's recipe, nothing model-specific
        assert a.output_dir == str(tmp_path / "o" / a.model) and a.output_dir in table
        models.append(a.model)
    assert models == ["videomambapro_demo", "timesformer_demo", "vivit_demo", "videomambaout_demo"]
    assert os.path.basename(table[0]) == "baseline_table.py" and "--chance" in table


@pytest.mark.slow
@pytest.mark.parametrize("model", ["timesformer_demo", "vivit_demo", "videomambaout_demo"])
def test_reduced_demo_baselines_beat_chance(tmp_path, model):
    """The demo recipe with 8 of its 16 epochs: each baseline well above chance (25%) on the motion test set
    (12 epochs on 2 dedicated cores: TimeSformer 100%, ViViT 90%, VideoMambaOut 100%)."""
    out = str(tmp_path / model)
    s = run_demo.main(["--data_path", str(tmp_path / "data"), "--output_dir", out, "--model", model, "--epochs", "8"])
    assert s["top1"] >= 50.0, s
