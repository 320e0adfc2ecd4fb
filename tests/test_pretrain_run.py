"""Masked pretraining end to end (run_videomamba_pretraining.py on the CPU): the CLIP-aligned student against a
frozen random-weight teacher and MaskFeat train, save, auto-resume and fine-tune through --finetune; the teacher
is in no checkpoint and no optimizer state; VideoMamba's own pretraining command dry-runs unchanged."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.test_engine_common import ROOT

ENTRY = os.path.join(ROOT, "run_videomamba_pretraining.py")
SMALL = ["--input_size", "32", "--short_side_size", "32", "--num_frames", "4", "--batch_size", "2",
         "--num_workers", "0", "--device", "cpu", "--print_freq", "1", "--warmup_epochs", "0", "--lr", "1e-3"]
# a small timm ViT with random weights stands in for CLIP ViT-B/16 (no Hub download here); 32 px -> 2 x 2 patches
TEACHER = ["--clip_teacher", "vit_tiny_patch16_224", "--clip_teacher_ckpt", "random", "--clip_input_resolution",
           "32", "--clip_output_dim", "192", "--clip_return_cls"]


def _run(entry, *argv, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, entry, *argv], env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res.stdout + res.stderr


def _log(out):
    return [json.loads(x) for x in open(os.path.join(out, "log.txt")) if x.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.data_utils import make_tiny_synthetic_dataset

    root = tmp_path_factory.mktemp("pt")
    return make_tiny_synthetic_dataset(str(root / "data"), train_per_class=2, frames=8)


def _pretrain(data, out, model, *extra, epochs=1):
    return _run(ENTRY, "--model", model, "--data_path", data["train"], *SMALL, *extra, "--epochs", str(epochs),
                "--output_dir", str(out))


@pytest.mark.parametrize("mask", ["tube", "attention"])
def test_clip_pretraining_trains_saves_resumes_and_finetunes(data, tmp_path, mask):
    out = tmp_path / "pt"
    extra = [*TEACHER, "--mask_type", mask, "--mask_ratio", "0.5"] + (["--clip_return_attn"] if mask == "attention"
                                                                     else [])
    first = _pretrain(data, out, "videomambapro_test_pretrain", *extra)
    assert "training step: CLIP distillation" in first and "RANDOM weights" in first
    second = _pretrain(data, out, "videomambapro_test_pretrain", *extra, epochs=2)
    assert "auto-resume" in second and "start epoch 1" in second
    assert [x["epoch"] for x in _log(out) if "epoch" in x] == [0, 1]
    ck = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    keys = set(ck["model"])
    assert any(k.startswith("clip_decoder.") for k in keys)
    assert not any("teacher" in k or k.startswith(("blocks.", "visual.")) for k in keys), sorted(keys)[:5]
    # the optimizer holds the student's parameters only (the teacher is frozen and outside it)
    n_student = sum(1 for k in keys if not k.endswith(("running_mean", "running_var")))
    assert len(ck["optimizer"]["state"]) <= n_student
    # the checkpoint fine-tunes: the decoder is dropped (named), nothing unexpected
    ft = _run(os.path.join(ROOT, "run_class_finetuning.py"), "--model", "videomambapro_test", "--data_set", "video",
              "--data_path", data["root"], "--nb_classes", "4", *SMALL, "--epochs", "1", "--test_num_segment", "1",
              "--test_num_crop", "1", "--finetune", str(out / "checkpoint-latest.pth"), "--output_dir",
              str(tmp_path / "ft"), "--mixup", "0", "--cutmix", "0")
    report = next(line for line in ft.splitlines() if line.startswith("--finetune report:"))
    assert "clip_decoder" in report and "'unexpected': []" in report, report


def test_maskfeat_pretraining_trains_and_resumes(data, tmp_path):
    out = tmp_path / "mf"
    first = _pretrain(data, out, "videomambapro_test_maskfeat", "--mask_type", "tube", "--mask_ratio", "0.5")
    assert "training step: MaskFeat" in first and "teacher" not in first.lower().split("training step")[0][-200:]
    second = _pretrain(data, out, "videomambapro_test_maskfeat", "--mask_type", "tube", "--mask_ratio", "0.5",
                       epochs=2)
    assert "start epoch 1" in second
    losses = [x["train_loss"] for x in _log(out) if "epoch" in x]
    assert len(losses) == 2 and all(v == v and v > 0 for v in losses)
    keys = set(torch.load(out / "checkpoint-latest.pth", weights_only=True)["model"])
    assert "mask_token" in keys and any(k.startswith("maskfeat_head.") for k in keys)


def test_videomamba_pretraining_command_dry_runs_unchanged():
    """VideoMamba's exp/k400/videomamba_middle_mask/run_mask_pretrain.sh python command, as published."""
    argv = ("--data_path your_k400_metadata_path/train.csv --prefix your_k400_path --num_sample 1 --split , "
            "--flip True --mask_type attention --mask_ratio 0.8 --model videomamba_middle_pretrain --clip_teacher "
            "clip_b16 --clip_loss_ratio 1 --clip_loss_type l2 --clip_decoder_embed_dim 576 --clip_output_dim 512 "
            "--clip_norm_type l2 --clip_return_layer 1 --clip_return_interval 1 --clip_student_return_interval 1 "
            "--clip_return_cls --clip_return_attn --tubelet_size 1 --lr 1.5e-4 --drop_path 0.4 --batch_size 64 "
            "--num_segments 8 --num_frames 8 --sampling_rate 1 --num_workers 12 --opt adamw --opt_betas 0.9 0.95 "
            "--warmup_epochs 40 --save_ckpt_freq 1000 --epochs 801 --log_dir x --output_dir x --bf16").split()
    out = _run(ENTRY, *argv, "--dry_run", "--device", "cpu")
    assert "dry run: arguments, model, datasets and optimizer built" in out
    assert "model videomamba_middle_pretrain:" in out


