"""The training / evaluation driver shared by run_class_finetuning.py and run_pretrain_imagenet.py.

It imports neither models/ nor datasets/ nor mamba/: the entry point passes a ``Wiring`` of builders (library
functions: datasets.build_dataset, the model factory) and has set the scan backend. A run reads top to bottom:
distributed init -> resume source (architecture args come from it) -> data -> model -> finetune weights ->
optimizer / back end -> resume state -> --eval, or the epoch loop and the final test (engines.finetune.fit).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from utils import distributed as dist_utils
from utils.batch import BatchCollate
from utils.checkpoint_io import CheckpointSaveError, to_plain
from utils.config import dump_args_yaml
from utils.errors import DataError, clean_message
from utils.logger import TensorboardLogger
from utils.optim import create_optimizer, param_groups_from_args
from utils.rundir import RunDirBusyError, RunLock, check_output_dir
from utils.schedules import scale_lrs
from utils.seeding import seed_everything, seed_for

from .backends import build_backend
from .evaluate import run_eval
from .finetune import fit
from .preemption import PositionSampler, SeededItems, ignore_stop_signals
from .resume import ARCH_KEYS, ResumeState, apply_arch_args, apply_eval_data_args, load_resume, resolve_resume


@dataclasses.dataclass
class Wiring:
    build_model: Callable  # (args, meta: bool) -> nn.Module
    build_dataset: Callable  # (is_train, test_mode, args) -> (dataset, nb_classes)
    build_mixup_fn: Callable | None = None  # (args, num_classes) -> callable or None
    load_pretrained: Callable | None = None  # (model, path, **kw) -> report (models.checkpoint.load_pretrained)
    collate_multi: Callable | None = None  # datasets.multiple_samples_collate
    build_criterion: Callable | None = None  # (args, mixup_fn, model) -> criterion (optional override)
    train_sampler: Callable | None = None  # (dataset, args, world, rank) -> sampler with set_epoch
    has_test: bool = True  # video fine-tuning has a multi-view test split; ImageNet does not
    model_cfg: Callable | None = None  # (args) -> dict of create_model kwargs (stored in checkpoints)
    check_args: Callable | None = None  # (args) -> list of one-line errors (model name, input size), before any build
    arch_keys: tuple = ARCH_KEYS  # the args that define the network: on resume they come from the checkpoint
    # (args, model) -> step(model, clips, targets) -> loss: a training loss other than criterion(model(x), y)
    # (masked pretraining); built once the model is on its device
    build_step: Callable | None = None


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes indices r, r+W, ... (no padding, so no duplicated items)."""

    def __init__(self, n: int, rank: int, world: int):
        self.idx = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self):
        return len(self.idx)



def build_loaders(args, wiring: Wiring, log=print):
    world, rank = dist_utils.get_world_size(), dist_utils.get_rank()
    if args.pin_mem and not torch.cuda.is_available():
        args.pin_mem = False  # nothing to pin to without a GPU (torch would warn on every loader)
    loaders = {}
    nb_classes = None
    ds_train = None
    if not args.eval:
        ds_train, nb_classes = wiring.build_dataset(True, False, args)
        if wiring.train_sampler is not None:
            sampler = wiring.train_sampler(ds_train, args, world, rank)
        else:
            sampler = DistributedSampler(ds_train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                         drop_last=True)
        collate = BatchCollate("train", wiring.collate_multi if args.num_sample > 1 else None)
        gen = torch.Generator()
        gen.manual_seed(seed_for(args.seed, 0, rank))
        # items seeded by (seed, epoch, rank, position) and a sampler that can start mid-epoch: a preempted run
        # resumes with exactly the draws it would have made (engines/preemption.py)
        loaders["train"] = DataLoader(SeededItems(ds_train), sampler=PositionSampler(sampler, args.seed, rank),
                                      batch_size=args.batch_size, num_workers=args.num_workers,
                                      pin_memory=args.pin_mem, drop_last=True, collate_fn=collate, generator=gen,
                                      persistent_workers=False,
                                      worker_init_fn=ignore_stop_signals if args.num_workers > 0 else None)
        if len(loaders["train"]) // args.update_freq == 0:
            raise SystemExit(f"error: {len(ds_train)} training items over {world} ranks x batch {args.batch_size} x "
                             f"update_freq {args.update_freq} give no optimizer step per epoch")
        if not args.disable_eval_during_finetuning:
            ds_val, _ = wiring.build_dataset(False, False, args)
            sampler = ShardSampler(len(ds_val), rank, world) if args.dist_eval else None
            loaders["val"] = DataLoader(ds_val, sampler=sampler, batch_size=int(1.5 * args.batch_size) or 1,
                                        num_workers=args.num_workers, pin_memory=args.pin_mem, drop_last=False,
                                        collate_fn=BatchCollate("val"),
                                        worker_init_fn=ignore_stop_signals if args.num_workers > 0 else None)
    if wiring.has_test and (args.eval or args.test_at_end):
        ds_test, nbc = wiring.build_dataset(False, True, args)
        nb_classes = nb_classes or nbc
        loaders["test"] = DataLoader(ds_test, sampler=ShardSampler(len(ds_test), rank, world),
                                     batch_size=args.batch_size, num_workers=args.num_workers,
                                     pin_memory=args.pin_mem, drop_last=False, collate_fn=BatchCollate("test"))
    elif args.eval:
        ds_val, nbc = wiring.build_dataset(False, False, args)
        nb_classes = nb_classes or nbc
        loaders["val"] = DataLoader(ds_val, sampler=ShardSampler(len(ds_val), rank, world),
                                    batch_size=args.batch_size, num_workers=args.num_workers, drop_last=False,
                                    collate_fn=BatchCollate("val"))
    return loaders, nb_classes


