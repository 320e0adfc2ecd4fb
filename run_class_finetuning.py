#!/usr/bin/env python
"""Fine-tune / evaluate VideoMambaPro and VideoMamba video classifiers (VideoMAE/VideoMamba flags).

    torchrun --nproc_per_node=8 run_class_finetuning.py --model videomambapro_small --data_path DIR ...
    python run_class_finetuning.py --eval --resume OUT/checkpoint-best.pth ...

Thin: flags here, loops in engines/, networks in models/, data in datasets/.
"""
from __future__ import annotations

import argparse

import torch

from mamba.modules.bimamba import RESIDUAL_START
from mamba.ops.backend import BACKENDS as SCAN_BACKENDS
from utils.config import parse_with_config
from utils.distributed import read_launch_env
from utils.flag_checks import check_flags
from utils.model_factory import (  # noqa: F401  (DEFAULT_MIXER_RECOMPUTE: the default scripts/ compare against)
    DEFAULT_MIXER_RECOMPUTE,
    build_model,
    check_args,
    load_weights,
    model_kwargs,
    pro_flags,
)

DATA_SETS = ("Kinetics-400", "Kinetics-600", "Kinetics-700", "SSV2", "UCF101", "HMDB51", "IMNET", "video", "rawframe",
             # VideoMamba's names (video_sm/run_class_finetuning.py), meaning kept: see datasets.build
             "Kinetics", "Kinetics_sparse", "mitv1_sparse", "COIN", "Breakfast", "LVU")
# --data_set names only VideoMamba's scripts use, and VideoMamba's model names: with --defaults auto either selects
# VideoMamba's defaults (its commands run unchanged with their meaning).
UPSTREAM_ONLY_DATA_SETS = ("Kinetics", "Kinetics_sparse", "mitv1_sparse", "COIN", "Breakfast", "LVU")
UPSTREAM_MODELS = ("videomamba_tiny", "videomamba_small", "videomamba_middle")

# Flags whose default depends on --defaults (None in the parser = not given on the command line).
OUR_DEFAULTS = dict(num_sample=1, layer_decay=1.0, layer_decay_mode="block", weight_decay_ssm=False, tubelet_size=1,
                    init="default")
# VideoMamba's video_sm/run_class_finetuning.py defaults, with the layer decay it effectively applies (its per-block
# branch is disabled: only patch_embed / cls_token / pos_embed are decayed), A_log/A_b_log weight decay (its groups
# skip only 1-D params, biases and no_weight_decay() names) and its from-scratch initialisation. Not its
# --tubelet_size 2: every VideoMamba script and released checkpoint uses 1, so 1 stays the default.
VIDEOMAMBA_DEFAULTS = dict(num_sample=2, layer_decay=0.75, layer_decay_mode="videomamba", weight_decay_ssm=True,
                           tubelet_size=1, orig_t_size=8, init="videomamba")

# Flags of VideoMamba's run_class_finetuning.py that are accepted for its command lines to run unchanged but change
# nothing here: (dest, default, why). A value other than the default is warned about once.
IGNORED_UPSTREAM_FLAGS = (
    ("use_learnable_pos_emb", False, "VideoMAE ViT option; VideoMamba always learns its position embeddings"),
    ("drop", 0.0, "VideoMAE ViT dropout; upstream does not pass it to VideoMamba models either"),
    ("attn_drop_rate", 0.0, "attention dropout: VideoMamba has no attention"),
    ("color_jitter", 0.4, "used by upstream's pre-training only, not by fine-tuning"),
    ("crop_pct", None, "unused by upstream's fine-tuning (test crops are square crops of --short_side_size)"),
    ("resplit", False, "random-erasing split of the clean augmentation: not used by video fine-tuning"),
    ("delete_head", False, "a head of the wrong size is always dropped; a fitting head is kept"),
    ("model_prefix", "", "key prefix for loading; wrapper prefixes are stripped automatically"),
    ("init_scale", 0.001, "VideoMAE ViT head init scale"),
    ("use_mean_pooling", True, "VideoMAE ViT pooling; VideoMamba classifies the cls token"),
    ("eval_data_path", None, "use --val_list / --test_list"),
    ("num_segments", 1, "VideoMAE ViT option (frames = num_frames x num_segments); use --num_frames"),
    ("world_size", 1, "the world size comes from the launcher's environment (torchrun / SLURM)"),
    ("dist_on_itp", False, "OpenMPI (ITP) rank variables are not read; launch with torchrun or SLURM"),
    ("dist_url", "env://", "rendezvous comes from the launcher's environment"),
    ("deepspeed", False, "--enable_deepspeed selects DeepSpeed"),
    ("deepspeed_config", None, "the DeepSpeed config is generated into output_dir from the flags"),
    ("deepscale", False, "deprecated DeepSpeed alias"),
    ("deepscale_config", None, "deprecated DeepSpeed alias"),
    ("deepspeed_mpi", False, "MPI discovery is not used"),
    ("imagenet_default_mean_and_std", True, "ImageNet mean/std normalisation is always used"),
)


