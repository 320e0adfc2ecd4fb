"""Never lose a run, never run a checkpoint's code (issue 12): one test per audit finding.

In-process runs use the engine fakes (tests/test_engine_common.py); the DataLoader-worker and stalled-rank
cases run as subprocesses the way a user starts them."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from engines.runner import run
from run_class_finetuning import get_args_parser
from tests.test_engine_common import FAST_FLAGS, ROOT, TensorVideos, TinyLayered, fake_wiring, launcher_free_env
from utils.checkpoint_io import DEEPSPEED_MODEL_FILE, CheckpointError, deepspeed_loader, find_resume_checkpoint
from utils.config import parse_with_config
from utils.distributed import free_port

ENTRY = os.path.join(ROOT, "tests", "test_engine_common.py")


def _run(argv, wiring=None):
    args = parse_with_config(get_args_parser(), argv)
    return args, run(args, wiring or fake_wiring())


def _log(out):
    return [json.loads(x) for x in open(os.path.join(out, "log.txt")) if x.strip()]


_env = launcher_free_env


# ---- 1. security: no checkpoint's code runs, DeepSpeed tag files included --------------------------------------------
class _Payload:
    """Unpickling this (with full unpickling) creates a file: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_tag(folder, marker):
    os.makedirs(folder, exist_ok=True)
    torch.save({"module": TinyLayered().state_dict(), "epoch": 0, "args": {}, "x": _Payload(marker)},
               os.path.join(folder, DEEPSPEED_MODEL_FILE))
    torch.save({"optimizer_state_dict": {}, "x": _Payload(marker)},
               os.path.join(folder, "zero_pp_rank_0_mp_rank_00_optim_states.pt"))


def test_pickled_code_in_a_deepspeed_tag_never_runs(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    _evil_tag(str(out / "checkpoint-0"), str(marker))
    # auto-resume of a DeepSpeed run: the tag is refused (and, being the only checkpoint, stops the run)
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        find_resume_checkpoint(str(out), deepspeed=True, log=lambda m: None)
    # DeepSpeed's own reads (optimizer states) go through the same rule
    with pytest.raises(CheckpointError, match="trust_checkpoint"):
        deepspeed_loader()(str(out / "checkpoint-0" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    # --resume <tag> and --auto_resume through the entry point, as a user runs them
    for extra in (["--resume", str(out / "checkpoint-0")], ["--auto_resume"]):
        res = subprocess.run([sys.executable, ENTRY, *FAST_FLAGS, "--output_dir", str(out), "--enable_deepspeed",
                              *extra], env=_env(), capture_output=True, text=True, timeout=300)
        assert res.returncode != 0 and "--trust_checkpoint" in res.stdout + res.stderr, res.stderr[-2000:]
    assert not marker.exists()


# ---- 2 + 9. the bad-sample cap counts distinct files over the run, and stops with one clean line ---------------------
class _Replacing(TensorVideos):
    """Items 0, 9, 18, 27 are 'unreadable files': each is replaced (another clip) and named in the 4th field."""

    BAD = (0, 9, 18, 27)

    def __getitem__(self, i):
        if self.mode == "train" and i in self.BAD:
            clip, label, idx, _ = super().__getitem__((i + 1) % len(self.clips))
            return clip, label, idx, f"videos/bad_{i}.mp4"
        return super().__getitem__(i)


def _replacing_wiring():
    w = fake_wiring()
    w.build_dataset = lambda tr, tm, a: ((_Replacing(36, "train", 1) if tr else
                                         TensorVideos(9, "test" if tm else "val", 2)), 3)
    return w


def test_bad_sample_cap_counts_distinct_files_not_replacements(tmp_path, capsys):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "4", "--max_bad_samples", "4", "--output_dir", out], _replacing_wiring())
    o = capsys.readouterr().out
    assert [x["epoch"] for x in _log(out) if "epoch" in x] == [0, 1, 2, 3]  # 16 replacements, 4 files: no stop
    for i in _Replacing.BAD:
        assert o.count(f"unreadable training file (replaced by another sample; logged once): videos/bad_{i}.mp4") == 1
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    assert sorted(ck["bad_files"]) == sorted(f"videos/bad_{i}.mp4" for i in _Replacing.BAD)
    # resuming does not die at once: the files are already known
    _run(FAST_FLAGS + ["--epochs", "5", "--max_bad_samples", "4", "--output_dir", out], _replacing_wiring())
    assert "unreadable training file" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--epochs", "1", "--max_bad_samples", "3", "--output_dir", str(tmp_path / "b")],
             _replacing_wiring())
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "4 distinct unreadable training files" in err and "more than --max_bad_samples 3" in err


