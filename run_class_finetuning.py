#!/usr/bin/env python
"""Fine-tune / evaluate VideoMambaPro and VideoMamba video classifiers (VideoMAE/VideoMamba flags).

    torchrun --nproc_per_node=8 run_class_finetuning.py --model videomambapro_small --data_path DIR ...
    python run_class_finetuning.py --eval --resume OUT/checkpoint-best.pth ...

Thin: flags here, loops in engines/, networks in models/, data in datasets/.
"""
from __future__ import annotations

import argparse

import torch

from utils.config import parse_with_config

RESIDUAL_START = ("none", "forward", "backward", "both")
SCAN_BACKENDS = ("auto", "reference", "torch", "cuda", "triton")


def get_args_parser(description="VideoMambaPro fine-tuning and evaluation", data_set_default="Kinetics-400"):
    p = argparse.ArgumentParser(description=description, add_help=True)
    p.add_argument("--config", default=None, help="YAML file of flag defaults (command-line flags win)")

    g = p.add_argument_group("run")
    g.add_argument("--batch_size", default=64, type=int, help="per-process batch size")
    g.add_argument("--epochs", default=30, type=int)
    g.add_argument("--update_freq", default=1, type=int, help="gradient accumulation steps")
    g.add_argument("--save_ckpt_freq", default=100, type=int)
    g.add_argument("--print_freq", default=10, type=int)
    g.add_argument("--dry_run", action="store_true",
                   help="parse, build model (meta device)/datasets/optimizer, then exit 0 without training")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="videomambapro_tiny", type=str)
    g.add_argument("--input_size", default=224, type=int)
    g.add_argument("--num_frames", type=int, default=16)
    g.add_argument("--tubelet_size", type=int, default=1)
    g.add_argument("--drop_path", type=float, default=0.1)
    g.add_argument("--fc_drop_rate", type=float, default=0.0)
    g.add_argument("--use_checkpoint", action="store_true", help="activation checkpointing")
    g.add_argument("--checkpoint_num", default=0, type=int, help="number of blocks to checkpoint")
    g.add_argument("--model_ema", action="store_true", default=False)
    g.add_argument("--model_ema_decay", type=float, default=0.9999)
    g.add_argument("--model_ema_force_cpu", action="store_true", default=False)

    g = p.add_argument_group("VideoMambaPro options (default None = the registered model's default)")
    g.add_argument("--bwd_mask", dest="bwd_mask", action="store_true", default=None)
    g.add_argument("--no_bwd_mask", dest="bwd_mask", action="store_false")
    g.add_argument("--residual_start", choices=RESIDUAL_START, default=None)
    g.add_argument("--mask_drops_D", action="store_true", default=None)
    g.add_argument("--no_gate", action="store_true", default=None)
    g.add_argument("--divide_out", action="store_true", default=None)
    g.add_argument("--scan_backend", choices=SCAN_BACKENDS, default=None,
                   help="selective-scan implementation (default: VMP_SCAN_BACKEND env or auto)")

    g = p.add_argument_group("optimizer")
    g.add_argument("--opt", default="adamw", type=str)
    g.add_argument("--opt_eps", default=1e-8, type=float)
    g.add_argument("--opt_betas", default=None, type=float, nargs="+")
    g.add_argument("--clip_grad", type=float, default=None)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight_decay", type=float, default=0.05)
    g.add_argument("--weight_decay_end", type=float, default=None)
    g.add_argument("--lr", type=float, default=1e-3, help="base lr for a total batch of 256 (scaled linearly)")
    g.add_argument("--layer_decay", type=float, default=1.0)
    g.add_argument("--warmup_lr", type=float, default=1e-6)
    g.add_argument("--min_lr", type=float, default=1e-6)
    g.add_argument("--warmup_epochs", type=int, default=5)
    g.add_argument("--warmup_steps", type=int, default=-1, help="overrides --warmup_epochs when > 0")

    g = p.add_argument_group("augmentation")
    g.add_argument("--aa", type=str, default="rand-m7-n4-mstd0.5-inc1")
    g.add_argument("--smoothing", type=float, default=0.1)
    g.add_argument("--train_interpolation", type=str, default="bicubic")
    g.add_argument("--num_sample", type=int, default=1, help="repeated augmentation per video")
    g.add_argument("--reprob", type=float, default=0.25)
    g.add_argument("--remode", type=str, default="pixel")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--mixup", type=float, default=0.8)
    g.add_argument("--cutmix", type=float, default=1.0)
    g.add_argument("--cutmix_minmax", type=float, nargs="+", default=None)
    g.add_argument("--mixup_prob", type=float, default=1.0)
    g.add_argument("--mixup_switch_prob", type=float, default=0.5)
    g.add_argument("--mixup_mode", type=str, default="batch", choices=("batch", "pair", "elem"))

    g = p.add_argument_group("fine-tuning / resume")
    g.add_argument("--finetune", default="", help="initial weights (model/module/bare state dict)")
    g.add_argument("--model_key", default="model|module")
    g.add_argument("--orig_t_size", type=int, default=None, help="frames of the --finetune checkpoint")
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: only for trusted files)")
    g.add_argument("--resume", default="", help="resume from this checkpoint (wins over --auto_resume)")
    g.add_argument("--auto_resume", action="store_true")
    g.add_argument("--no_auto_resume", action="store_false", dest="auto_resume")
    p.set_defaults(auto_resume=True)
    g.add_argument("--save_ckpt", action="store_true")
    g.add_argument("--no_save_ckpt", action="store_false", dest="save_ckpt")
    p.set_defaults(save_ckpt=True)
    g.add_argument("--start_epoch", default=0, type=int)

    g = p.add_argument_group("data")
    g.add_argument("--data_path", default="", type=str, help="folder with train.csv / val.csv / test.csv")
    g.add_argument("--data_root", "--prefix", dest="data_root", default="", type=str)
    g.add_argument("--split", default=" ", type=str, help="column separator of the lists")
    g.add_argument("--train_list", default=None)
    g.add_argument("--val_list", default=None)
    g.add_argument("--test_list", default=None)
    g.add_argument("--data_set", default=data_set_default,
                   choices=["Kinetics-400", "Kinetics-600", "Kinetics-700", "SSV2", "UCF101", "HMDB51", "IMNET",
                            "video", "rawframe"])
    g.add_argument("--nb_classes", default=None, type=int,
                   help="default: the dataset's own count (Kinetics-400/600/700, SSV2 174, UCF101 101, HMDB51 51, "
                        "IMNET 1000); for --data_set video / rawframe inferred from the labels (and logged)")
    g.add_argument("--use_rawframes", action="store_true")
    g.add_argument("--sampling_rate", type=int, default=0, help="0: sparse TSN sampling; >0 dense stride")
    g.add_argument("--short_side_size", type=int, default=224)
    g.add_argument("--test_num_segment", type=int, default=5)
    g.add_argument("--test_num_crop", type=int, default=3)
    g.add_argument("--filename_tmpl", default="img_{:05}.jpg")
    g.add_argument("--start_idx", default=1, type=int)
    g.add_argument("--max_bad_samples", default=10, type=int)
    g.add_argument("--skip_bad_test", action="store_true")
    g.add_argument("--video_reader", default="decord", choices=("decord", "pyav"))
    g.add_argument("--num_workers", default=10, type=int)
    g.add_argument("--pin_mem", action="store_true")
    g.add_argument("--no_pin_mem", action="store_false", dest="pin_mem")
    p.set_defaults(pin_mem=True)

    g = p.add_argument_group("evaluation")
    g.add_argument("--eval", action="store_true", help="multi-view test only")
    g.add_argument("--dist_eval", action="store_true", default=False)
    g.add_argument("--disable_eval_during_finetuning", action="store_true", default=False)
    g.add_argument("--test_best", action="store_true", help="final test with checkpoint-best.pth")
    g.add_argument("--no_test_at_end", action="store_false", dest="test_at_end",
                   help="skip the multi-view test after training")
    p.set_defaults(test_at_end=True)

    g = p.add_argument_group("system")
    g.add_argument("--output_dir", default="")
    g.add_argument("--log_dir", default=None)
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--seed", default=0, type=int)
    g.add_argument("--enable_deepspeed", action="store_true", default=False)
    g.add_argument("--zero_stage", default=0, type=int, choices=(0, 1, 2, 3))
    g.add_argument("--bf16", action="store_true", default=False)
    g.add_argument("--no_amp", action="store_true", default=False)
    g.add_argument("--local_rank", "--local-rank", default=-1, type=int, help=argparse.SUPPRESS)
    return p


