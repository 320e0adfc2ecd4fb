"""The training / evaluation driver shared by run_class_finetuning.py and run_pretrain_imagenet.py.

It imports neither models/ nor datasets/: the entry point passes a ``Wiring`` of callables.
Order: distributed init -> resume source (architecture args come from it) -> datasets -> model ->
finetune weights -> optimizer/back end -> resume state -> eval or train loop -> final test.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from utils import distributed as dist_utils
from utils.checkpoint_io import (
    DEEPSPEED_MODEL_FILE,
    CheckpointError,
    CheckpointSaveError,
    best_record,
    check_deepspeed_tag,
    describe_state_dict,
    find_resume_checkpoint,
    load_checkpoint,
    rng_state,
    set_rng_state,
    to_plain,
)
from utils.config import dump_args_yaml
from utils.errors import DataError, clean_message
from utils.logger import TensorboardLogger, append_json_log, drop_epochs_from, update_summary
from utils.optim import create_optimizer, param_groups_from_args
from utils.rundir import RunDirBusyError, RunLock
from utils.schedules import cosine_scheduler, scale_lrs
from utils.seeding import seed_everything, seed_for  # noqa: F401  (re-exported: the one seed rule)

from .backends import build_backend
from .finetune import BadFileTracker, NonFiniteLossError, evaluate, final_test, merge, train_one_epoch
from .preemption import PREEMPTED_EXIT, PositionSampler, PreemptionGuard, SeededItems, ignore_stop_signals

# Arguments that define the network; on resume they come from the checkpoint.
ARCH_KEYS = ("model", "nb_classes", "num_frames", "input_size", "tubelet_size", "bwd_mask", "residual_start",
             "mask_drops_D", "no_gate", "divide_out")


@dataclasses.dataclass
class Wiring:
    build_model: Callable  # (args, meta: bool) -> nn.Module
    build_dataset: Callable  # (is_train, test_mode, args) -> (dataset, nb_classes)
    build_mixup_fn: Callable | None = None  # (args, num_classes) -> callable or None
    load_pretrained: Callable | None = None  # models.checkpoint.load_pretrained
    collate_multi: Callable | None = None  # datasets.multiple_samples_collate
    build_criterion: Callable | None = None  # (args, mixup_fn, model) -> criterion (optional override)
    train_sampler: Callable | None = None  # (dataset, args, world, rank) -> sampler with set_epoch
    has_test: bool = True  # video fine-tuning has a multi-view test split; ImageNet does not
    model_cfg: Callable | None = None  # (args) -> dict of create_model kwargs (stored in checkpoints)
    check_args: Callable | None = None  # (args) -> list of one-line errors (model name, input size), before any build


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes indices r, r+W, ... (no padding, so no duplicated items)."""

    def __init__(self, n: int, rank: int, world: int):
        self.idx = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self):
        return len(self.idx)


def seed_epoch(args, loader, epoch: int, rank: int) -> None:
    """Seed the global RNGs and the train loader (sampler order, worker seeds) for ``epoch`` on ``rank``: the
    epoch's randomness depends only on (seed, epoch, rank), so a resumed run continues exactly."""
    s = seed_for(args.seed, epoch, rank)
    seed_everything(s)
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(s)


def validate_args(args) -> list[str]:
    """Reject flags that would be ignored on the chosen path; return warnings for harmless ones."""
    warnings = []
    errors = []
    if not args.enable_deepspeed and args.zero_stage:
        errors.append(f"--zero_stage {args.zero_stage} only applies with --enable_deepspeed (native torch DDP has "
                      f"no ZeRO); add --enable_deepspeed or drop --zero_stage")
    if args.bf16 and args.no_amp:
        errors.append("--bf16 and --no_amp contradict each other: --bf16 asks for bf16 autocast, --no_amp for fp32")
    if args.enable_deepspeed and args.opt.lower() not in ("adamw", "adam"):
        errors.append(f"--enable_deepspeed builds its optimizer from the config and supports adamw/adam, "
                      f"not --opt {args.opt}")
    if args.enable_deepspeed and args.model_ema:
        warnings.append("--model_ema with DeepSpeed: the EMA copy is kept in fp32 outside the engine")
    if args.checkpoint_num and not args.use_checkpoint:
        errors.append("--checkpoint_num needs --use_checkpoint (activation checkpointing is off otherwise)")
    if args.update_freq < 1:
        errors.append("--update_freq must be >= 1")
    if args.model_ema_force_cpu and not args.model_ema:
        errors.append("--model_ema_force_cpu needs --model_ema")
    if getattr(args, "dist_timeout", 1.0) is not None and getattr(args, "dist_timeout", 1.0) <= 0:
        errors.append("--dist_timeout must be > 0 minutes")
    errors += _check_sizes(args)
    if errors:
        raise SystemExit("error: " + "\n  ".join(errors))
    return warnings