# ------------------------------------------------------------------ the exp/pretrain recipes under torchrun, 2 ranks
from tests.test_recipes_torchrun import _recipe, synth  # noqa: E402,F401  (the K400-format synthetic set fixture)

TINY = ["--input_size", "32", "--short_side_size", "32", "--num_frames", "4", "--num_segments", "4", "--batch_size",
        "2", "--num_workers", "1", "--warmup_epochs", "0", "--print_freq", "1"]


def _clip_tiny(model):
    return [*TINY, "--model", model, "--clip_decoder_embed_dim", "32", *TEACHER]


RECIPES = {  # recipe -> (tiny overrides, whether its DeepSpeed run is in the default suite; the rest are slow)
    "pretrain/videomambapro_middle_mask_pt_k400.sh": (_clip_tiny("videomambapro_test_pretrain"), False),
    "pretrain/videomamba_middle_mask_pt_k400.sh": (_clip_tiny("videomamba_test_pretrain"), False),
    "pretrain/videomambapro_middle_mask_pt_ssv2.sh": (_clip_tiny("videomambapro_test_pretrain"), False),
    "pretrain/videomamba_middle_mask_pt_ssv2.sh": (_clip_tiny("videomamba_test_pretrain"), False),
    "pretrain/videomambapro_middle_maskfeat_k400.sh": ([*TINY, "--model", "videomambapro_test_maskfeat"], True),
}


def _cases():
    for recipe, (_, ds_default) in RECIPES.items():
        for ds in (False, True):
            default = (not ds and recipe == "pretrain/videomambapro_middle_mask_pt_k400.sh") or (ds and ds_default)
            yield pytest.param(recipe, ds, marks=() if default else pytest.mark.slow, id=f"{recipe}-{'ds' if ds else 'native'}")


@pytest.mark.parametrize("recipe,deepspeed", list(_cases()))
def test_pretraining_recipe_two_ranks_bf16_trains_saves_resumes(synth, tmp_path, recipe, deepspeed):  # noqa: F811
    out = tmp_path / "run"
    extra = list(RECIPES[recipe][0]) + (["--enable_deepspeed", "--zero_stage", "2"] if deepspeed else [])
    env = dict(DATA_PATH=str(synth / "k400" / "train.csv"), DATA_ROOT=str(synth / "data"))
    first = _recipe(recipe, out, *extra, "--epochs", "1", **env)
    assert "distributed init (torchrun, cpu:gloo): rank 0/2" in first and "precision: bf16" in first
    assert f"back end: {'deepspeed' if deepspeed else 'native'}" in first
    second = _recipe(recipe, out, *extra, "--epochs", "2", **env)
    assert "auto-resume" in second and "start epoch 1" in second
    rows = _log(out)
    assert [x["epoch"] for x in rows if "epoch" in x] == [0, 1]
    assert all(x["train_loss"] == x["train_loss"] for x in rows if "epoch" in x)  # finite, logged
    assert (out / "checkpoint-latest.pth").is_file()