def test_past_max_bad_samples_one_clean_line_from_dataloader_workers(tmp_path):
    """Real videos, real dataset, 2 loader workers: the cap is hit inside a worker; one line, exit 1."""
    from datasets.synthetic import make_dataset

    d = tmp_path / "data"
    make_dataset(str(d), seed=0, num_classes=4, train_per_class=2, val_per_class=1, test_per_class=1, frames=8,
                 size=32)
    rows = (d / "train.csv").read_text().splitlines()
    for k in range(4):
        (d / f"bad{k}.mp4").write_bytes(b"not a video" * k)
    (d / "train.csv").write_text("\n".join(rows + [f"bad{k}.mp4 {k}" for k in range(4)] * 2) + "\n")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "run_class_finetuning.py"), "--model", "videomambapro_test",
                          "--data_set", "video", "--nb_classes", "4", "--data_path", str(d), "--data_root", str(d),
                          "--num_frames", "4", "--input_size", "32", "--short_side_size", "32", "--batch_size", "2",
                          "--epochs", "1", "--num_workers", "2", "--max_bad_samples", "1", "--device", "cpu",
                          "--output_dir", str(tmp_path / "o"), "--no_pin_mem"],
                         env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    # decord's / FFmpeg's own log lines share stderr and may leave a line unterminated, so our line can follow an
    # FFmpeg prefix ("[mov,mp4,... @ 0x...] stopping: ..."); ours is still exactly one, at the end of its line
    stops = [ln[ln.index("stopping: "):] for ln in res.stderr.splitlines() if "stopping: " in ln]
    assert len(stops) == 1, res.stderr[-3000:]
    assert "distinct unreadable training files" in stops[0] and "train.csv" in stops[0]
    assert "--max_bad_samples 1" in stops[0] and "bad" in stops[0]


# ---- 3. a failing validation keeps the epoch just trained -------------------------------------------------------------
class _BadVal(TensorVideos):
    def __getitem__(self, i):
        if self.mode == "val" and i == 4:
            from utils.errors import UnreadableEvalSampleError

            raise UnreadableEvalSampleError("cannot read validation sample videos/v4.mp4 (val.csv:5): truncated")
        return super().__getitem__(i)


def test_failing_validation_keeps_the_trained_epoch(tmp_path, capsys):
    out = str(tmp_path / "o")
    w = fake_wiring()
    w.build_dataset = lambda tr, tm, a: ((TensorVideos(24, "train", 1) if tr else _BadVal(9, "val", 2)), 3)
    with pytest.raises(SystemExit) as e:
        _run(FAST_FLAGS + ["--output_dir", out], w)
    assert e.value.code == 1 and "stopping: cannot read validation sample videos/v4.mp4" in capsys.readouterr().err
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    assert ck["epoch"] == 0  # saved before validating: the epoch is not lost