def build_criterion(args, mixup_fn):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_fn is not None:
        return SoftTargetCrossEntropy()
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return torch.nn.CrossEntropyLoss()



def run(args, wiring: Wiring) -> dict:
    """Everything after argument parsing. Returns a summary dict (also written to log.txt).

    A data error (too many unreadable training files, an unreadable validation/test video without
    --skip_bad_test), a malformed or missing list, a failed checkpoint save, a non-finite loss or a failed
    collective stops the run with one clean line and exit 1.
    """
    try:
        return _run(args, wiring)
    except (DataError, CheckpointSaveError, dist_utils.CollectiveError) as e:
        sys.stderr.write(f"stopping: {clean_message(e)}\n")  # every rank that hit it; print is rank 0 only
        sys.stderr.flush()
        sys.exit(1)
    except RunDirBusyError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        guard = getattr(args, "_preemption_guard", None)
        if guard is not None:
            guard.restore()
            args._preemption_guard = None
        lock = getattr(args, "_run_lock", None)
        if lock is not None:
            lock.release()
            args._run_lock = None



def _run(args, wiring: Wiring) -> dict:
    log = print
    _start(args, wiring, log)
    start, reason = _resume_source(args, wiring, log)
    loaders, mixup_fn = _data(args, wiring, log)
    model, n_parameters = _model(args, wiring, start.path, reason, log)
    groups = _param_groups(args, model, log)
    if args.dry_run:
        create_optimizer(args, model, groups)
        log("dry run: arguments, model, datasets and optimizer built; exiting without training")
        return {"dry_run": True, "n_parameters": n_parameters}
    model_ema = _model_ema(args, model, log)
    backend = build_backend(args, model, groups, lambda g: create_optimizer(args, model, g))
    step = wiring.build_step(args, backend.model_without_ddp) if wiring.build_step is not None else None
    criterion = (None if step is not None else
                 (wiring.build_criterion or (lambda a, m, _model: build_criterion(a, m)))(args, mixup_fn, model))
    log(f"{'training step' if step is not None else 'criterion'}: {step if step is not None else criterion}; "
        f"back end: {backend.name}; precision: {_precision(args, backend)}")
    if start.path is not None:
        start.epoch, start.best, start.bad_files, start.iter = load_resume(args, backend, model_ema, start.path,
                                                                           start.ckpt, reason, log)
    # the run has started: record its flags (an earlier run's args.yaml is kept as args.N.yaml)
    if args.output_dir and dist_utils.is_main_process():
        kept = dump_args_yaml(args, os.path.join(args.output_dir, "args.yaml"))
        if kept:
            log(f"args.yaml of the previous run kept as {os.path.basename(kept)}")
    log_writer = TensorboardLogger(args.log_dir)
    if args.eval:
        return run_eval(args, loaders, backend, backend.autocast, log)
    result = fit(args, loaders, backend, criterion, mixup_fn, model_ema, log_writer, start, n_parameters, log, step)
    log(f"summary: {json.dumps(to_plain(result))}")
    log_writer.close()
    dist_utils.cleanup()
    return result


def _start(args, wiring: Wiring, log) -> None:
    """Model-name / size checks, the output folder, distributed init, the folder's lock, the first seed."""
    if wiring.check_args is not None and (errors := wiring.check_args(args)):
        raise SystemExit("error: " + "\n  ".join(errors))
    if not args.dry_run:
        check_output_dir(args.output_dir)
    dist_utils.init_distributed_mode(args)
    for w in getattr(args, "_flag_warnings", ()):
        log("warning: " + w)
    if not args.dist_eval and dist_utils.get_world_size() > 1 and not args.eval:
        log(f"note: without --dist_eval each of the {dist_utils.get_world_size()} ranks validates the whole "
            f"validation set (add --dist_eval to shard it)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no CUDA GPU is visible; pass --device cpu")
    if args.output_dir and not args.dry_run and dist_utils.is_main_process():
        args._run_lock = RunLock.acquire(args.output_dir, log)  # one run per folder (released when run() ends)
    seed_everything(seed_for(args.seed, 0, dist_utils.get_rank()))


