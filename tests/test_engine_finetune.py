"""Engine behaviour with a tiny layered model and tensor datasets (no models/ or datasets/ needed)."""
import json
import os

import numpy as np
import pytest
import torch
import yaml

from engines.evaluate import evaluate, final_test, merge
from engines.runner import run
from run_class_finetuning import get_args_parser
from tests.test_engine_common import FAST_FLAGS, TensorVideos, TinyLayered, fake_wiring
from utils.config import parse_with_config


def _run(argv, wiring=None):
    args = parse_with_config(get_args_parser(), argv)
    return args, run(args, wiring or fake_wiring())


def _log_lines(out):
    with open(os.path.join(out, "log.txt")) as f:
        return [json.loads(line) for line in f]


def test_training_lowers_loss_and_eval_reproduces_top1(tmp_path):
    out = str(tmp_path / "run")
    _, res = _run(FAST_FLAGS + ["--epochs", "4", "--lr", "2.0", "--output_dir", out, "--log_dir", out + "/tb"])
    lines = _log_lines(out)
    epochs = [ln for ln in lines if "epoch" in ln]
    assert [ln["epoch"] for ln in epochs] == [0, 1, 2, 3]
    assert epochs[-1]["train_loss"] < 0.7 * epochs[0]["train_loss"]
    assert {"train_lr", "train_grad_norm", "val_acc1", "val_acc5", "n_parameters"} <= set(epochs[0])
    assert "Final top-1" in lines[-1] and "Final Top-5" in lines[-1]
    assert res["Final top-1"] == lines[-1]["Final top-1"] and res["n_videos"] == 9
    assert os.listdir(out + "/tb"), "tensorboard events expected under --log_dir"
    for name in ("checkpoint-latest.pth", "checkpoint-best.pth", "checkpoint-3.pth", "args.yaml",
                 "predictions/0.txt"):
        assert os.path.exists(os.path.join(out, name)), name
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    assert ck["epoch"] == 3 and ck["global_step"] == 4 * 6 and isinstance(ck["args"], dict)
    assert {"model", "optimizer", "rng", "model_cfg", "best"} <= set(ck)
    # --eval on the saved checkpoint reproduces the reported number exactly
    eval_out = str(tmp_path / "eval")
    _, res2 = _run(FAST_FLAGS + ["--eval", "--resume", os.path.join(out, "checkpoint-latest.pth"),
                                 "--output_dir", eval_out])
    assert res2["Final top-1"] == res["Final top-1"] and res2["Final Top-5"] == res["Final Top-5"]
    assert _log_lines(eval_out)[-1]["Final top-1"] == res["Final top-1"]


def test_update_freq_and_clip_grad_and_ema(tmp_path):
    out = str(tmp_path / "r")
    args, _ = _run(FAST_FLAGS + ["--epochs", "1", "--update_freq", "2", "--clip_grad", "0.5", "--model_ema",
                                 "--model_ema_decay", "0.5", "--output_dir", out, "--no_test_at_end"])
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    assert ck["global_step"] == 3  # 24 items / batch 4 = 6 micro-steps / update_freq 2
    assert "model_ema" in ck
    assert any(not torch.equal(ck["model_ema"][k], ck["model"][k]) for k in ck["model"])
    ln = _log_lines(out)[0]
    assert ln["train_grad_norm"] > 0 and "val_ema_acc1" in ln
    assert args.lr == pytest.approx(0.05 * 4 * 2 / 256)


def _test_rows(model, ds, path):
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    return final_test(loader, model, path)


def test_merge_of_two_ranks_equals_single_process(tmp_path):
    torch.manual_seed(0)
    model = TinyLayered().eval()
    ds = TensorVideos(7, "test", seed=3, views=3)
    _test_rows(model, ds, str(tmp_path / "single" / "0.txt"))
    for r in range(2):
        sub = torch.utils.data.Subset(ds, list(range(r, len(ds), 2)))
        _test_rows(model, sub, str(tmp_path / "two" / f"{r}.txt"))
    a = merge(str(tmp_path / "single"), 1)
    b = merge(str(tmp_path / "two"), 2)
    assert a["n_videos"] == b["n_videos"] == 7 and a["views_per_video"] == b["views_per_video"] == (3, 3)
    assert a["n_views"] == b["n_views"] == 21 and a["n_upstream_headers"] == 0
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"]
    # independent recomputation of the softmax average
    with torch.no_grad():
        probs = {}
        for i in range(len(ds)):
            clip, label, vid, *_ = ds[i]
            probs.setdefault(vid, [label, []])[1].append(torch.softmax(model(clip[None])[0], -1))
    top1 = np.mean([int(torch.stack(p).mean(0).argmax()) == lb for lb, p in probs.values()]) * 100
    assert a["top1"] == pytest.approx(top1)