# ---- 4. a corrupt latest falls back; all corrupt stops; best and log.txt stay right -----------------------------------
def test_corrupt_latest_falls_back_and_nothing_is_overwritten_or_logged_twice(tmp_path, capsys):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "2", "--save_ckpt_freq", "1", "--output_dir", out, "--no_test_at_end"])
    best_before = torch.load(os.path.join(out, "checkpoint-best.pth"), weights_only=True)["best"]
    for n in ("checkpoint-latest.pth", "checkpoint-1.pth"):
        p = os.path.join(out, n)
        data = open(p, "rb").read()
        open(p, "wb").write(data[: len(data) // 3])
    capsys.readouterr()
    _run(FAST_FLAGS + ["--epochs", "3", "--save_ckpt_freq", "1", "--output_dir", out, "--no_test_at_end"])
    o = capsys.readouterr().out
    assert "skipping checkpoint-latest.pth" in o and "skipping checkpoint-1.pth" in o
    resumed_from = torch.load(os.path.join(out, "checkpoint-0.pth"), weights_only=True)["epoch"]
    assert resumed_from == 0 and (f"start epoch {best_before['epoch'] + 1}" in o)
    epochs = [x["epoch"] for x in _log(out) if "epoch" in x]
    assert epochs == sorted(set(epochs)) == [0, 1, 2]  # no epoch twice; superseded lines kept aside
    best_after = torch.load(os.path.join(out, "checkpoint-best.pth"), weights_only=True)["best"]
    assert best_after["acc1"] >= best_before["acc1"]


def test_every_checkpoint_corrupt_stops_and_keeps_them(tmp_path):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "1", "--output_dir", out, "--no_test_at_end"])
    files = sorted(glob.glob(os.path.join(out, "checkpoint-*.pth")))
    for p in files:
        open(p, "wb").write(b"PK\x03\x04broken")
    before = {p: open(p, "rb").read() for p in files}
    with pytest.raises(SystemExit, match=r"every checkpoint in .* is unusable, refusing to start over"):
        _run(FAST_FLAGS + ["--epochs", "2", "--output_dir", out, "--no_test_at_end"])
    assert {p: open(p, "rb").read() for p in files} == before
    assert [x["epoch"] for x in _log(out) if "epoch" in x] == [0]


def test_best_is_not_replaced_by_a_worse_metric_after_resume(tmp_path, capsys):
    """The resume checkpoint is written before validation, so its 'best' record may be stale: the record in
    checkpoint-best.pth is the reference."""
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "1", "--output_dir", out, "--no_test_at_end", "--lr", "2.0"])
    latest = os.path.join(out, "checkpoint-latest.pth")
    ck = torch.load(latest, weights_only=True)
    best = torch.load(os.path.join(out, "checkpoint-best.pth"), weights_only=True)["best"]
    ck["best"] = {"acc1": -1.0, "epoch": -1}  # as saved before the epoch's validation
    torch.save(ck, latest)
    best["acc1"] = 101.0  # no later epoch can beat it
    b = torch.load(os.path.join(out, "checkpoint-best.pth"), weights_only=True)
    b["best"] = best
    torch.save(b, os.path.join(out, "checkpoint-best.pth"))
    capsys.readouterr()
    _run(FAST_FLAGS + ["--epochs", "2", "--output_dir", out, "--no_test_at_end"])
    assert "best so far: 101.00%" in capsys.readouterr().out
    assert torch.load(os.path.join(out, "checkpoint-best.pth"), weights_only=True)["best"]["acc1"] == 101.0


