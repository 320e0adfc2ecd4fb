"""VideoMamba's masked-pretraining command lines run unchanged through run_videomamba_pretraining.py's parser, with
their meaning (OpenGVLab/VideoMamba videomamba/video_sm/exp/{k400,ssv2}/videomamba_middle_mask/run_mask_pretrain.sh),
and the flag combinations pretraining cannot honour are refused naming the flag. Parsing only: nothing is built."""
import shlex

import pytest

import run_videomamba_pretraining as mod
from utils.config import parse_with_config

# the python arguments of upstream's two run_mask_pretrain.sh, as written there (shell variables filled in below)
UPSTREAM_FLAGS = r"""
    --data_path ${DATA_PATH} \
    --prefix ${PREFIX} \
    --num_sample 1 \
    --split ',' \
    --flip True \
    --mask_type 'attention' \
    --mask_ratio 0.8 \
    --model 'videomamba_middle_pretrain' \
    --clip_teacher 'clip_b16' \
    --clip_loss_ratio 1 \
    --clip_loss_type 'l2' \
    --clip_decoder_embed_dim 576 \
    --clip_output_dim 512 \
    --clip_norm_type 'l2' \
    --clip_return_layer 1 \
    --clip_return_interval 1 \
    --clip_student_return_interval 1 \
    --clip_return_cls \
    --clip_return_attn \
    --tubelet_size 1 \
    --lr 1.5e-4 \
    --drop_path 0.4 \
    --batch_size 64 \
    --num_segments 8 \
    --num_frames 8 \
    --sampling_rate 1 \
    --num_workers 12 \
    --opt adamw \
    --opt_betas 0.9 0.95 \
    --warmup_epochs 40 \
    --save_ckpt_freq 1000 \
    --epochs 801 \
    --log_dir ${OUTPUT_DIR} \
    --output_dir ${OUTPUT_DIR} \
    --bf16
"""


def upstream_argv(ds: str, output_dir: str) -> list:
    """The argument list of upstream's ``ds`` script (its PREFIX / DATA_PATH placeholders, OUTPUT_DIR given)."""
    text = (UPSTREAM_FLAGS.replace("${DATA_PATH}", f"your_{ds}_metadata_path/train.csv")
            .replace("${PREFIX}", f"your_{ds}_path").replace("${OUTPUT_DIR}", output_dir))
    return shlex.split(text.replace("\\\n", " "))


def parse(argv):
    return parse_with_config(mod.get_args_parser(), argv)


@pytest.mark.parametrize("ds", ["k400", "ssv2"])
def test_upstream_pretraining_command_parses_unchanged(ds, tmp_path):
    argv = upstream_argv(ds, str(tmp_path / "out"))
    assert argv[:4] == ["--data_path", f"your_{ds}_metadata_path/train.csv", "--prefix", f"your_{ds}_path"]
    assert "," in argv and "attention" in argv  # the shell's quoting removed, as bash passes them
    a = parse(argv)
    assert a.model == "videomamba_middle_pretrain" and a.objective == "clip"  # from the model name
    # VideoMamba passes the training list itself as --data_path
    assert a.train_list == f"your_{ds}_metadata_path/train.csv"
    assert a.data_path == f"your_{ds}_metadata_path" and a.data_root == f"your_{ds}_path" and a.split == ","
    # --num_segments 8 = one frame per segment (TSN): --sampling_rate 1 does not apply
    assert (a.num_segments, a.num_frames, a.sampling_rate, a.tubelet_size) == (8, 8, 0, 1)
    assert a.flip is True and a.num_sample == 1
    assert (a.mask_type, a.mask_ratio) == ("attention", 0.8)
    assert (a.clip_teacher, a.clip_loss_ratio, a.clip_loss_type, a.clip_decoder_embed_dim, a.clip_output_dim,
            a.clip_norm_type, a.clip_return_layer, a.clip_return_interval, a.clip_student_return_interval) == \
        ("clip_b16", 1.0, "l2", 576, 512, "l2", 1, 1, 1)
    assert a.clip_return_cls and a.clip_return_attn
    assert (a.lr, a.min_lr, a.warmup_lr, a.warmup_epochs, a.epochs, a.drop_path, a.weight_decay) == \
        (1.5e-4, 1e-5, 1e-6, 40, 801, 0.4, 0.05)  # min_lr, warmup_lr, weight_decay: upstream's defaults
    assert (a.batch_size, a.opt, a.opt_betas, a.save_ckpt_freq, a.num_workers, a.bf16) == \
        (64, "adamw", [0.9, 0.95], 1000, 12, True)
    assert a.lr_scale_rule == "linear256"  # upstream: lr x total batch x num_sample / 256
    assert a.weight_decay_ssm is True and a.init == "videomamba"  # VideoMamba's student: its groups and init
    assert a.output_dir == a.log_dir == str(tmp_path / "out")
    assert not a.eval and (a.mixup, a.cutmix, a.smoothing, a.reprob, a.aa) == (0.0, 0.0, 0.0, 0.0, "")


def test_upstream_parser_defaults(tmp_path):
    """Without flags: upstream's run_videomamba_pretraining.py defaults (tube masks at 0.75, 16 frames at rate 4)."""
    a = parse(["--output_dir", str(tmp_path)])
    assert (a.epochs, a.lr, a.min_lr, a.warmup_lr, a.warmup_epochs) == (800, 1.5e-4, 1e-5, 1e-6, 40)
    assert (a.mask_type, a.mask_ratio, a.drop_path, a.num_frames, a.sampling_rate) == ("tube", 0.75, 0.0, 16, 4)
    assert (a.flip, a.weight_decay, a.num_segments) == (False, 0.05, 1)


@pytest.mark.parametrize("change, flag", [
    (lambda v: [x for x in v if x != "--clip_return_attn"], "--clip_return_attn"),
    (lambda v: v + ["--objective", "maskfeat"], "--objective maskfeat"),
    (lambda v: v + ["--num_segments", "4", "--num_frames", "8"], "--num_segments 4"),
    (lambda v: v + ["--eval"], "--eval"),
    (lambda v: v + ["--mask_ratio", "1.0"], "--mask_ratio 1.0"),
    (lambda v: v + ["--num_sample", "2"], "--num_sample 2"),
    (lambda v: v + ["--mixup", "0.8"], "--mixup"),
])
def test_refused_combinations_name_the_flag(change, flag, tmp_path):
    argv = change(upstream_argv("k400", str(tmp_path / "out")))
    with pytest.raises(SystemExit) as e:
        parse(argv)
    msg = str(e.value.code)
    assert msg.startswith("error: ") and flag in msg, msg


def test_mask_type_attention_needs_the_clip_objective(tmp_path):
    argv = upstream_argv("k400", str(tmp_path / "out"))
    i = argv.index("videomamba_middle_pretrain")
    argv[i] = "videomambapro_middle_maskfeat"
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert "--mask_type attention" in str(e.value.code)
    # MaskFeat with tube masks and no teacher flags parses; its objective comes from the model name
    argv = ["--model", "videomambapro_middle_maskfeat", "--mask_type", "tube", "--mask_ratio", "0.4",
            "--output_dir", str(tmp_path)]
    a = parse(argv)
    assert (a.objective, a.mask_type, a.mask_ratio) == ("maskfeat", "tube", 0.4)


def test_model_without_a_pretraining_suffix_is_refused(tmp_path):
    with pytest.raises(SystemExit) as e:
        parse(["--model", "videomambapro_middle", "--output_dir", str(tmp_path)])
    assert "--model videomambapro_middle" in str(e.value.code)