def _check_sizes(args) -> list[str]:
    """Counts and sizes that would otherwise fail deep in the model or the DataLoader (or after training started)."""
    errors = []

    def need(flag, ok, what):
        value = getattr(args, flag, None)
        if value is not None and not ok(value):
            errors.append(f"--{flag} {value}: must be {what}")

    need("batch_size", lambda v: v >= 1, ">= 1")
    need("num_workers", lambda v: v >= 0, ">= 0")
    need("num_frames", lambda v: v >= 1, ">= 1")
    need("tubelet_size", lambda v: v >= 1, ">= 1")
    need("input_size", lambda v: v >= 1, ">= 1")
    for flag in ("test_num_segment", "test_num_crop"):
        need(flag, lambda v: v >= 1, ">= 1 (views per test video)")
    if not getattr(args, "eval", False):
        need("epochs", lambda v: v >= 1, ">= 1")
        need("lr", lambda v: v > 0, "> 0")
    frames, tubelet = getattr(args, "num_frames", None), getattr(args, "tubelet_size", None)
    if frames and tubelet and frames >= 1 and tubelet >= 1 and frames % tubelet:
        errors.append(f"--num_frames {frames}: must be a multiple of --tubelet_size {tubelet}")
    return errors


def check_output_dir(path: str) -> None:
    """Create ``path`` and prove it writable now, before data and model are built: one line naming it otherwise."""
    if not path:
        return
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test_", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"error: --output_dir {path}: not a writable folder ({type(e).__name__}: "
                         f"{e.strerror or e})") from None


def resolve_resume(args, log=print):
    """Pick the checkpoint to resume/evaluate and say why. Returns (path, ckpt dict or None, reason).

    ``--resume`` wins; ``--eval --finetune`` evaluates those weights; else ``--auto_resume`` takes the newest
    complete checkpoint of any kind (DeepSpeed tag folders too, for a DeepSpeed run), skipping broken ones with a
    message, and stops when every candidate is broken.
    """
    ds = bool(getattr(args, "enable_deepspeed", False))
    path = ckpt = None
    try:
        if args.resume:
            if os.path.isdir(args.resume):
                problem = check_deepspeed_tag(args.resume)
                if problem:
                    raise SystemExit(f"error: --resume {args.resume}: {problem}")
                ckpt = load_checkpoint(os.path.join(args.resume, DEEPSPEED_MODEL_FILE), args.trust_checkpoint)
                return args.resume, ckpt, "explicit --resume (DeepSpeed tag folder)"
            return args.resume, load_checkpoint(args.resume, args.trust_checkpoint), "explicit --resume"
        if args.eval and args.finetune:
            return None, None, "--eval with --finetune: evaluating the --finetune weights, not auto-resuming"
        if args.auto_resume and args.output_dir:
            path, ckpt = find_resume_checkpoint(args.output_dir, log=log, trust_checkpoint=args.trust_checkpoint,
                                                deepspeed=ds)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from e
    if args.auto_resume and args.output_dir and path is not None:
        prev = (ckpt.get("args") or {}).get("finetune") if isinstance(ckpt, dict) else None
        if args.finetune and prev != args.finetune:
            raise SystemExit(
                f"error: --finetune {args.finetune} was given, but {args.output_dir} holds {path} from a run "
                f"started from {prev!r}; refusing to let the leftover checkpoint replace --finetune. Use a "
                f"new --output_dir, or --no_auto_resume to start over from --finetune.")
        return path, ckpt, "auto-resume: newest complete checkpoint in output_dir"
    return None, None, "no checkpoint to resume"


