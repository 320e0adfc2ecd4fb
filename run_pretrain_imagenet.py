#!/usr/bin/env python
"""ImageNet-1K supervised pre-training of the image models (videomambapro_*_image / videomamba_*_image).

    torchrun --nproc_per_node=8 run_pretrain_imagenet.py --model videomambapro_tiny_image --data_path IMNET ...

Same flags, checkpoints and logs as run_class_finetuning.py, with DeiT defaults (lr x total batch / 512 with
min_lr / warmup_lr absolute: --lr_scale_rule deit512; EMA on unless --no_model_ema), repeated augmentation
(--repeated_aug --num_repeats 3) and optional self-distillation (--teacher_model/--teacher_ckpt/--distill_weight,
--distill_style videomamba: VideoMamba's RMSNorm + Linear head and 2 (1 - cos) loss).
Evaluation is single-view on the val split.
"""
from __future__ import annotations

import run_class_finetuning as ft
from utils.config import parse_with_config
from utils.model_factory import build_image_model


def get_args_parser():
    p = ft.get_args_parser("VideoMambaPro ImageNet-1K pre-training", data_set_default="IMNET")
    g = p.add_argument_group("pre-training")
    g.add_argument("--repeated_aug", action="store_true", help="timm RepeatAugSampler")
    g.add_argument("--no_repeated_aug", action="store_false", dest="repeated_aug")
    g.add_argument("--num_repeats", type=int, default=3)
    g.add_argument("--teacher_model", default=None, type=str, help="frozen teacher for self-distillation")
    g.add_argument("--teacher_ckpt", default=None, type=str)
    g.add_argument("--distill_weight", default=1.0, type=float)
    g.add_argument("--distill_style", default="videomamba", choices=("videomamba", "cosine"),
                   help="videomamba: RMSNorm + Linear head, loss 2 (1 - cos) (VideoMamba's); cosine: Linear head, "
                        "loss 1 - cos")
    # DeiT / VideoMamba image_sm/main.py defaults (lr x total batch / 512, min_lr / warmup_lr absolute)
    p.set_defaults(model="videomambapro_tiny_image", nb_classes=1000, epochs=300, lr=5e-4, warmup_epochs=5,
                   min_lr=1e-5, warmup_lr=1e-6, lr_scale_rule="deit512", weight_decay=0.05,
                   aa="rand-m9-mstd0.5-inc1", num_frames=1, short_side_size=224, repeated_aug=True, model_ema=True,
                   model_ema_decay=0.9999, drop_path=0.1, test_at_end=False, dist_eval=True)
    return p


def wiring():
    from engines.pretrain import repeat_aug_sampler

    w = ft.wiring()
    w.build_model = build_image_model
    w.train_sampler = repeat_aug_sampler
    w.has_test = False
    return w


def main(argv=None):
    args = parse_with_config(get_args_parser(), argv)
    if args.data_set != "IMNET":
        raise SystemExit(f"error: run_pretrain_imagenet.py trains on --data_set IMNET, not {args.data_set}")
    from engines.pretrain import describe_distillation
    from engines.runner import run

    print(describe_distillation(args))
    ft.log_scan_backend(args)
    return run(args, wiring())


if __name__ == "__main__":
    main()
