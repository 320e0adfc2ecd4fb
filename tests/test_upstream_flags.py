"""VideoMamba's own command lines run unchanged: its K400 and SSV2 scripts' exact flag sets dry-run through
run_class_finetuning.py, every flag of its video_sm/run_class_finetuning.py is accepted, and its dataset names keep
their meaning (Kinetics_sparse = TSN sampling, Kinetics = dense clips at --sampling_rate 4, SSV2 videos with
--use_decord and raw frames with --no_use_decord, else by the list's columns)."""

import pytest

import run_class_finetuning as rcf
from engines.runner import run
from utils.config import parse_with_config

# The command lines of VideoMamba's videomamba/video_sm/exp scripts (flags after `python run_class_finetuning.py`;
# ${DATA_PATH} / ${PREFIX} / ${OUTPUT_DIR} filled by the test).
K400_TINY_F8 = """--model videomamba_tiny --data_path {data} --prefix {prefix} --data_set Kinetics_sparse --split ,
--nb_classes 400 --log_dir {out} --output_dir {out} --batch_size 64 --num_sample 2 --input_size 224 --short_side_size 224
--save_ckpt_freq 100 --num_frames 8 --num_workers 12 --warmup_epochs 5 --tubelet_size 1 --epochs 70 --lr 2e-4
--drop_path 0.1 --aa rand-m5-n2-mstd0.25-inc1 --opt adamw --opt_betas 0.9 0.999 --weight_decay 0.1
--test_num_segment 4 --test_num_crop 3 --dist_eval --test_best --bf16"""
K400_MIDDLE_MASK_F16 = """--model videomamba_middle --finetune your_model_path/videomamba_m16_k400_mask_pt_f8_res224.pth
--data_path {data} --prefix {prefix} --data_set Kinetics_sparse --split , --nb_classes 400 --log_dir {out}
--output_dir {out} --batch_size 16 --num_sample 2 --input_size 224 --short_side_size 224 --save_ckpt_freq 100
--num_frames 16 --num_workers 12 --warmup_epochs 5 --tubelet_size 1 --epochs 45 --lr 1e-4 --layer_decay 0.8
--drop_path 0.4 --opt adamw --opt_betas 0.9 0.999 --weight_decay 0.05 --test_num_segment 4 --test_num_crop 3
--dist_eval --test_best --bf16"""
SSV2_SMALL_F16 = """--model videomamba_small --data_path {data} --prefix {prefix} --data_set SSV2 --nb_classes 174
--log_dir {out} --output_dir {out} --batch_size 32 --num_sample 2 --input_size 224 --short_side_size 224
--save_ckpt_freq 100 --num_frames 16 --num_workers 12 --warmup_epochs 5 --tubelet_size 1 --epochs 30 --lr 4e-4
--drop_path 0.35 --opt adamw --opt_betas 0.9 0.999 --weight_decay 0.05 --test_num_segment 2 --test_num_crop 3
--dist_eval --test_best --bf16"""
SSV2_MIDDLE_MASK_288 = """--model videomamba_middle --finetune your_model_path/videomamba_m16_ssv2_mask_ft_f16_res224.pth
--data_path {data} --prefix {prefix} --data_set Kinetics_sparse --split , --nb_classes 174 --log_dir {out}
--output_dir {out} --batch_size 6 --num_sample 2 --input_size 288 --short_side_size 288 --save_ckpt_freq 100
--num_frames 16 --orig_t_size 16 --num_workers 12 --warmup_epochs 2 --tubelet_size 1 --epochs 10 --lr 5e-6
--layer_decay 0.8 --drop_path 0.4 --opt adamw --opt_betas 0.9 0.999 --weight_decay 1e-8 --test_num_segment 2
--test_num_crop 3 --dist_eval --test_best --bf16"""