def apply_arch_args(args, ckpt_args: dict, path: str, log=print) -> None:
    """Architecture args come from the checkpoint, unless the user set one explicitly to another value: then the
    run stops with one line naming the file, what it holds and what was asked for."""
    explicit = set(getattr(args, "_explicit", ()))
    conflicts = []
    for k in ARCH_KEYS:
        if k not in ckpt_args:
            continue
        cur, saved = getattr(args, k, None), ckpt_args[k]
        if cur == saved:
            continue
        if k in explicit and cur is not None:
            conflicts.append(f"--{k} {cur!r} (checkpoint: {saved!r})")
        else:
            if cur is not None:
                log(f"--{k}: using {saved!r} from {path} (default was {cur!r})")
            setattr(args, k, saved)
    if conflicts:
        held = ", ".join(f"{k} {ckpt_args[k]!r}" for k in ("model", "nb_classes", "num_frames", "input_size")
                         if k in ckpt_args)
        raise SystemExit(f"error: {path} holds a checkpoint of {held}, but {', '.join(conflicts)} was asked for; "
                         f"drop the flag to resume that run, or use --finetune to start a new run from its weights")


# what --eval takes from the checkpoint's stored args unless given: how the run read its data and tested
EVAL_DATA_KEYS = ("data_set", "sampling_rate", "short_side_size", "test_num_segment", "test_num_crop", "resize_mode")