PRO_OPTIONS = ("bwd_mask", "residual_start", "mask_drops_D", "divide_out")


def model_kwargs(args) -> dict:
    """create_model kwargs; VideoMambaPro options only when given (None = registered default)."""
    nb_classes = args.nb_classes
    if nb_classes is None:  # the lists were not read (a dry run without data): the dataset's fixed count
        from datasets.build import resolve_nb_classes

        nb_classes = resolve_nb_classes(args)
        if nb_classes is None:
            raise ValueError(f"--data_set {args.data_set} has no fixed class count and its lists were not read: "
                             "pass --nb_classes")
    kw = dict(num_classes=nb_classes, num_frames=args.num_frames, img_size=args.input_size,
              tubelet_size=args.tubelet_size, drop_path_rate=args.drop_path, fc_drop_rate=args.fc_drop_rate,
              use_checkpoint=args.use_checkpoint, checkpoint_num=args.checkpoint_num)
    for k in PRO_OPTIONS:
        if getattr(args, k) is not None:
            kw[k] = getattr(args, k)
    if args.no_gate:
        kw["gate"] = False
    return kw


def build_model(args, meta: bool = False):
    import timm

    import models  # registers the architectures in timm

    kw = model_kwargs(args)
    args._model_cfg = dict(kw, model=args.model)
    if args.model not in models.registered_models():
        raise SystemExit(f"error: --model {args.model} is not one of ours (registered by models/: "
                         f"{', '.join(models.registered_models())})")
    try:
        if meta:
            with torch.device("meta"):
                model = timm.create_model(args.model, pretrained=False, **kw)
        else:
            model = timm.create_model(args.model, pretrained=False, **kw)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise SystemExit(f"error: --model {args.model}: {e}") from e
        raise
    options = getattr(model, "options", None)
    if isinstance(options, dict):  # the resolved VideoMambaPro options, stored in checkpoints as model_cfg
        args._model_cfg.update(options)
        print(f"model options: {options}")
    return model


def wiring():
    from engines.runner import Wiring

    def _build_dataset(is_train, test_mode, args):
        from datasets import build_dataset

        return build_dataset(is_train=is_train, test_mode=test_mode, args=args)

    def _mixup(args, num_classes):
        from datasets import build_mixup_fn

        return build_mixup_fn(args, num_classes)

    def _load_pretrained(model, path, **kw):
        from models.checkpoint import load_pretrained

        return load_pretrained(model, path, **kw)

    def _collate(batch):
        from datasets import multiple_samples_collate

        return multiple_samples_collate(batch)

    return Wiring(build_model=build_model, build_dataset=_build_dataset, build_mixup_fn=_mixup,
                  load_pretrained=_load_pretrained, collate_multi=_collate, has_test=True)


def main(argv=None):
    parser = get_args_parser()
    args = parse_with_config(parser, argv)
    from engines.runner import run

    return run(args, wiring())


if __name__ == "__main__":
    main()