class _GroupedHelp(argparse.HelpFormatter):
    """--help: every flag with its default (argparse's ArgumentDefaultsHelpFormatter skips flags without help)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default is not argparse.SUPPRESS and action.option_strings and "%(default)" not in h \
                and not isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction,
                                            argparse._StoreFalseAction)):
            h += (" " if h else "") + "(default: %(default)s)"
        return h


class RecipeArgumentParser(argparse.ArgumentParser):
    """argparse with a post-parse step (``resolvers``) that fills the flags whose default depends on the others
    (``--defaults``, dataset names, the starting checkpoint); it runs for ``parse_args`` and ``--config`` alike."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.resolvers = []

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        for fn in self.resolvers:
            fn(ns, self)
        return ns, extra


def _log_once(msg, _seen=set()):  # noqa: B006  (module-level memo: each message once per process)
    if msg not in _seen:
        _seen.add(msg)
        print(msg)


def resolve_args(args, parser=None, log=_log_once) -> None:
    """Fill the defaults that depend on other flags (see ``--defaults``) and map VideoMamba's flags to ours."""
    if args.defaults == "auto":
        upstream = args.data_set in UPSTREAM_ONLY_DATA_SETS or args.model in UPSTREAM_MODELS
        args.defaults = "videomamba" if upstream else "ours"
    table = VIDEOMAMBA_DEFAULTS if args.defaults == "videomamba" else OUR_DEFAULTS
    filled = {k: v for k, v in table.items() if getattr(args, k, None) is None}
    for k, v in filled.items():
        setattr(args, k, v)
    if args.defaults == "videomamba" and filled:
        log("defaults: VideoMamba's for flags not given (" + ", ".join(f"{k}={v}" for k, v in filled.items())
            + "); --defaults ours for ours")
    # dataset names: Kinetics = dense clips at --sampling_rate (upstream default 4); Kinetics_sparse and ours = TSN
    if args.sampling_rate is None:
        dense_default = args.data_set == "Kinetics" or (args.defaults == "videomamba" and args.data_set == "UCF101")
        args.sampling_rate = 4 if dense_default else 0
    elif args.data_set in ("Kinetics_sparse", "mitv1_sparse") and args.sampling_rate > 0:
        log(f"warning: --data_set {args.data_set} samples one frame per segment (TSN); --sampling_rate "
            f"{args.sampling_rate} is ignored, as upstream")
        args.sampling_rate = 0
    if args.data_set == "image_folder":
        raise SystemExit("error: --data_set image_folder: use run_pretrain_imagenet.py for images")
    # --use_decord / --no_use_decord (VideoMamba) and --use_rawframes (ours): None = decided by the list's columns
    if args.use_decord is not None:
        if args.use_rawframes and args.use_decord:
            raise SystemExit("error: --use_rawframes and --use_decord contradict each other")
        args.use_rawframes = not args.use_decord
    elif not args.use_rawframes:
        args.use_rawframes = None
    # starting weights: a file, a zoo tag (videomamba_tiny.in1k), an hf-hub: name, or none
    if isinstance(args.finetune, str) and args.finetune.lower() == "none":
        args.finetune = ""
        log("--finetune none: training from scratch (random initialisation"
            + (f", --init {args.init})" if hasattr(args, "init") else ")"))
    elif args.finetune is None:
        args.finetune = ""
        if args.defaults == "videomamba" and not args.eval and not args.resume:
            from models.zoo import imagenet_tag_for

            tag = imagenet_tag_for(args.model)
            if tag:
                args.finetune = tag
                log(f"--finetune not given: starting from the ImageNet-1K checkpoint {tag}, as VideoMamba does "
                    f"(--finetune none trains from scratch)")
    if args.nb_classes is None and args.defaults == "videomamba" and args.data_set in ("Kinetics", "Kinetics_sparse"):
        args.nb_classes = 400  # VideoMamba's --nb_classes default
    honoured = getattr(parser, "honoured", ())
    ignored = [f"--{dest} ({why})" for dest, default, why in IGNORED_UPSTREAM_FLAGS
               if dest not in honoured and hasattr(args, dest) and getattr(args, dest) != default]
    if ignored:
        log("warning: VideoMamba flags accepted but without effect here: " + "; ".join(ignored))


