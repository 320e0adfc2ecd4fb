#!/usr/bin/env python
"""Masked video pretraining of VideoMambaPro / VideoMamba (and TimeSformer with MaskFeat); VideoMamba's flags.

    torchrun --nproc_per_node=8 run_videomamba_pretraining.py --model videomambapro_middle_pretrain \\
        --data_path LISTS/train.csv --prefix VIDEOS --mask_type attention --mask_ratio 0.8 --clip_teacher clip_b16 ...

Objectives (``--objective``, default from the model name):
- ``clip`` (``*_pretrain`` models): VideoMamba's / UMT's teacher-aligned masked pretraining: the student scans the
  visible tokens only and matches a frozen CLIP ViT-B/16's normalised features there (``--clip_*`` flags).
- ``maskfeat`` (``*_maskfeat`` models): masked tokens replaced by a learned mask token, HOG of the masked patches
  regressed (MaskFeat); no teacher.
Same launcher, resume, preemption, DeepSpeed, bf16, log.txt and TensorBoard as run_class_finetuning.py; no
validation (the checkpoints fine-tune with ``run_class_finetuning.py --finetune OUT/checkpoint-latest.pth``).
"""
from __future__ import annotations

import os

from datasets.masking import MASK_TYPES

import run_class_finetuning as ft
from utils.config import parse_with_config

OBJECTIVES = ("clip", "maskfeat")
MODEL_SUFFIX = {"_pretrain": "clip", "_maskfeat": "maskfeat"}
CLIP_LOSSES = ("l2", "mse", "smooth_l1")
# VideoMamba's pretraining flags that are accepted for its command lines to run unchanged but change nothing here
IGNORED_PRETRAIN_FLAGS = (
    ("decoder_depth", 4, "VideoMAE's pixel decoder; the CLIP-aligned student has a linear decoder"),
    ("normlize_target", "True", "VideoMAE's pixel-target normalisation; no pixel target here"),
    ("clip_decoder_type", "SA_Decoder", "VideoMamba's student always uses its linear clip_decoder (head + norm)"),
    ("color_jitter", 0.0, "VideoMAE's pretraining colour jitter; its video pretraining pipeline applies none either"),
)


def get_args_parser():
    p = ft.get_args_parser("VideoMambaPro masked video pretraining", data_set_default="video",
                           honoured=("num_segments", "color_jitter"))
    p.resolvers.insert(0, resolve_pretrain_args)
    g = p.add_argument_group("masked pretraining")
    g.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="clip: CLIP-teacher alignment (VideoMamba); maskfeat: HOG targets (default: from the model "
                        "name, *_pretrain -> clip, *_maskfeat -> maskfeat)")
    g.add_argument("--mask_type", choices=MASK_TYPES, default="tube",
                   help="random / tube / random_row / tube_row (whole rows of patches) masks drawn per clip, or "
                        "attention: the teacher's cls attention keeps the most-attended tokens visible")
    g.add_argument("--mask_ratio", type=float, default=0.75, help="fraction of the patch tokens masked")
    g.add_argument("--num_segments", type=int, default=1,
                   help="> 1: one frame from each of this many segments (TSN; must equal --num_frames); 1: "
                        "--num_frames frames at --sampling_rate")
    g.add_argument("--clip_teacher", default="clip_b16",
                   help="clip_b16 (timm vit_base_patch16_clip_224.openai) or a timm ViT name")
    g.add_argument("--clip_teacher_ckpt", default=None,
                   help="teacher weights: a local file; default: the tag's weights from the Hub cache; random: "
                        "random weights (tests and demos only)")
    g.add_argument("--clip_input_resolution", type=int, default=224, help="frames are resized to this for the "
                   "teacher")
    g.add_argument("--clip_loss_ratio", type=float, default=1.0)
    g.add_argument("--clip_loss_type", choices=CLIP_LOSSES, default="l2",
                   help="l2: 2 - 2 cos (normalised features); mse; smooth_l1")
    g.add_argument("--clip_decoder_embed_dim", type=int, default=None, help="the student's width (default)")
    g.add_argument("--clip_output_dim", type=int, default=512, help="the teacher's feature width")
    g.add_argument("--clip_norm_type", choices=("l2", "none"), default="l2")
    g.add_argument("--clip_return_layer", type=int, default=1, help="teacher / student layers aligned")
    g.add_argument("--clip_return_interval", type=int, default=1, help="spacing of the teacher's returned layers")
    g.add_argument("--clip_student_return_interval", type=int, default=1,
                   help="spacing of the student's returned layers")
    g.add_argument("--clip_return_cls", action="store_true", help="align the cls token too")
    g.add_argument("--clip_return_attn", action="store_true",
                   help="the teacher returns its cls attention (needed by --mask_type attention)")
    for dest, default, why in IGNORED_PRETRAIN_FLAGS:
        g.add_argument(f"--{dest}", type=type(default), default=default, help=f"accepted, no effect: {why}")
    # VideoMamba's run_videomamba_pretraining.py defaults; no RandAugment, erasing, mixup or label smoothing
    p.set_defaults(model="videomambapro_middle_pretrain", epochs=800, lr=1.5e-4, min_lr=1e-5, warmup_lr=1e-6,
                   warmup_epochs=40, save_ckpt_freq=50, drop_path=0.0, num_frames=16, sampling_rate=4, num_sample=1,
                   flip=False, aa="", reprob=0.0, mixup=0.0, cutmix=0.0, smoothing=0.0, defaults="ours",
                   disable_eval_during_finetuning=True, test_at_end=False)
    return p


