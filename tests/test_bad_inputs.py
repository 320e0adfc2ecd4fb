"""Bad inputs stop before anything is built, in one line (issue 22): BOM lists, flag values, the output folder,
list errors without a traceback, a failed checkpoint save."""
import errno
import os

import pytest
import torch

import run_class_finetuning as rcf
from datasets import read_list
from engines.runner import run
from run_class_finetuning import get_args_parser
from scripts.infer_video import read_label_map
from tests.test_engine_common import FAST_FLAGS, ROOT, fake_wiring
from utils.checkpoint_io import CheckpointSaveError, atomic_save
from utils.config import parse_with_config


def _run(argv, wiring=None):
    args = parse_with_config(get_args_parser(), argv)
    return run(args, wiring or fake_wiring())


def test_lists_and_label_maps_saved_with_a_bom_read_their_first_row(tmp_path):
    p = tmp_path / "train.csv"
    p.write_bytes("\ufeffvideos/a.mp4 1\nvideos/b.mp4 0\n".encode("utf-8"))
    s = read_list(str(p), "video", nb_classes=2)
    assert [x.rel_path for x in s] == ["videos/a.mp4", "videos/b.mp4"]
    assert s[0].path == os.path.join(str(tmp_path), "videos/a.mp4")
    m = tmp_path / "labels.txt"
    m.write_bytes("\ufeffabseiling\nair drumming\n".encode("utf-8"))
    assert read_label_map(str(m)) == {0: "abseiling", 1: "air drumming"}


@pytest.mark.parametrize("flags,expect", [
    (["--batch_size", "0"], "--batch_size 0: must be >= 1"),
    (["--num_frames", "0"], "--num_frames 0: must be >= 1"),
    (["--num_frames", "6", "--tubelet_size", "4"], "--num_frames 6: must be a multiple of --tubelet_size 4"),
    (["--epochs", "0"], "--epochs 0: must be >= 1"),
    (["--num_workers", "-1"], "--num_workers -1: must be >= 0"),
    (["--test_num_crop", "0"], "--test_num_crop 0: must be >= 1"),
    (["--lr", "0"], "--lr 0.0: must be > 0"),
])
def test_bad_flag_values_stop_before_any_build_naming_the_flag(tmp_path, flags, expect):
    built = []
    w = fake_wiring()
    orig = w.build_dataset
    w.build_dataset = lambda *a: built.append(1) or orig(*a)
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--output_dir", str(tmp_path / "o")] + flags, w)
    assert expect in str(e.value) and not built
    assert not (tmp_path / "o").exists()  # stopped before the output folder was made


def test_input_size_and_unknown_model_rejected_with_close_names():
    args = parse_with_config(get_args_parser(), ["--model", "videomambapro_tiny", "--input_size", "30"])
    assert rcf.check_args(args) == ["--input_size 30: must be a multiple of the patch size 16"]
    args = parse_with_config(get_args_parser(), ["--model", "videomambapro_tiniy"])
    (msg,) = rcf.check_args(args)
    assert msg.startswith("--model videomambapro_tiniy is not a registered model; closest: videomambapro_tiny")
    assert msg.count(",") < 5  # the closest few, not the whole registry
    args = parse_with_config(get_args_parser(), ["--model", "videomambapro_tiny", "--input_size", "224"])
    assert rcf.check_args(args) == []


def test_mixer_recompute_is_applied_to_mamba_models_and_refused_for_the_others():
    args = parse_with_config(get_args_parser(), ["--model", "timesformer_tiny", "--mixer_recompute", "all"])
    assert rcf.check_args(args) == ["--mixer_recompute all: --model timesformer_tiny has no Mamba mixer (it applies "
                                    "to the videomamba / videomambapro models)"]
    for given, want in ((None, "inner"), ("none", "none"), ("all", "all")):
        flags = ["--model", "videomambapro_test", "--num_frames", "4", "--input_size", "32", "--nb_classes", "3"]
        args = parse_with_config(get_args_parser(), flags + (["--mixer_recompute", given] if given else []))
        assert rcf.check_args(args) == []
        model = rcf.build_model(args)
        assert {layer.mixer.recompute for layer in model.layers} == {want}


def test_output_dir_under_a_file_is_one_line_before_data(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    built = []
    w = fake_wiring()
    orig = w.build_dataset
    w.build_dataset = lambda *a: built.append(1) or orig(*a)
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--output_dir", str(f / "out")], w)
    assert str(e.value).startswith(f"error: --output_dir {f / 'out'}: not a writable folder") and not built


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    with pytest.raises(SystemExit, match="not a writable folder"):
        _run(FAST_FLAGS + ["--output_dir", str(d)])


def test_list_errors_end_in_one_line_without_traceback(tmp_path, capsys):
    lst = tmp_path / "train.csv"
    lst.write_text("a.mp4 0\nb.mp4 9\n")
    w = fake_wiring()
    w.build_dataset = lambda tr, tm, a: (read_list(str(lst), "video", nb_classes=4), 4)
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--output_dir", str(tmp_path / "o")], w)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "stopping: " in x]
    assert line.startswith(f"stopping: {lst}:2: 'b.mp4 9': label 9 out of range for 4 classes")
    with pytest.raises(SystemExit) as e:
        w.build_dataset = lambda tr, tm, a: (read_list(str(tmp_path / "none.csv"), "video", flag="--data_path"), 4)
        _run(FAST_FLAGS + ["--output_dir", str(tmp_path / "o2")], w)
    assert e.value.code == 1 and "stopping: data list not found" in capsys.readouterr().err


def test_a_full_disk_at_save_is_one_line_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    p = str(tmp_path / "checkpoint-latest.pth")
    atomic_save({"epoch": 0}, p)

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointSaveError) as e:
        atomic_save({"epoch": 1}, p)
    assert str(e.value).startswith(f"could not save checkpoint {p}: ENOSPC (No space left on device)")
    assert e.value.__cause__ is None and e.value.__suppress_context__
    monkeypatch.undo()
    assert torch.load(p, weights_only=True) == {"epoch": 0}
    assert os.listdir(tmp_path) == ["checkpoint-latest.pth"]  # no temp file left behind