# Every option of VideoMamba's video_sm/run_class_finetuning.py (its argparse, plus DeepSpeed's config arguments).
UPSTREAM_OPTIONS = """batch_size epochs update_freq save_ckpt_freq model tubelet_size orig_t_size input_size
use_learnable_pos_emb fc_drop_rate drop attn_drop_rate drop_path disable_eval_during_finetuning model_ema
model_ema_decay model_ema_force_cpu opt opt_eps opt_betas clip_grad momentum weight_decay weight_decay_end lr
layer_decay warmup_lr min_lr warmup_epochs warmup_steps color_jitter num_sample aa smoothing train_interpolation
crop_pct short_side_size test_num_segment test_num_crop reprob remode recount resplit mixup cutmix cutmix_minmax
mixup_prob mixup_switch_prob mixup_mode finetune delete_head model_key model_prefix init_scale use_checkpoint
checkpoint_num use_mean_pooling use_cls prefix split filename_tmpl data_path eval_data_path nb_classes
imagenet_default_mean_and_std use_decord no_use_decord num_segments num_frames sampling_rate trimmed time_stride
data_set output_dir log_dir device seed resume auto_resume no_auto_resume save_ckpt no_save_ckpt start_epoch test_best
eval dist_eval num_workers pin_mem no_pin_mem no_amp world_size local_rank dist_on_itp dist_url enable_deepspeed bf16
deepspeed deepspeed_config deepscale deepscale_config deepspeed_mpi flip""".split()


def _argv(text, tmp_path):
    return text.format(data=tmp_path / "lists", prefix=tmp_path / "videos", out=tmp_path / "out").split() + [
        "--dry_run", "--device", "cpu"]


@pytest.mark.parametrize("cmd", [K400_TINY_F8, K400_MIDDLE_MASK_F16, SSV2_SMALL_F16, SSV2_MIDDLE_MASK_288],
                         ids=["k400_tiny_f8", "k400_middle_mask_f16", "ssv2_small_f16", "ssv2_middle_mask_f16x288"])
def test_upstream_command_dry_runs_unchanged(cmd, tmp_path, capsys):
    args = parse_with_config(rcf.get_args_parser(), _argv(cmd, tmp_path))
    res = run(args, rcf.wiring())
    assert res["dry_run"] and res["n_parameters"] > 0
    # VideoMamba's model names select its defaults: ImageNet start unless --finetune, its effective layer decay
    assert args.defaults == "videomamba" and args.layer_decay_mode == "videomamba" and args.weight_decay_ssm
    assert args.data_root == str(tmp_path / "videos")  # --prefix
    assert args.tubelet_size == 1 and args.num_sample == 2 and args.sampling_rate == 0
    if "--finetune" not in cmd:
        assert args.finetune == f"{args.model}.in1k"
    if "--layer_decay" not in cmd:
        assert args.layer_decay == 0.75
    if "SSV2" in cmd:
        assert args.nb_classes == 174 and args.use_rawframes is None  # decided by the list's columns


def test_every_upstream_option_is_accepted():
    parser = rcf.get_args_parser()
    ours = {s.lstrip("-") for a in parser._actions for s in a.option_strings}
    missing = [o for o in UPSTREAM_OPTIONS if o not in ours]
    assert not missing, f"VideoMamba flags our parser rejects: {missing}"


def test_ignored_flags_are_warned_once(capsys):
    flags = ["--model", "videomambapro_test", "--use_learnable_pos_emb", "--num_segments", "2", "--drop", "0.1",
             "--dry_run"]
    rcf.get_args_parser().parse_args(flags)
    out = capsys.readouterr().out
    for name in ("--use_learnable_pos_emb", "--num_segments", "--drop"):
        assert name in out
    rcf.get_args_parser().parse_args(flags)
    assert "accepted but without effect" not in capsys.readouterr().out  # once per process


def _parse(*flags):
    return rcf.get_args_parser().parse_args(["--dry_run", *flags])