def resolve_pretrain_args(args, parser=None) -> None:
    """Pretraining's own flag rules (before the fine-tuning resolvers): the objective, the TSN segments, VideoMamba's
    list-file --data_path, and the flags that do not apply."""
    errors = []
    if args.objective is None:
        args.objective = next((o for s, o in MODEL_SUFFIX.items() if args.model.endswith(s)), None)
        if args.objective is None:
            errors.append(f"--model {args.model}: pretraining models end in _pretrain (--objective clip) or "
                          f"_maskfeat (--objective maskfeat)")
    elif not args.model.endswith({"clip": "_pretrain", "maskfeat": "_maskfeat"}[args.objective]):
        errors.append(f"--objective {args.objective} does not match --model {args.model}")
    if not 0.0 <= args.mask_ratio < 1.0:
        errors.append(f"--mask_ratio {args.mask_ratio}: must be in [0, 1)")
    if args.mask_type == "attention":
        if args.objective != "clip":
            errors.append("--mask_type attention needs the CLIP teacher's attention (--objective clip)")
        elif not args.clip_return_attn:
            errors.append("--mask_type attention needs the teacher's attention: add --clip_return_attn")
    if args.num_segments > 1:
        if args.num_segments != args.num_frames:
            errors.append(f"--num_segments {args.num_segments} with --num_frames {args.num_frames}: one frame per "
                          f"segment is supported (equal values), or --num_segments 1 for dense clips")
        args.sampling_rate = 0  # TSN: one frame per segment (our sparse scheme); --sampling_rate does not apply
    elif args.num_segments < 1:
        errors.append(f"--num_segments {args.num_segments}: must be >= 1")
    if args.eval:
        errors.append("--eval: pretraining has no evaluation; fine-tune the checkpoint with run_class_finetuning.py "
                      "--finetune OUT/checkpoint-latest.pth")
    if (args.num_sample or 1) != 1:
        errors.append(f"--num_sample {args.num_sample}: pretraining takes one clip per video")
    if args.mixup or args.cutmix or args.smoothing:
        errors.append("--mixup / --cutmix / --smoothing: label mixing does not apply to masked pretraining")
    if args.model_ema:
        errors.append("--model_ema: no EMA in masked pretraining")
    if errors:
        raise SystemExit("error: " + "\n  ".join(errors))
    if args.model.startswith("videomamba_"):  # VideoMamba's student: its optimizer groups and initialisation
        args.weight_decay_ssm = True if args.weight_decay_ssm is None else args.weight_decay_ssm
        args.init = args.init or "videomamba"
    # VideoMamba passes the training list itself as --data_path
    if args.data_path and (os.path.isfile(args.data_path) or args.data_path.endswith((".csv", ".txt"))):
        if args.train_list is None:
            args.train_list = args.data_path
        args.data_path = os.path.dirname(args.data_path)
    ignored = [f"--{d} ({why})" for d, default, why in IGNORED_PRETRAIN_FLAGS if getattr(args, d) != default]
    if ignored:
        print("warning: VideoMamba pretraining flags accepted but without effect here: " + "; ".join(ignored))


def build_dataset(is_train, test_mode, args):
    """The training clips with their masks (pretraining reads only the train list)."""
    from datasets.masking import MaskGenerator

    from datasets import build_dataset as build_clips
    from datasets.pretrain import MaskedClips
    from utils.model_factory import PATCH_SIZE

    if not is_train:
        raise SystemExit("error: masked pretraining has no validation or test split")
    ds, nb = build_clips(True, False, args)
    side = args.input_size // PATCH_SIZE
    grid = (args.num_frames // args.tubelet_size, side, side)
    gen = MaskGenerator(args.mask_type, grid, args.mask_ratio)
    print(f"masks: {gen!r}")
    return MaskedClips(ds, gen), nb


def wiring():
    from engines.masked_pretrain import build_step
    from utils.model_factory import CLIP_MODEL_FLAGS, build_pretrain_model

    w = ft.wiring()
    w.build_model = build_pretrain_model
    w.build_dataset = build_dataset
    w.build_mixup_fn = None
    w.collate_multi = None
    w.has_test = False
    w.build_step = build_step
    w.arch_keys = w.arch_keys + CLIP_MODEL_FLAGS + ("objective",)
    return w


def main(argv=None):
    args = parse_with_config(get_args_parser(), argv)
    from engines.runner import run

    ft.log_scan_backend(args)
    return run(args, wiring())


if __name__ == "__main__":
    main()