# ---- 6. a truncated file inside a DeepSpeed tag: that tag is skipped, naming the file ------------------------------
def test_truncated_file_in_a_deepspeed_tag_is_skipped_naming_it(tmp_path):
    out = tmp_path / "o"
    for epoch in (0, 1):
        tag = out / f"checkpoint-{epoch}"
        tag.mkdir(parents=True)
        torch.save({"module": {"w": torch.ones(1)}, "epoch": epoch}, tag / DEEPSPEED_MODEL_FILE)
        torch.save({"optimizer_state_dict": {"s": torch.ones(3)}}, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    bad = out / "checkpoint-1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    bad.write_bytes(bad.read_bytes()[:40])
    msgs = []
    path, ck = find_resume_checkpoint(str(out), deepspeed=True, log=msgs.append)
    assert path == str(out / "checkpoint-0") and ck["epoch"] == 0
    assert any(str(bad) in m and "truncated or corrupt" in m for m in msgs)


# ---- 8. --resume with weights of another size / another model ---------------------------------------------------------
def test_resume_with_a_state_dict_of_another_size_is_one_line(tmp_path):
    p = tmp_path / "bare.pth"
    torch.save(TinyLayered(dim=16).state_dict(), p)
    with pytest.raises(SystemExit, match=r"holds a bare state dict of width 16, 3 blocks, 3 classes, not a training "
                                         r"checkpoint.*--finetune"):
        _run(FAST_FLAGS + ["--resume", str(p), "--output_dir", str(tmp_path / "o")])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": TinyLayered(dim=16).state_dict(), "epoch": 3}, wrapped)
    with pytest.raises(SystemExit, match=r"wrapped.pth holds weights of width 16, 3 blocks, 3 classes, but --model "
                                         r"tiny_layered is width 8, 3 blocks, 3 classes"):
        _run(FAST_FLAGS + ["--resume", str(wrapped), "--output_dir", str(tmp_path / "o")])


def test_resume_with_a_checkpoint_of_another_model_is_an_error_not_a_switch(tmp_path):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "1", "--output_dir", out, "--no_test_at_end"])
    ck = torch.load(os.path.join(out, "checkpoint-latest.pth"), weights_only=True)
    ck["args"]["model"] = "videomamba_small"
    torch.save(ck, tmp_path / "other.pth")
    with pytest.raises(SystemExit, match=r"other.pth holds a checkpoint of model 'videomamba_small'.*--model "
                                         r"'tiny_layered' \(checkpoint: 'videomamba_small'\) was asked for"):
        _run(FAST_FLAGS + ["--epochs", "2", "--resume", str(tmp_path / "other.pth"), "--output_dir", out])


# ---- 11. args.yaml of the resumed run survives a failed start, and is kept when a new run starts ---------------------
def test_failed_start_keeps_args_yaml_and_a_new_start_keeps_the_old_one(tmp_path):
    out = str(tmp_path / "o")
    _run(FAST_FLAGS + ["--epochs", "1", "--output_dir", out, "--no_test_at_end"])
    first = open(os.path.join(out, "args.yaml")).read()
    with pytest.raises(SystemExit):
        _run(FAST_FLAGS + ["--epochs", "2", "--output_dir", out, "--resume", str(tmp_path / "missing.pth")])
    assert open(os.path.join(out, "args.yaml")).read() == first
    _run(FAST_FLAGS + ["--epochs", "2", "--output_dir", out, "--no_test_at_end"])
    assert open(os.path.join(out, "args.1.yaml")).read() == first
    assert yaml.safe_load(open(os.path.join(out, "args.yaml")))["epochs"] == 2


# ---- 12. a stalled rank: the others stop after --dist_timeout naming the collective ------------------------------------
def test_stalled_rank_stops_the_run_after_dist_timeout_naming_the_collective(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", ENTRY, *FAST_FLAGS, "--output_dir", str(tmp_path / "o"), "--dist_eval",
           "--dist_timeout", "0.15"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=_env(FAKE_STOP_RANK="1", FAKE_STOP_AT="3"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert time.time() - t0 < 200  # not the old 30-minute process-group timeout
    assert "rank 0/2: collective 'train step flags' failed after" in out and "--dist_timeout 0.15 min" in out


@pytest.mark.slow
def test_fault_check_script_every_scenario_survives(tmp_path):
    """scripts/fault_check.sh end to end (about 4-5 minutes on 2 cores)."""
    res = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fault_check.sh"), "--work", str(tmp_path / "w")],
                         env=_env(), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    assert "17 of 17 scenarios survived" in res.stdout