def test_dataset_names_keep_their_meaning():
    a = _parse("--data_set", "Kinetics")
    assert (a.sampling_rate, a.nb_classes, a.defaults) == (4, 400, "videomamba")  # dense, upstream default rate
    a = _parse("--data_set", "Kinetics", "--sampling_rate", "2")
    assert a.sampling_rate == 2
    a = _parse("--data_set", "Kinetics_sparse", "--nb_classes", "600", "--sampling_rate", "4")
    assert (a.sampling_rate, a.nb_classes) == (0, 600)  # TSN: the rate is ignored, as upstream
    assert _parse("--data_set", "SSV2", "--use_decord").use_rawframes is False
    assert _parse("--data_set", "SSV2", "--no_use_decord").use_rawframes is True
    assert _parse("--data_set", "SSV2").use_rawframes is None
    ours = _parse("--model", "videomambapro_tiny")
    assert (ours.defaults, ours.layer_decay, ours.layer_decay_mode, ours.num_sample, ours.finetune) == (
        "ours", 1.0, "block", 1, "")
    assert _parse("--model", "videomamba_tiny", "--finetune", "none").finetune == ""
    with pytest.raises(SystemExit):
        _parse("--data_set", "SSV2", "--use_decord", "--use_rawframes")


def test_ssv2_lists_pick_the_dataset_class(tmp_path):
    """A 3-column list (folder total_frames label) is read as raw frames without any flag; 2 columns as videos."""
    from datasets.build import build_dataset, is_rawframe_list
    from datasets.video import RawFrameClsDataset, VideoClsDataset

    (tmp_path / "train.csv").write_text("rawframes/78687 36 27\nrawframes/1 40 3\n")
    (tmp_path / "val.csv").write_text("78687.webm 27\n")
    assert is_rawframe_list(str(tmp_path / "train.csv")) and not is_rawframe_list(str(tmp_path / "val.csv"))
    a = _parse("--data_set", "SSV2", "--data_path", str(tmp_path))
    ds, n = build_dataset(True, False, a)
    assert isinstance(ds, RawFrameClsDataset) and n == 174 and ds.samples[0].total_frames == 36
    ds, _ = build_dataset(False, False, a)
    assert isinstance(ds, VideoClsDataset)
    assert ds.train_transform is None
    a = _parse("--data_set", "SSV2", "--data_path", str(tmp_path), "--use_decord")
    with pytest.raises(ValueError, match="malformed|ambiguous|columns"):
        build_dataset(True, False, a)  # forced videos: the 3-column list is refused, not misread


def test_ssv2_test_views_use_upstream_offsets():
    """VideoMamba's SSV2 test views: segment starts and segment middles (S = 2); Kinetics_sparse: (N - 1) / T
    segments, view k at int(seg / (S + 1) * (k + 1)) after round(seg * i)."""
    from datasets.sampling import kinetics_sparse_indices, ssv2_rawframe_indices, ssv2_video_indices

    for fn in (ssv2_video_indices, ssv2_rawframe_indices):
        assert fn(80, 8, "test", 0, 2) == [0, 10, 20, 30, 40, 50, 60, 70]
        assert fn(80, 8, "test", 1, 2) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert kinetics_sparse_indices(90, 3, "test", 0, 2) == [9, 39, 68]  # seg 89 / 3: starts 0, 30, 59, + 9


def test_upstream_layer_decay_and_ssm_weight_decay():
    """--layer_decay_mode videomamba: only patch_embed / cls_token / pos_embed decayed (blocks and the temporal
    embedding at full lr); --weight_decay_ssm: A_log / A_b_log decayed like upstream, D never."""
    import argparse

    import timm

    import models  # noqa: F401
    from utils.optim import param_groups_from_args

    m = timm.create_model("videomamba_test", num_frames=2)
    a = argparse.Namespace(weight_decay=0.05, layer_decay=0.75, layer_decay_mode="videomamba", weight_decay_ssm=True)
    groups = param_groups_from_args(m, a)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    low = 0.75 ** (m.get_num_layers() + 1)
    assert scale["patch_embed.proj.weight"] == scale["cls_token"] == scale["pos_embed"] == pytest.approx(low)
    assert scale["temporal_pos_embedding"] == scale["layers.0.mixer.in_proj.weight"] == scale["head.weight"] == 1.0
    assert wd["layers.0.mixer.A_log"] == wd["layers.1.mixer.A_b_log"] == 0.05
    assert wd["layers.0.mixer.D"] == wd["pos_embed"] == wd["layers.0.mixer.dt_proj.bias"] == 0.0
    a.layer_decay_mode, a.weight_decay_ssm = "block", False
    groups = param_groups_from_args(m, a)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert scale["layers.0.mixer.in_proj.weight"] < scale["layers.1.mixer.in_proj.weight"] < 1.0
    assert wd["layers.0.mixer.A_log"] == 0.0


