"""scripts/device_check.sh: the one-GPU proof script. Without a GPU its --cpu-dry mode runs every stage's
command in a checking form (gpu tests collected, bench flags parsed, a dataset written, the K400 recipe with
every override - native, DeepSpeed ZeRO-2, --eval of a checkpoint - through DRY_RUN=1 and the real parser),
so a flag or command the script uses that does not exist fails here."""
import os
import re
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "device_check.sh")
STAGES = ["gpu tests", "bench", "step64 inner", "split", "pretrain", "data", "train native", "train ds", "eval"]


def _run(tmp_path, *args, **env):
    e = dict(os.environ, WORK=str(tmp_path / "work"), **env)
    e.pop("DRY_RUN", None)
    return subprocess.run(["bash", SCRIPT, *args], cwd=str(tmp_path), env=e, capture_output=True, text=True,
                          timeout=900)


def _summary(stdout):
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("check ")) + 1
    rows = {}
    for line in lines[start:]:
        name = next(s for s in STAGES if line.startswith(s + " "))
        rows[name] = line[len(name):].split()
    return rows


def test_bash_syntax_and_help():
    subprocess.run(["bash", "-n", SCRIPT], check=True)
    r = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, check=True)
    assert "--cpu-dry" in r.stdout and "zero_stage 2" in r.stdout
    assert subprocess.run(["bash", SCRIPT, "--bogus"], capture_output=True, text=True).returncode == 2


def test_cpu_dry_run_checks_every_stage(tmp_path):
    r = _run(tmp_path, "--cpu-dry", BATCH="8")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    rows = _summary(r.stdout)
    assert list(rows) == STAGES
    assert all(v[:2] == ["ok", "(dry)"] for v in rows.values()), rows
    # "2/533 tests collected (531 deselected)" (or "533 tests collected (531 deselected)"): gpu tests exist
    collected = " ".join(rows["gpu tests"][3:])
    m = re.match(r"(\d+)(?:/(\d+))? tests? collected \((\d+) deselected\)", collected)
    assert m, collected
    total = int(m.group(2) or m.group(1))
    assert total - int(m.group(3)) >= 1, collected
    # the block-step split ran for both models (on the CPU, a tiny shape): "videomambapro_tiny X ms scan S% GEMM G%; ..."
    split = " ".join(rows["split"][3:])
    assert re.search(r"videomambapro_tiny [\d.]+ ms scan \d+% GEMM \d+%; timesformer_tiny", split), split
    # the pretraining step beside fine-tuning (CPU stand-in): "student xR time xM mem; +teacher xT; maskfeat xF"
    pretrain = " ".join(rows["pretrain"][3:])
    assert re.fullmatch(r"student x[\d.]+ time x[\d.]+ mem; \+teacher x[\d.]+; maskfeat x[\d.]+", pretrain), pretrain
    assert rows["data"][3:] == ["train", "8", "videos"]  # BATCH videos: one optimizer step in the dry run
    work = tmp_path / "work"
    ds_log = (work / "train_ds.log").read_text()
    assert "--enable_deepspeed --zero_stage 2" in ds_log and "DRY_RUN=1" in ds_log
    eval_log = (work / "eval.log").read_text()
    assert "--eval --resume " + str(work / "native" / "checkpoint-best.pth") in eval_log
    for name in ("train_native", "train_ds"):
        log = (work / f"{name}.log").read_text()
        assert "videomambapro_tiny_f8_res224.sh --data_set video --nb_classes 4" in log
        assert "--epochs 1" in log and f"--data_path {work / 'data'}" in log


def test_a_failing_stage_fails_the_script(tmp_path):
    shim = tmp_path / "python_fails"
    shim.write_text("#!/usr/bin/env bash\nexit 3\n")
    shim.chmod(0o755)
    r = _run(tmp_path, "--cpu-dry", PYTHON=str(shim))
    assert r.returncode == 1, r.stdout[-3000:]
    rows = _summary(r.stdout)
    assert list(rows) == STAGES and all(v[0].startswith("FAIL(") for v in rows.values()), rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_gpu_mode_refuses_without_a_gpu(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 2 and "--cpu-dry" in r.stderr