def apply_eval_data_args(args, ckpt_args: dict, path: str, log=print) -> None:
    """``--eval`` scores what the run trained on: data and view settings from the checkpoint unless given; says
    where each came from."""
    explicit = set(getattr(args, "_explicit", ()))
    took, given = [], []
    for k in EVAL_DATA_KEYS:
        if k not in ckpt_args or not hasattr(args, k):
            continue
        if k in explicit:
            if getattr(args, k) != ckpt_args[k]:
                given.append(f"--{k} {getattr(args, k)!r} (given; the run used {ckpt_args[k]!r})")
        elif getattr(args, k) != ckpt_args[k]:
            took.append(f"--{k} {ckpt_args[k]!r}")
            setattr(args, k, ckpt_args[k])
    if took:
        log(f"--eval: data / view settings from {path}: {', '.join(took)}")
    if given:
        log(f"--eval: settings given on the command line: {', '.join(given)}")


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
        collate = wiring.collate_multi if (args.num_sample > 1 and wiring.collate_multi is not None) else None
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
                                        worker_init_fn=ignore_stop_signals if args.num_workers > 0 else None)
    if wiring.has_test and (args.eval or args.test_at_end):
        ds_test, nbc = wiring.build_dataset(False, True, args)
        nb_classes = nb_classes or nbc
        loaders["test"] = DataLoader(ds_test, sampler=ShardSampler(len(ds_test), rank, world),
                                     batch_size=args.batch_size, num_workers=args.num_workers,
                                     pin_memory=args.pin_mem, drop_last=False)
    elif args.eval:
        ds_val, nbc = wiring.build_dataset(False, False, args)
        nb_classes = nb_classes or nbc
        loaders["val"] = DataLoader(ds_val, sampler=ShardSampler(len(ds_val), rank, world),
                                    batch_size=args.batch_size, num_workers=args.num_workers, drop_last=False)
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
    warnings = validate_args(args)
    if wiring.check_args is not None and (errors := wiring.check_args(args)):
        raise SystemExit("error: " + "\n  ".join(errors))
    if not args.dry_run:
        check_output_dir(args.output_dir)
    dist_utils.init_distributed_mode(args)
    log = print
    for w in warnings:
        log("warning: " + w)
    if not args.dist_eval and dist_utils.get_world_size() > 1 and not args.eval:
        log(f"note: without --dist_eval each of the {dist_utils.get_world_size()} ranks validates the whole "
            f"validation set (add --dist_eval to shard it)")
    if args.scan_backend:
        from mamba.ops.backend import set_scan_backend

        set_scan_backend(args.scan_backend)
        log(f"scan backend: {args.scan_backend}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no CUDA GPU is visible; pass --device cpu")
    device = torch.device(args.device)
    rank = dist_utils.get_rank()
    if args.output_dir and not args.dry_run and dist_utils.is_main_process():
        args._run_lock = RunLock.acquire(args.output_dir, log)  # one run per folder (released when run() ends)
    seed_everything(seed_for(args.seed, 0, rank))

    # 1. resume source first: architecture args come from it
    resume_path, resume_ckpt, reason = resolve_resume(args, log)
    if args.eval and resume_path is None and not args.finetune and not args.dry_run:
        raise SystemExit("error: --eval needs weights: --resume FILE, --finetune FILE, or a checkpoint in "
                         "--output_dir with --auto_resume")
    if resume_ckpt is not None and isinstance(resume_ckpt.get("args"), dict):
        apply_arch_args(args, resume_ckpt["args"], resume_path, log)
        if args.eval:
            apply_eval_data_args(args, resume_ckpt["args"], resume_path, log)
    if args.eval and not args.output_dir and resume_path and not args.dry_run:
        stem = os.path.splitext(os.path.basename(os.path.normpath(resume_path)))[0]
        args.output_dir = os.path.join(os.path.dirname(os.path.abspath(resume_path)), f"eval-{stem}")
        log(f"--eval: no --output_dir given; predictions and log.txt go beside the checkpoint, in {args.output_dir}")
        check_output_dir(args.output_dir)
        if dist_utils.is_main_process():
            args._run_lock = RunLock.acquire(args.output_dir, log)

    # 2. data
    if args.dry_run and not _lists_exist(args):
        log("dry run: data lists not found, datasets not built")
        loaders, nb = {}, None
    else:
        loaders, nb = build_loaders(args, wiring, log)
    if nb is not None and args.nb_classes != nb:
        log(f"nb_classes: using {nb} from the dataset (was {args.nb_classes})")
        args.nb_classes = nb
    mixup_fn = wiring.build_mixup_fn(args, args.nb_classes) if (wiring.build_mixup_fn and not args.eval) else None

    # 3. model
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
                                            log=log)
        except (RuntimeError, FileNotFoundError, KeyError) as e:
            raise SystemExit(f"error: --finetune {args.finetune}: {clean_message(e)}") from e
        log(f"--finetune report: {report}")
    if not args.dry_run:
        model.to(device)

    # 4. optimizer, lr scaling, back end
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
    if args.dry_run:
        create_optimizer(args, model, groups)
        log("dry run: arguments, model, datasets and optimizer built; exiting without training")
        return {"dry_run": True, "n_parameters": n_parameters}
    model_ema = None
    if args.model_ema:
        from timm.utils import ModelEmaV3

        # built from the fp32 model before any engine casts it, and kept in fp32 whatever the engine's dtype
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, dtype=torch.float32,
                               device=torch.device("cpu") if args.model_ema_force_cpu else None)
        log(f"model EMA: decay {args.model_ema_decay}, fp32{' on cpu' if args.model_ema_force_cpu else ''}")
    backend = build_backend(args, model, groups, lambda g: create_optimizer(args, model, g))
    model_without_ddp = backend.model_without_ddp
    criterion = (wiring.build_criterion or (lambda a, m, _model: build_criterion(a, m)))(args, mixup_fn, model)
    log(f"criterion: {criterion}; back end: {backend.name}; precision: {_precision(args, backend)}")

    # 5. resume state
    start_epoch, start_iter = args.start_epoch, 0
    best = {"acc1": -1.0, "epoch": -1}
    bad_known: list = []
    if resume_path is not None:
        start_epoch, best, bad_known, start_iter = _load_resume(args, backend, model_ema, resume_path, resume_ckpt,
                                                                reason, log)
    # the run has started: record its flags (an earlier run's args.yaml is kept as args.N.yaml)
    if args.output_dir and dist_utils.is_main_process():
        kept = dump_args_yaml(args, os.path.join(args.output_dir, "args.yaml"))
        if kept:
            log(f"args.yaml of the previous run kept as {os.path.basename(kept)}")
    log_writer = TensorboardLogger(args.log_dir)
    autocast = backend.autocast

    if args.eval:
        return _run_eval(args, loaders, backend, autocast, log, n_parameters)

    if resume_path is not None and dist_utils.is_main_process():
        dropped = drop_epochs_from(args.output_dir, start_epoch)
        if dropped:
            log(f"log.txt: {dropped} lines of epochs >= {start_epoch} (from a run past this checkpoint) moved to "
                f"log.txt.superseded; they are trained again")
    steps_per_epoch = len(loaders["train"]) // args.update_freq
    lr_schedule = cosine_scheduler(args.lr, args.min_lr, args.epochs, steps_per_epoch, args.warmup_epochs,
                                   args.warmup_lr, args.warmup_steps)
    wd_end = args.weight_decay if args.weight_decay_end is None else args.weight_decay_end
    wd_schedule = cosine_scheduler(args.weight_decay, wd_end, args.epochs, steps_per_epoch)
    start_iter = _check_resume_iter(args, resume_ckpt, start_epoch, start_iter, steps_per_epoch, log)
    start_meters = (resume_ckpt or {}).get("epoch_meters") if start_iter else None
    first_step = start_epoch * steps_per_epoch + start_iter // args.update_freq
    log(f"training: {args.epochs} epochs x {steps_per_epoch} optimizer steps, start epoch {start_epoch}"
        f"{f' at step {start_iter // args.update_freq}' if start_iter else ''}, "
        f"first lr {lr_schedule[min(first_step, len(lr_schedule) - 1)]:.3e}")
    bad_files = BadFileTracker(args.max_bad_samples, bad_known, _train_list_name(args))
    t0 = time.time()
    stats = {}
    guard = PreemptionGuard()
    guard.__enter__()  # SIGTERM / SIGUSR1: finish the step, save, exit PREEMPTED_EXIT (restored when run() ends)
    args._preemption_guard = guard
    for epoch in range(start_epoch, args.epochs):
        if epoch > start_epoch:
            _stop_if_asked(args, guard, epoch, log)  # a signal during validation / the save: the epoch is saved
        seed_epoch(args, loaders["train"], epoch, rank)
        if log_writer is not None:
            log_writer.set_step(epoch * steps_per_epoch)

        def on_nonfinite(ep, step, best=best):  # this epoch's values
            backend.save(args.output_dir, ep, _client_state(args, model_ema, best, bad_files),
                         ["checkpoint-nonfinite.pth"], tag=False) if args.output_dir else None
            if dist_utils.is_main_process() and args.output_dir:
                print(f"state before the failing step saved to {args.output_dir}/checkpoint-nonfinite.pth")

        try:
            train_stats = train_one_epoch(backend, criterion, loaders["train"], epoch, args, lr_schedule, wd_schedule,
                                          start_steps=epoch * steps_per_epoch,
                                          num_training_steps_per_epoch=steps_per_epoch, mixup_fn=mixup_fn,
                                          model_ema=model_ema, log_writer=log_writer, on_nonfinite=on_nonfinite,
                                          bad_files=bad_files, print_freq=args.print_freq,
                                          max_steps=getattr(args, "max_steps_per_epoch", None),
                                          start_iter=start_iter if epoch == start_epoch else 0, guard=guard,
                                          start_meters=start_meters if epoch == start_epoch else None)
        except NonFiniteLossError as e:
            print(f"stopping: {e}")
            dist_utils.cleanup()
            sys.exit(1)
        if train_stats.get("stopped_at") is not None:
            _save_preempted(args, backend, model_ema, best, bad_files, steps_per_epoch, epoch, train_stats, log)
        # the epoch's training state is saved before validation, so a failing validation loses nothing
        if args.output_dir and args.save_ckpt:
            names = ["checkpoint-latest.pth"]
            if (epoch + 1) % args.save_ckpt_freq == 0 or epoch + 1 == args.epochs:
                names.append(f"checkpoint-{epoch}.pth")
            backend.save(args.output_dir, epoch, _client_state(args, model_ema, best, bad_files, steps_per_epoch,
                                                               epoch), names)
            dist_utils.barrier("checkpoint save")
        val_stats, ema_stats = {}, {}
        if "val" in loaders:
            val_stats = evaluate(loaders["val"], model_without_ddp, autocast, distributed=args.dist_eval, log=log)
            if model_ema is not None:
                ema_stats = evaluate(loaders["val"], model_ema.module, autocast, header="Val (EMA):",
                                     distributed=args.dist_eval, log=log)
            if log_writer is not None:
                log_writer.update(head="perf", step=epoch, val_acc1=val_stats["acc1"], val_acc5=val_stats["acc5"],
                                  val_loss=val_stats["loss"], ema_val_acc1=ema_stats.get("acc1"))
        is_best = not val_stats or val_stats["acc1"] > best["acc1"]
        if val_stats and is_best:
            best = {"acc1": val_stats["acc1"], "epoch": epoch}
        if args.output_dir and args.save_ckpt and is_best:
            backend.save(args.output_dir, epoch, _client_state(args, model_ema, best, bad_files, steps_per_epoch,
                                                               epoch), ["checkpoint-best.pth"], tag=False)
            dist_utils.barrier("best checkpoint save")
        if val_stats:
            log(f"accuracy on {val_stats['n']} val items: {val_stats['acc1']:.2f}% (best {best['acc1']:.2f}% "
                f"at epoch {best['epoch']})")
        stats = {**{f"train_{k}": v for k, v in train_stats.items()}, **{f"val_{k}": v for k, v in val_stats.items()},
                 **{f"val_ema_{k}": v for k, v in ema_stats.items()}, "epoch": epoch, "n_parameters": n_parameters}
        append_json_log(args.output_dir, stats)
        update_summary(args.output_dir, {"epoch": epoch, "train_loss": train_stats.get("loss"),
                                         "val_acc1": val_stats.get("acc1"), "val_acc5": val_stats.get("acc5")})
        if log_writer is not None:
            log_writer.flush()
    total = str(datetime.timedelta(seconds=int(time.time() - t0)))
    log(f"training time {total}")
    result = {"best_val_acc1": best["acc1"], "best_epoch": best["epoch"]}
    if "test" in loaders and args.test_at_end:
        if args.test_best and args.output_dir and os.path.isfile(os.path.join(args.output_dir, "checkpoint-best.pth")):
            path = os.path.join(args.output_dir, "checkpoint-best.pth")
            ckpt = load_checkpoint(path, args.trust_checkpoint)
            model_without_ddp.load_state_dict(ckpt["model"])
            log(f"final test with the best checkpoint {path} (epoch {ckpt.get('epoch')})")
        result.update(_final_test_and_merge(args, loaders["test"], backend, autocast, log))
    elif "val" in loaders:
        result.update({"Final top-1": stats.get("val_acc1"), "Final Top-5": stats.get("val_acc5")})
        append_json_log(args.output_dir, {"Final top-1": stats.get("val_acc1"), "Final Top-5": stats.get("val_acc5")})
    log(f"summary: {json.dumps(to_plain(result))}")
    log_writer.close()
    dist_utils.cleanup()
    return result