def test_unreadable_test_videos_counted_as_misses(tmp_path):
    model = TinyLayered().eval()
    ds = TensorVideos(6, "test", seed=3, views=2, bad={1, 4})
    info = _test_rows(model, ds, str(tmp_path / "0.txt"))
    assert info == {"n_views": 8, "n_bad_views": 4}
    msgs = []
    res = merge(str(tmp_path), 1, log=msgs.append)
    assert res["n_videos"] == 4 and res["n_unreadable"] == 2 and res["unreadable"] == ["vid1", "vid4"]
    assert res["top1"] == pytest.approx(res["top1_readable"] * 4 / 6)
    assert any("vid1" in m and "misses" in m for m in msgs)


def test_merge_rejects_malformed_line(tmp_path):
    (tmp_path / "0.txt").write_text("vid0 [0.1, 0.2] 1 0 0\nvid1 0.3 0.1 1 0 0\n")
    with pytest.raises(ValueError, match=r"0.txt:2"):
        merge(str(tmp_path), 1)
    (tmp_path / "0.txt").write_text("vid1 0.3 0.1 1 0 0\nvid0 [0.1, 0.2] 1 0 0\n")  # not a header either
    with pytest.raises(ValueError, match=r"0.txt:1: malformed"):
        merge(str(tmp_path), 1)
    (tmp_path / "0.txt").write_text("vid0 [0.1, 0.2] 1 0 0\ntensor(50.), tensor(100.)\n")  # header only on line 1
    with pytest.raises(ValueError, match=r"0.txt:2: malformed"):
        merge(str(tmp_path), 1)
    (tmp_path / "0.txt").write_text("vid0 [] 1 0 0\n")
    with pytest.raises(ValueError, match=r"0.txt:1: malformed"):
        merge(str(tmp_path), 1)


def test_merge_reads_upstream_written_prediction_files(tmp_path):
    """VideoMamba's final_test: an accuracy line first ("{acc1}, {acc5}" of its last batch, 0-d tensors), then
    "{stem} {str(list)} {label} {chunk} {split}" per view; its DistributedSampler pads with repeated views."""
    rng = np.random.default_rng(0)
    videos = {"abseiling_x1": 0, "zumba_y2": 2, "my clip": 1}  # file stems; one with a space
    rows = [(vid, lab, c, s, rng.normal(size=4).astype(np.float32).tolist()) for vid, lab in videos.items()
            for c in range(2) for s in range(3)]
    halves = [rows[0::2] + [rows[0]], rows[1::2]]  # rank 0 repeats one view (sampler padding)
    for r, part in enumerate(halves):
        body = "".join(f"{v} {str(lg)} {lab} {c} {s}\n" for v, lab, c, s, lg in part)
        (tmp_path / f"{r}.txt").write_text(f"tensor({50.0 + r}, device='cuda:0'), tensor(100., device='cuda:0')\n"
                                           + body)
    msgs = []
    res = merge(str(tmp_path), 2, log=msgs.append)
    assert (res["n_videos"], res["n_views"], res["n_duplicate_views"], res["n_upstream_headers"]) == (3, 18, 1, 2)
    assert res["views_per_video"] == (6, 6) and res["n_files"] == 2
    assert "18 views of 3 videos from 2 files" in msgs[0] and "2 upstream accuracy header lines skipped" in msgs[0]
    # independent recomputation: mean of the per-view softmax (float64), as upstream's compute_video
    hit = 0
    for vid, lab in videos.items():
        lg = np.array([r[4] for r in rows if r[0] == vid], dtype=np.float64)
        p = np.exp(lg - lg.max(1, keepdims=True))
        hit += int(np.argmax((p / p.sum(1, keepdims=True)).mean(0)) == lab)
    assert res["top1"] == pytest.approx(100.0 * hit / 3)
    # ours and upstream's in one directory: ours has no header line, both merge
    ours = "".join(f"{v.replace(' ', '_')} {json.dumps(lg)} {lab} {c} {s}\n" for v, lab, c, s, lg in rows)
    (tmp_path / "1.txt").write_text(ours)
    res2 = merge(str(tmp_path), 2, log=msgs.append)
    assert (res2["n_videos"], res2["n_upstream_headers"]) == (4, 1)  # "my clip" (stem) and "my_clip" (ours)


def test_evaluate_reports_unreadable_items_by_name_and_counts_them_as_misses():
    """Validation follows the multi-view test's rule: unreadable videos are named, stay in the denominator."""
    model = TinyLayered().eval()
    ds = TensorVideos(9, "val", seed=2, bad={0, 5})
    msgs = []
    st = evaluate(torch.utils.data.DataLoader(ds, batch_size=4), model, log=msgs.append)
    assert st["n"] == 9 and st["n_unreadable"] == 2
    with torch.no_grad():
        good = [i for i in range(9) if i not in (0, 5)]
        pred = model(torch.stack([ds[i][0] for i in good])).argmax(-1)
    correct = sum(int(p) == ds.labels[i] for p, i in zip(pred, good))
    assert st["acc1"] == pytest.approx(100.0 * correct / 9)
    assert st["acc1_readable"] == pytest.approx(100.0 * correct / 7)
    assert len(msgs) == 1 and "2 videos could not be read and count as misses: vid0, vid5" in msgs[0]