def test_lr_scale_rules():
    import argparse

    from utils.schedules import scale_lrs

    a = argparse.Namespace(lr=5e-4, min_lr=1e-5, warmup_lr=1e-6, batch_size=512, update_freq=1, num_sample=1,
                           lr_scale_rule="deit512")
    r = scale_lrs(a, 8)
    assert (r["lr"], r["min_lr"], r["warmup_lr"]) == (pytest.approx(4e-3), 1e-5, 1e-6)  # DeiT: only lr scaled
    a = argparse.Namespace(lr=2e-4, min_lr=1e-6, warmup_lr=1e-6, batch_size=64, update_freq=1, num_sample=2,
                           lr_scale_rule="linear256")
    r = scale_lrs(a, 8)
    assert (r["lr"], r["min_lr"]) == (pytest.approx(8e-4), pytest.approx(4e-6))


def test_init_videomamba():
    import timm

    import models  # noqa: F401

    m = timm.create_model("videomamba_test", num_frames=2, init_mode="videomamba")
    mixer = m.layers[0].mixer
    assert m.cls_token.abs().sum() == 0 and mixer.dt_proj_b.bias.abs().sum() == 0
    assert mixer.dt_proj.bias.abs().sum() > 0  # the forward dt bias keeps Mamba's init, as upstream
    assert mixer.dt_proj.weight.std() < 0.03  # trunc_normal(0.02), not Mamba's uniform dt init
    a = _parse("--model", "videomamba_test", "--init", "videomamba", "--num_frames", "2")
    assert rcf.model_kwargs(a)["init_mode"] == "videomamba"


def test_distill_upstream_head_and_loss():
    import timm
    import torch

    import models  # noqa: F401
    from models.distill import build_distill_wrapper

    teacher = timm.create_model("videomambapro_test_image", embed_dim=16)
    student = timm.create_model("videomambapro_test_image", embed_dim=32)
    w = build_distill_wrapper(student, teacher, style="videomamba")
    assert type(w.distill_head[0]).__name__ == "RMSNorm" and w.proj.out_features == 16
    x = torch.randn(2, 3, 32, 32)
    _, loss = w(x)
    s = torch.nn.functional.normalize(w.distill_head(student.forward_features(x)), dim=-1)
    t = torch.nn.functional.normalize(teacher.forward_features(x), dim=-1)
    torch.testing.assert_close(loss, (2 - 2 * (s * t).sum(-1)).mean())
    import run_pretrain_imagenet as rpi

    a = rpi.get_args_parser().parse_args(["--dry_run", "--no_model_ema"])
    assert (a.distill_style, a.lr_scale_rule, a.model_ema, a.min_lr) == ("videomamba", "deit512", False, 1e-5)


def test_built_model_keeps_the_run_scan_backend():
    """--scan_backend is fixed in the model when it is built (each mixer carries it), and a later change of the
    global switch does not move it; without the flag the model takes the switch's value at build time. It is not
    part of the checkpointed model_cfg."""
    from mamba.ops.backend import set_scan_backend

    a = _parse("--model", "videomambapro_test", "--num_frames", "2", "--scan_backend", "reference",
               "--nb_classes", "3")
    m = rcf.build_model(a)
    assert m.scan_backend == "reference" and {b.mixer.scan_backend for b in m.layers} == {"reference"}
    assert "scan_backend" not in a._model_cfg
    try:
        set_scan_backend("torch")
        assert m.resolved_scan_backend("cpu") == "reference"
        b = _parse("--model", "videomambapro_test", "--num_frames", "2", "--nb_classes", "3")
        assert rcf.build_model(b).scan_backend == "torch"
    finally:
        set_scan_backend(None)