def _train_list_name(args) -> str:
    return args.train_list or (os.path.join(args.data_path, "train.csv") if args.data_path else "")


def _lists_exist(args) -> bool:
    lists = [args.train_list, args.val_list, args.test_list]
    if any(lists):
        return all(p is None or os.path.exists(p) for p in lists)
    return bool(args.data_path) and os.path.isdir(args.data_path)


def _precision(args, backend) -> str:
    d = getattr(backend, "dtype", None)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(d, "fp32")


def _client_state(args, model_ema, best, bad_files, steps_per_epoch=None, epoch=None, resume_iter=None) -> dict:
    st = {"args": to_plain({k: v for k, v in vars(args).items() if not k.startswith("_")}), "best": dict(best),
          "bad_files": sorted(bad_files.files), "rng": rng_state(),
          "model_cfg": to_plain(getattr(args, "_model_cfg", {}))}
    if steps_per_epoch is not None and epoch is not None:
        st["global_step"] = int((epoch + 1) * steps_per_epoch)
    if resume_iter is not None:  # a mid-epoch (preemption) checkpoint: `epoch` is the epoch in progress
        st.update(resume_iter=int(resume_iter), world_size=dist_utils.get_world_size(),
                  global_step=int(epoch * steps_per_epoch + resume_iter // args.update_freq))
    if model_ema is not None:
        st["model_ema"] = model_ema.module.state_dict()
    return st


def _check_fits(args, model, sd: dict, path: str) -> None:
    """A weights dict that does not fit the model: one line naming the file, what it holds, what was asked for."""
    own = model.state_dict()
    bad = [k for k, v in sd.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    extra = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    if bad or extra or missing:
        first = bad[:1] or extra[:1] or missing[:1]
        raise SystemExit(f"error: {path} holds weights of {describe_state_dict(sd)}, but --model {args.model} is "
                         f"{describe_state_dict(own)} ({len(bad)} shape mismatches, {len(extra)} unexpected and "
                         f"{len(missing)} missing keys, e.g. {first[0]})")


def _load_resume(args, backend, model_ema, path, ckpt, reason, log):
    """Load model/optimizer/scaler/EMA/RNG from the resume source; returns (start_epoch, best, bad files)."""
    if not isinstance(ckpt.get("model", ckpt.get("module")), dict):
        kind = "a bare state dict" if ckpt and all(torch.is_tensor(v) for v in ckpt.values()) else \
            f"a dict with keys {sorted(ckpt)[:8]}"
        what = f" of {describe_state_dict(ckpt)}" if kind == "a bare state dict" else ""
        raise SystemExit(f"error: --resume {path} holds {kind}{what}, not a training checkpoint (model, optimizer, "
                         f"epoch); to start from its weights use --finetune {path}")
    _check_fits(args, backend.model_without_ddp, ckpt.get("model", ckpt.get("module")), path)
    load_opt = not args.eval
    if backend.name == "deepspeed" and not args.eval:
        if os.path.isdir(path):
            folder, tag = os.path.dirname(path.rstrip("/")), os.path.basename(path.rstrip("/"))
        else:
            folder = os.path.dirname(os.path.abspath(path))
            want = f"checkpoint-{ckpt.get('epoch')}"
            tag = want if os.path.isdir(os.path.join(folder, want)) and \
                check_deepspeed_tag(os.path.join(folder, want)) is None else None
        if tag is not None:
            try:
                client = backend.load_tag(folder, tag)
            except CheckpointError as e:
                raise SystemExit(f"error: {e}") from e
            log(f"resumed DeepSpeed state from {os.path.join(folder, tag)} ({reason})")
            ckpt = dict(client)
        else:
            log(f"warning: no complete DeepSpeed tag folder for epoch {ckpt.get('epoch')} beside {path}: resuming "
                f"the model weights only (the optimizer state is lost)")
            backend.load(ckpt, path, load_optimizer=False, log=log)
    else:
        if os.path.isdir(path) and not args.eval:
            raise SystemExit(f"error: {path} is a DeepSpeed tag folder; resume it with --enable_deepspeed")
        backend.load(ckpt, path, load_optimizer=load_opt, log=log)
    if model_ema is not None and "model_ema" in ckpt:
        model_ema.module.load_state_dict(ckpt["model_ema"])
    if "rng" in ckpt and not args.eval:
        set_rng_state(ckpt["rng"])
    epoch = ckpt.get("epoch")
    best = dict(ckpt.get("best") or {"acc1": -1.0, "epoch": -1})
    rec = best_record(args.output_dir, log) if args.output_dir and not args.eval else None
    if rec is not None and rec.get("acc1", -1.0) > best.get("acc1", -1.0):
        log(f"best so far: {rec['acc1']:.2f}% at epoch {rec.get('epoch')} (from checkpoint-best.pth); a later epoch "
            f"replaces it only with a higher accuracy")
        best = rec
    log(f"loaded {path} ({reason}); checkpoint epoch {epoch}")
    bad = list(ckpt.get("bad_files") or [])
    if args.eval or epoch is None:
        return args.start_epoch, best, bad, 0
    if ckpt.get("resume_iter"):  # saved mid-epoch on a stop signal: continue the same epoch
        return int(epoch), best, bad, int(ckpt["resume_iter"])
    return int(epoch) + 1, best, bad, 0


def _check_resume_iter(args, ckpt, epoch, start_iter, steps_per_epoch, log) -> int:
    """A mid-epoch checkpoint continues at its step only with the batch layout it was cut in (world size, batch,
    update_freq, steps per epoch); otherwise the epoch restarts from its beginning, said in one line."""
    if not start_iter:
        return 0
    saved = (ckpt or {}).get("args") or {}
    now = {"world size": dist_utils.get_world_size(), "batch_size": args.batch_size, "update_freq": args.update_freq}
    then = {"world size": (ckpt or {}).get("world_size"), "batch_size": saved.get("batch_size"),
            "update_freq": saved.get("update_freq")}
    changed = [f"{k} {then[k]} -> {now[k]}" for k in now if then[k] is not None and then[k] != now[k]]
    if changed or start_iter >= steps_per_epoch * args.update_freq:
        why = ", ".join(changed) or f"step {start_iter} is past this epoch's {steps_per_epoch * args.update_freq}"
        log(f"warning: the checkpoint stopped epoch {epoch} part-way, but {why}: epoch {epoch} restarts from its "
            f"first step (its first part is trained again)")
        return 0
    log(f"resuming epoch {epoch} at optimizer step {start_iter // args.update_freq} of {steps_per_epoch} (the "
        f"run was stopped by a signal there; the samples before it are skipped)")
    return start_iter


def _stop_if_asked(args, guard, epoch, log) -> None:
    """Between epochs (the previous epoch is saved): exit PREEMPTED_EXIT if any rank received a stop signal."""
    asked = dist_utils.all_reduce_sum(torch.tensor([1.0 if guard.requested else 0.0], dtype=torch.float64),
                                      name="stop signal check")
    if asked.item() > 0:
        where = f"checkpoint-latest.pth in {args.output_dir}" if args.output_dir and args.save_ckpt else "nothing"
        log(f"stopped by {guard.name or 'a signal on another rank'} before epoch {epoch}: epoch {epoch - 1} is "
            f"saved ({where}); rerun the same command with --auto_resume to continue (exit {PREEMPTED_EXIT})")
        dist_utils.cleanup()
        sys.exit(PREEMPTED_EXIT)


def _save_preempted(args, backend, model_ema, best, bad_files, steps_per_epoch, epoch, train_stats, log) -> None:
    """Every rank stopped after the same optimizer step: save a resumable mid-epoch checkpoint, say so, exit."""
    it = int(train_stats["stopped_at"])
    step = it // args.update_freq
    saved = "nothing saved (no --output_dir or --no_save_ckpt)"
    if args.output_dir and args.save_ckpt:
        st = _client_state(args, model_ema, best, bad_files, steps_per_epoch, epoch, resume_iter=it)
        st["epoch_meters"] = train_stats["meters"]  # so the resumed epoch's log line averages the whole epoch
        backend.save(args.output_dir, epoch, st, ["checkpoint-latest.pth"])
        dist_utils.barrier("preemption checkpoint save")
        saved = f"saved {os.path.join(args.output_dir, 'checkpoint-latest.pth')}"
    log(f"stopped by {train_stats.get('stop_signal')} at epoch {epoch}, optimizer step {step}/{steps_per_epoch}: "
        f"{saved}; rerun the same command with --auto_resume to continue from step {step} "
        f"(exit {PREEMPTED_EXIT})")
    dist_utils.cleanup()
    sys.exit(PREEMPTED_EXIT)


def _final_test_and_merge(args, test_loader, backend, autocast, log) -> dict:
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    out_dir = args.output_dir or "."
    preds = os.path.join(out_dir, "predictions")
    if dist_utils.is_main_process():
        os.makedirs(preds, exist_ok=True)
        for f in os.listdir(preds):
            if f.endswith(".txt") or f.endswith(".bad"):
                os.remove(os.path.join(preds, f))
    dist_utils.barrier()
    info = final_test(test_loader, backend.model_without_ddp, os.path.join(preds, f"{rank}.txt"), autocast)
    print(f"rank {rank}: {info['n_views']} test views written, {info['n_bad_views']} unreadable", force=True)
    dist_utils.barrier("multi-view test: waiting for every rank's predictions")
    res = {}
    if dist_utils.is_main_process():
        m = merge(preds, world, log=log)
        res = {"Final top-1": m["top1"], "Final Top-5": m["top5"], "n_videos": m["n_videos"],
               "n_unreadable": m["n_unreadable"], "views_per_video": list(m["views_per_video"])}
        append_json_log(args.output_dir, res)
        log(f"Final top-1 {m['top1']:.3f}%  Top-5 {m['top5']:.3f}% over {m['n_videos'] + m['n_unreadable']} videos")
    dist_utils.barrier("multi-view test: merge")
    return res


def _run_eval(args, loaders, backend, autocast, log, n_parameters) -> dict:
    if "test" in loaders:
        res = _final_test_and_merge(args, loaders["test"], backend, autocast, log)
    else:
        st = evaluate(loaders["val"], backend.model_without_ddp, autocast, log=log)
        res = {"Final top-1": st["acc1"], "Final Top-5": st["acc5"], "n": st["n"], "n_unreadable": st["n_unreadable"]}
        append_json_log(args.output_dir, res)
    log(f"summary: {json.dumps(to_plain(res))}")
    dist_utils.cleanup()
    return res