class _NanAfter(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, out, target):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(out, target)
        return loss * float("nan") if self.calls > self.n else loss


def test_non_finite_loss_saves_state_and_stops(tmp_path, capsys):
    out = str(tmp_path / "nan")
    w = fake_wiring()
    w.build_criterion = lambda args, mixup, model: _NanAfter(3)
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--output_dir", out], w)
    assert e.value.code == 1
    assert "epoch 0, step 3" in capsys.readouterr().err
    assert os.path.exists(os.path.join(out, "checkpoint-nonfinite.pth"))
    assert not os.path.exists(os.path.join(out, "checkpoint-latest.pth"))


def test_flag_conflicts_are_rejected(tmp_path):
    with pytest.raises(SystemExit, match="zero_stage"):
        _run(FAST_FLAGS + ["--zero_stage", "2", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="bf16"):
        _run(FAST_FLAGS + ["--bf16", "--no_amp", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--eval needs weights"):
        _run(FAST_FLAGS + ["--eval", "--output_dir", str(tmp_path / "empty")])


def test_yaml_config_defaults_unknown_keys_and_types(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"lr": 0.5, "opt_betas": [0.9, 0.95], "residual_start": "forward"}))
    args = parse_with_config(get_args_parser(), ["--config", str(cfg), "--lr", "0.25"])
    assert args.lr == 0.25 and args.opt_betas == [0.9, 0.95] and args.residual_start == "forward"
    for bad, needle in (({"lrr": 1.0}, "unknown key 'lrr'"), ({"epochs": "ten"}, "'epochs'"),
                        ({"residual_start": "sideways"}, "'residual_start'")):
        cfg.write_text(yaml.safe_dump(bad))
        with pytest.raises(SystemExit):
            parse_with_config(get_args_parser(), ["--config", str(cfg)])
        assert needle in capsys.readouterr().err


def test_finetune_not_silently_replaced_by_leftover_checkpoint(tmp_path):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "1", "--output_dir", out, "--no_test_at_end"])
    with pytest.raises(SystemExit, match="refusing to let the leftover checkpoint replace --finetune"):
        _run(FAST_FLAGS + ["--epochs", "2", "--output_dir", out, "--finetune", str(tmp_path / "other.pth")])


def test_resume_takes_architecture_args_from_checkpoint(tmp_path, capsys):
    """Arch flags left at their default come from the checkpoint; an explicit conflicting one is a one-line error
    naming the file, what it holds and what was asked for (never a silent switch)."""
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "1", "--output_dir", out, "--no_test_at_end", "--num_frames", "2"])
    args, _ = _run(FAST_FLAGS + ["--epochs", "2", "--output_dir", out, "--no_test_at_end"])
    assert args.num_frames == 2
    o = capsys.readouterr().out
    assert "--num_frames: using 2 from" in o and "auto-resume" in o
    saved = yaml.safe_load(open(os.path.join(out, "args.yaml")))
    assert saved["num_frames"] == 2
    with pytest.raises(SystemExit, match=r"checkpoint-\S+\.pth holds a checkpoint of model 'tiny_layered'.*"
                                         r"--num_frames 8 \(checkpoint: 2\) was asked for"):
        _run(FAST_FLAGS + ["--epochs", "3", "--output_dir", out, "--no_test_at_end", "--num_frames", "8"])


def test_dry_run_builds_on_meta_and_exits(tmp_path):
    args, res = _run(FAST_FLAGS + ["--dry_run", "--output_dir", str(tmp_path)])
    assert res["dry_run"] and not os.path.exists(tmp_path / "checkpoint-latest.pth")



def test_explicit_resume_wins_over_auto_resume(tmp_path, capsys):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "2", "--save_ckpt_freq", "1", "--output_dir", out, "--no_test_at_end"])
    _run(FAST_FLAGS + ["--epochs", "3", "--output_dir", out, "--no_test_at_end",
                       "--resume", os.path.join(out, "checkpoint-0.pth")])
    o = capsys.readouterr().out
    assert "checkpoint-0.pth (explicit --resume)" in o and "start epoch 1" in o


def test_bf16_autocast_on_cpu_trains(tmp_path, capsys):
    out = str(tmp_path / "bf16")
    _run(FAST_FLAGS + ["--epochs", "1", "--bf16", "--output_dir", out, "--no_test_at_end"])
    assert "precision: bf16" in capsys.readouterr().out
    assert _log_lines(out)[0]["train_loss"] > 0