def _resume_source(args, wiring: Wiring, log) -> tuple[ResumeState, str]:
    """The checkpoint to resume / evaluate, first: architecture (and for --eval data) args come from it."""
    path, ckpt, reason = resolve_resume(args, log)
    if args.eval and path is None and not args.finetune and not args.dry_run:
        raise SystemExit("error: --eval needs weights: --resume FILE, --finetune FILE, or a checkpoint in "
                         "--output_dir with --auto_resume")
    if ckpt is not None and isinstance(ckpt.get("args"), dict):
        apply_arch_args(args, ckpt["args"], path, log, arch_keys=wiring.arch_keys)
        if args.eval:
            apply_eval_data_args(args, ckpt["args"], path, log)
    if args.eval and not args.output_dir and path and not args.dry_run:
        stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        args.output_dir = os.path.join(os.path.dirname(os.path.abspath(path)), f"eval-{stem}")
        log(f"--eval: no --output_dir given; predictions and log.txt go beside the checkpoint, in {args.output_dir}")
        check_output_dir(args.output_dir)
        if dist_utils.is_main_process():
            args._run_lock = RunLock.acquire(args.output_dir, log)
    return ResumeState(path=path, ckpt=ckpt, epoch=args.start_epoch), reason


def _data(args, wiring: Wiring, log):
    if args.dry_run and not _lists_exist(args):
        log("dry run: data lists not found, datasets not built")
        loaders, nb = {}, None
    else:
        loaders, nb = build_loaders(args, wiring, log)
    if nb is not None and args.nb_classes != nb:
        log(f"nb_classes: using {nb} from the dataset (was {args.nb_classes})")
        args.nb_classes = nb
    mixup_fn = wiring.build_mixup_fn(args, args.nb_classes) if (wiring.build_mixup_fn and not args.eval) else None
    return loaders, mixup_fn


def _model(args, wiring: Wiring, resume_path, reason: str, log):
    """The model (on the meta device for a dry run), with the --finetune weights when there is no resume source."""
    model = wiring.build_model(args, meta=bool(args.dry_run))
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model {args.model}: {n_parameters / 1e6:.2f} M trainable parameters")
    if args.finetune and resume_path is None and not args.dry_run:
        if wiring.load_pretrained is None:
            raise SystemExit("error: --finetune needs models.checkpoint.load_pretrained, which is not available")
        log(f"loading --finetune weights from {args.finetune} (no resume checkpoint: {reason})")
        try:
            report = wiring.load_pretrained(model, args.finetune, model_key=args.model_key,
                                            orig_t_size=args.orig_t_size, trust_checkpoint=args.trust_checkpoint,
                                            log=log, final_norm=getattr(args, "finetune_final_norm", None))
        except (RuntimeError, FileNotFoundError, KeyError) as e:
            raise SystemExit(f"error: --finetune {args.finetune}: {clean_message(e)}") from e
        log(f"--finetune report: {report}")
    if not args.dry_run:
        model.to(torch.device(args.device))
    return model, n_parameters


def _param_groups(args, model, log) -> list:
    """lr scaled to the total batch, then the optimizer's parameter groups (weight decay, layer decay)."""
    world = dist_utils.get_world_size()
    base = {k: getattr(args, k) for k in ("lr", "min_lr", "warmup_lr")}
    scaled = scale_lrs(args, world)
    for k in base:
        setattr(args, k, scaled[k])
    log(f"lr scaling ({getattr(args, 'lr_scale_rule', None) or 'linear256'}): lr {base['lr']:g} -> {args.lr:g}, "
        f"warmup_lr {base['warmup_lr']:g} -> {args.warmup_lr:g}, min_lr {base['min_lr']:g} -> {args.min_lr:g} "
        f"({scaled['rule']}; batch {args.batch_size}, update_freq {args.update_freq}, world {world}, "
        f"num_sample {args.num_sample})")
    num_layers = model.get_num_layers() if hasattr(model, "get_num_layers") else len(getattr(model, "layers", []))
    groups = param_groups_from_args(model, args, num_layers)
    if args.layer_decay < 1.0:
        log(f"layer decay {args.layer_decay} ({getattr(args, 'layer_decay_mode', None) or 'block'} mode): "
            f"{num_layers} layers, lr scales "
            f"{sorted({round(g['lr_scale'], 6) for g in groups})}")
    return groups


def _model_ema(args, model, log):
    if not args.model_ema:
        return None
    from timm.utils import ModelEmaV3

    # built from the fp32 model before any engine casts it, and kept in fp32 whatever the engine's dtype
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay, dtype=torch.float32,
                           device=torch.device("cpu") if args.model_ema_force_cpu else None)
    log(f"model EMA: decay {args.model_ema_decay}, fp32{' on cpu' if args.model_ema_force_cpu else ''}")
    return model_ema


def _lists_exist(args) -> bool:
    lists = [args.train_list, args.val_list, args.test_list]
    if any(lists):
        return all(p is None or os.path.exists(p) for p in lists)
    return bool(args.data_path) and os.path.isdir(args.data_path)


def _precision(args, backend) -> str:
    d = getattr(backend, "dtype", None)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(d, "fp32")