def test_a_failed_save_during_training_stops_in_one_line(tmp_path, monkeypatch, capsys):
    import utils.checkpoint_io as cio

    real = cio.torch.save

    def eio(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0") from OSError(
            errno.EIO, "Input/output error")

    out = str(tmp_path / "o")
    monkeypatch.setattr(cio.torch, "save", eio)
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--output_dir", out, "--epochs", "1", "--no_test_at_end"])
    monkeypatch.setattr(cio.torch, "save", real)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "stopping: " in x]
    assert "could not save checkpoint" in line and out in line and "EIO (Input/output error)" in line


# ---- one run per output folder ---------------------------------------------------------------------------------------
def test_a_second_run_into_a_busy_folder_stops_naming_the_first(tmp_path, monkeypatch):
    import json
    import socket
    import subprocess
    import sys

    from utils.rundir import LOCK_NAME, RunLock

    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live pid on this host
    try:
        (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                 "start": "2026-12-01T10:00:00", "slurm_job_id": None}))
        with pytest.raises(SystemExit) as e:
            _run(FAST_FLAGS + ["--output_dir", str(out)])
        msg = str(e.value)
        assert msg.startswith(f"error: --output_dir {out} is in use by another run (host {socket.gethostname()}, "
                              f"pid {holder.pid}, started 2026-12-01T10:00:00")
        assert not (out / "log.txt").exists()  # nothing written by the second run
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone now: its lock is stale and taken over with a message; released when the run ends
    logs = []
    lock = RunLock.acquire(str(out), log=logs.append)
    assert logs and f"pid {holder.pid} is not running on this host" in logs[0]
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK_NAME).exists()
    # a requeued SLURM job (same job id, another host) takes its own lock over
    (out / LOCK_NAME).write_text(json.dumps({"host": "node-17", "pid": 1, "start": "x", "slurm_job_id": "4242"}))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    RunLock.acquire(str(out), log=logs.append).release()
    assert "the same SLURM job, requeued" in logs[-1]
    # ... but another job's live-looking lock on another host is respected
    (out / LOCK_NAME).write_text(json.dumps({"host": "node-17", "pid": 1, "start": "x", "slurm_job_id": "99"}))
    from utils.rundir import RunDirBusyError

    with pytest.raises(RunDirBusyError, match="SLURM job 99"):
        RunLock.acquire(str(out))


def test_the_lock_is_released_after_a_run_and_a_failed_run(tmp_path):
    from utils.rundir import LOCK_NAME

    out = tmp_path / "o"
    _run(FAST_FLAGS + ["--output_dir", str(out), "--epochs", "1", "--no_test_at_end"])
    assert (out / "log.txt").exists() and not (out / LOCK_NAME).exists()
    w = fake_wiring()
    w.build_dataset = lambda *a: (read_list(str(tmp_path / "missing.csv"), "video"), 4)
    with pytest.raises(SystemExit):
        _run(FAST_FLAGS + ["--output_dir", str(out)], w)
    assert not (out / LOCK_NAME).exists()


def test_eval_resume_scores_with_the_runs_data_and_view_settings(tmp_path, capsys):
    out = tmp_path / "o"
    _run(FAST_FLAGS + ["--output_dir", str(out), "--epochs", "1", "--no_test_at_end", "--short_side_size", "40",
                       "--test_num_segment", "3", "--test_num_crop", "2", "--data_set", "video"])
    ckpt = str(out / "checkpoint-best.pth")
    capsys.readouterr()
    args = parse_with_config(get_args_parser(), FAST_FLAGS + ["--eval", "--resume", ckpt, "--test_num_crop", "1"])
    assert (args.short_side_size, args.test_num_segment, args.data_set) != (40, 3, "video")  # parser defaults
    run(args, fake_wiring())
    o = capsys.readouterr().out
    assert (args.short_side_size, args.test_num_segment, args.test_num_crop, args.data_set) == (40, 3, 1, "video")
    assert f"data / view settings from {ckpt}:" in o and "--short_side_size 40" in o and "--data_set 'video'" in o
    assert "--test_num_crop 1 (given; the run used 2)" in o
    beside = out / "eval-checkpoint-best"
    assert args.output_dir == str(beside) and (beside / "log.txt").exists()
    assert (beside / "predictions" / "0.txt").exists()  # not in the current folder


def test_help_opens_with_one_usage_line_then_grouped_flags_with_defaults():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, os.path.join(ROOT, "run_class_finetuning.py"), "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and lines[0] == "usage: run_class_finetuning.py [--config FILE] [flags, grouped below]"
    assert lines[1] == "" and "fine-tuning" in lines[2]
    for group in ("\nrun:\n", "\nmodel:\n", "\noptimizer:\n", "\ndata:\n", "\nevaluation:\n", "\nsystem:\n"):
        assert group in res.stdout, group
    assert "--epochs EPOCHS       (default: 30)" in res.stdout
    assert "per-process batch size (default: 64)" in res.stdout