def str2bool(v) -> bool:
    """``--flag True`` / ``--flag false`` / ``--flag 1`` (VideoMamba's scripts pass booleans as words)."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, 1/0, yes/no), got {v!r}")


def get_args_parser(description="VideoMambaPro fine-tuning and evaluation", data_set_default="Kinetics-400",
                    honoured=()):
    """The flags. ``honoured``: dests of IGNORED_UPSTREAM_FLAGS the calling entry point defines itself (with a
    meaning), e.g. run_videomamba_pretraining.py's --num_segments."""
    p = RecipeArgumentParser(description=description, add_help=True, formatter_class=_GroupedHelp,
                             usage="%(prog)s [--config FILE] [flags, grouped below]")
    p.resolvers += [resolve_args, check_flags]
    p.honoured = tuple(honoured)
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
    g.add_argument("--tubelet_size", type=int, default=None,
                   help="default 1 (VideoMamba's parser says 2; its scripts and checkpoints use 1)")
    g.add_argument("--drop_path", type=float, default=0.1)
    g.add_argument("--fc_drop_rate", type=float, default=0.0)
    g.add_argument("--use_checkpoint", action="store_true", help="activation checkpointing")
    g.add_argument("--checkpoint_num", default=0, type=int, help="number of blocks to checkpoint")
    g.add_argument("--mixer_recompute", default=None, choices=("none", "inner", "all"),
                   help="Mamba models: what each mixer's backward recomputes instead of keeping. inner (default): "
                        "keeps its in_proj input and output only (Ti bf16: ~3.5 kB per token per block); none: "
                        "keeps everything (~26 kB; fastest when memory allows); all: keeps its input only (~1.2 kB)")
    g.add_argument("--model_ema", action="store_true", default=False)
    g.add_argument("--no_model_ema", action="store_false", dest="model_ema", help="EMA off (VideoMamba's image runs)")
    g.add_argument("--model_ema_decay", type=float, default=0.9999)
    g.add_argument("--model_ema_force_cpu", action="store_true", default=False)

    g = p.add_argument_group("VideoMambaPro options (default None = the registered model's default)")
    g.add_argument("--bwd_mask", dest="bwd_mask", action="store_true", default=None)
    g.add_argument("--no_bwd_mask", dest="bwd_mask", action="store_false")
    g.add_argument("--residual_start", choices=tuple(RESIDUAL_START), default=None)
    g.add_argument("--mask_drops_D", action="store_true", default=None)
    g.add_argument("--no_gate", action="store_true", default=None)
    g.add_argument("--divide_out", action="store_true", default=None)
    g.add_argument("--scan_backend", choices=SCAN_BACKENDS, default=None,
                   help="selective-scan implementation (default: VMP_SCAN_BACKEND env or auto)")
    g.add_argument("--init", choices=("default", "videomamba"), default=None,
                   help="from-scratch initialisation: ours (default), or VideoMamba's (all Linear trunc_normal 0.02, "
                        "biases and the backward dt bias zeroed, out_proj kaiming_uniform / sqrt(depth), cls token 0)")

    g = p.add_argument_group("VideoMamba compatibility")
    g.add_argument("--defaults", choices=("auto", "ours", "videomamba"), default="auto",
                   help="defaults of the flags a command leaves out: ours, or VideoMamba's run_class_finetuning.py "
                        f"({VIDEOMAMBA_DEFAULTS}, ImageNet-1K start). auto: VideoMamba's when --data_set is one of "
                        f"its own names {UPSTREAM_ONLY_DATA_SETS} or --model one of {UPSTREAM_MODELS}")
    g.add_argument("--lr_scale_rule", choices=("linear256", "deit512"), default="linear256",
                   help="linear256: lr, min_lr, warmup_lr x total batch x num_sample / 256 (video fine-tuning); "
                        "deit512: lr x total batch / 512 only (DeiT / VideoMamba ImageNet)")
    g.add_argument("--layer_decay_mode", choices=("block", "videomamba"), default=None,
                   help="block: --layer_decay per layers.{i} (ours); videomamba: only patch_embed / cls_token / "
                        "pos_embed decayed, blocks at full lr (what VideoMamba effectively does)")
    g.add_argument("--weight_decay_ssm", dest="weight_decay_ssm", action="store_true", default=None,
                   help="weight decay on A_log / A_b_log (VideoMamba does; ours does not)")
    g.add_argument("--no_weight_decay_ssm", dest="weight_decay_ssm", action="store_false")
    g.add_argument("--use_decord", dest="use_decord", action="store_true", default=None,
                   help="read videos (VideoMamba's SSV2 switch); default: decided by the list's columns")
    g.add_argument("--no_use_decord", dest="use_decord", action="store_false", help="read raw frames")
    g.add_argument("--flip", dest="flip", nargs="?", const=True, type=str2bool, default=None,
                   help="horizontal flip in training (default: on, off for SSV2); also --flip True / --flip False")
    g.add_argument("--no_flip", dest="flip", action="store_false")
    g.add_argument("--use_cls", action="store_false", dest="use_mean_pooling", help=argparse.SUPPRESS)
    for dest, default, why in IGNORED_UPSTREAM_FLAGS:
        if dest in honoured:
            continue
        if isinstance(default, bool):
            g.add_argument(f"--{dest}", action="store_true", default=default, help=f"accepted, no effect: {why}")
        else:
            typ = float if dest == "crop_pct" else (type(default) if default is not None else str)
            g.add_argument(f"--{dest}", type=typ, default=default, help=f"accepted, no effect: {why}")

    g = p.add_argument_group("optimizer")
    g.add_argument("--opt", default="adamw", type=str)
    g.add_argument("--opt_eps", default=1e-8, type=float)
    g.add_argument("--opt_betas", default=None, type=float, nargs="+")
    g.add_argument("--clip_grad", type=float, default=None)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight_decay", type=float, default=0.05)
    g.add_argument("--weight_decay_end", type=float, default=None)
    g.add_argument("--lr", type=float, default=1e-3, help="base lr for a total batch of 256 (scaled linearly)")
    g.add_argument("--layer_decay", type=float, default=None, help="default 1.0 (VideoMamba: 0.75, see "
                   "--layer_decay_mode)")
    g.add_argument("--warmup_lr", type=float, default=1e-6)
    g.add_argument("--min_lr", type=float, default=1e-6)
    g.add_argument("--warmup_epochs", type=int, default=5)
    g.add_argument("--warmup_steps", type=int, default=-1, help="overrides --warmup_epochs when > 0")

    g = p.add_argument_group("augmentation")
    g.add_argument("--aa", type=str, default="rand-m7-n4-mstd0.5-inc1")
    g.add_argument("--smoothing", type=float, default=0.1)
    g.add_argument("--train_interpolation", type=str, default="bicubic")
    g.add_argument("--num_sample", type=int, default=None, help="repeated augmentation per video (default 1; "
                   "VideoMamba: 2)")
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
    g.add_argument("--finetune", default=None,
                   help="initial weights: a file (model/module/bare state dict), a released checkpoint by tag "
                        "(videomamba_tiny.in1k, videomamba_small.k400_f16_res224, ...: python scripts/eval_zoo.py "
                        "--list), an hf-hub:ORG/REPO/FILE name, or none (from scratch)")
    g.add_argument("--model_key", default="model|module")
    g.add_argument("--finetune_final_norm", choices=("drop", "rename"), default="drop",
                   help="a masked-pretraining encoder's final norm.weight (VideoMamba's *_mask_pt_* files): drop it "
                        "and start norm_f fresh, as VideoMamba's fine-tuning does (its non-strict load finds no "
                        "'norm' in the classifier), or rename it to norm_f")
    g.add_argument("--orig_t_size", type=int, default=None, help="frames of the --finetune checkpoint (informative: "
                   "the checkpoint's temporal embedding decides)")
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
    g.add_argument("--data_set", default=data_set_default, choices=DATA_SETS + ("image_folder",),
                   help="Kinetics_sparse = Kinetics-N with TSN sampling (N from --nb_classes), Kinetics = dense "
                        "clips at --sampling_rate (default 4), SSV2 = videos or raw frames by the list's columns")
    g.add_argument("--nb_classes", default=None, type=int,
                   help="default: the dataset's own count (Kinetics-400/600/700, SSV2 174, UCF101 101, HMDB51 51, "
                        "IMNET 1000); for --data_set video / rawframe inferred from the labels (and logged)")
    g.add_argument("--use_rawframes", action="store_true",
                   help="read raw frames (default: raw frames for 3-column lists 'folder total_frames label')")
    g.add_argument("--sampling_rate", type=int, default=None,
                   help="0: sparse TSN sampling; >0 dense stride (default 0; 4 for --data_set Kinetics)")
    g.add_argument("--trimmed", type=int, default=None,
                   help="LVU / COIN / Breakfast with 'video_path label duration' lists (seconds): each video is cut "
                        "into windows of this many seconds, one sample each in train / val / test (a shorter video "
                        "is one window; a last window under half this long is dropped). Not given: 60, VideoMamba's")
    g.add_argument("--time_stride", type=int, default=None,
                   help="LVU / COIN / Breakfast: a --trimmed window starts every this many seconds. Not given: 16, "
                        "VideoMamba's")
    g.add_argument("--short_side_size", type=int, default=224)
    g.add_argument("--test_num_segment", type=int, default=5)
    g.add_argument("--test_num_crop", type=int, default=3)
    g.add_argument("--filename_tmpl", default="img_{:05}.jpg")
    g.add_argument("--start_idx", default=1, type=int)
    g.add_argument("--max_bad_samples", default=10, type=int)
    g.add_argument("--skip_bad_test", action="store_true")
    g.add_argument("--video_reader", default="decord", choices=("decord", "pyav"))
    g.add_argument("--resize_mode", default="videomamba", choices=("videomamba", "antialias"),
                   help="frame resize: videomamba = VideoMamba's (OpenCV INTER_LINEAR for val / test, bilinear "
                        "interpolation without antialiasing for the train crop); antialias = antialiased bilinear, "
                        "same sizes and crops (not VideoMamba's convention)")
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
    g.add_argument("--dist_timeout", type=float, default=10.0,
                   help="minutes a collective (barrier, all-reduce) waits for a stalled rank before the run stops "
                        "naming it (longest expected wait: the multi-view test merge)")
    g.add_argument("--local_rank", "--local-rank", default=-1, type=int, help=argparse.SUPPRESS)
    for a in p._actions:  # --help lists every flag with its default, also those without a description
        if a.help is None and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            a.help = "(default: %(default)s)"
    return p


def log_scan_backend(args, log=print) -> str:
    """Set the selective-scan backend of the run (--scan_backend, else VMP_SCAN_BACKEND, else auto) and write its
    one line at the start of the run's log (rank 0): the backend the run's device gets, then the requested name,
    e.g. "scan backend: triton (auto)". Returns the line."""
    from mamba.ops.backend import get_scan_backend, resolve_backend, set_scan_backend

    try:
        if args.scan_backend:
            set_scan_backend(args.scan_backend)
        line = f"scan backend: {resolve_backend(torch.device(args.device).type)} ({get_scan_backend()})"
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f"error: --scan_backend {args.scan_backend or get_scan_backend()}: {e}") from None
    if read_launch_env()["rank"] == 0:
        log(line)
    return line


def wiring():
    """What the engine builds a run from: the data and model builders, the --finetune loader, the checks."""
    from datasets import build_dataset, build_mixup_fn, multiple_samples_collate
    from engines.resume import ARCH_KEYS
    from engines.runner import Wiring

    return Wiring(build_model=build_model, build_dataset=build_dataset, build_mixup_fn=build_mixup_fn,
                  load_pretrained=load_weights, collate_multi=multiple_samples_collate, has_test=True,
                  check_args=check_args, arch_keys=ARCH_KEYS + pro_flags())


def main(argv=None):
    parser = get_args_parser()
    args = parse_with_config(parser, argv)
    from engines.runner import run

    log_scan_backend(args)
    return run(args, wiring())


if __name__ == "__main__":
    main()
