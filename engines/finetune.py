"""Fine-tuning: train_one_epoch, and the epoch loop of a run around it (``fit``: train, save, validate, log,
then the multi-view test), so that masked pretraining can reuse the loop with its own step.

Batches are read by name (utils.batch.Batch: clips, targets, bad_files). Training caps the number of distinct
unreadable files of the run (all workers and ranks) at --max_bad_samples.
Every model call goes through ``engines.backends.cast_input`` (device and dtype follow the model).
"""
from __future__ import annotations

import datetime
import math
import os
import sys
import time

import torch

from utils import distributed as dist_utils
from utils.batch import as_batch
from utils.checkpoint_io import load_checkpoint
from utils.distributed import all_gather_object, all_reduce_sum, get_rank, is_main_process
from utils.errors import TooManyBadSamplesError
from utils.logger import MetricLogger, SmoothedValue, append_json_log, drop_epochs_from, update_summary
from utils.schedules import cosine_scheduler
from utils.seeding import STEP, seed_epoch, seed_everything, seed_for

from .backends import cast_input
from .evaluate import evaluate, final_test_and_merge
from .preemption import PREEMPTED_EXIT, PreemptionGuard
from .resume import ResumeState, check_resume_iter, client_state


class NonFiniteLossError(RuntimeError):
    """Raised on every rank when any rank saw a non-finite loss (after the state was saved)."""


class BadFileTracker:
    """The run's distinct unreadable training files, across DataLoader workers, ranks, epochs and resumes.

    ``update(local_new)`` is a collective (call it on every rank when any rank may have new names): it unions
    the names, logs each new one once (rank 0), and raises TooManyBadSamplesError past ``limit``.
    """

    def __init__(self, limit: int, known=(), list_file: str = ""):
        self.limit, self.list_file = int(limit), list_file
        self.files = set(known)

    def update(self, local_new, epoch: int) -> int:
        gathered = all_gather_object(sorted(set(local_new) - self.files), name="unreadable training files")
        new = sorted({p for names in gathered for p in names} - self.files)
        for p in new:
            print(f"unreadable training file (replaced by another sample; logged once): {p}")
        self.files.update(new)
        if len(self.files) > self.limit:
            shown = ", ".join(sorted(self.files)[:10]) + (" ..." if len(self.files) > 10 else "")
            raise TooManyBadSamplesError(
                f"{len(self.files)} distinct unreadable training files{' in ' + self.list_file if self.list_file else ''}"
                f" (epoch {epoch}), more than --max_bad_samples {self.limit}: {shown}. Fix or remove them from the "
                f"list, or raise --max_bad_samples")
        return len(new)


def train_one_epoch(backend, criterion, data_loader, epoch: int, args, lr_schedule, wd_schedule=None,
                    start_steps: int = 0, num_training_steps_per_epoch: int | None = None, mixup_fn=None,
                    model_ema=None, log_writer=None, on_nonfinite=None, bad_files: BadFileTracker | None = None,
                    print_freq: int = 10, start_iter: int = 0, guard=None, start_meters: dict | None = None,
                    step=None) -> dict:
    """One epoch; lr/wd set per optimizer step from the schedules (index = global optimizer step).

    ``step(model, samples, targets) -> loss``: the loss of a micro-batch when it is not ``criterion(model(x), y)``
    (masked pretraining: ``targets`` are the token masks, the step runs its teacher / HOG target and the model).

    ``start_iter``: the micro-step to start at (a run resumed mid-epoch; the loader's sampler skips the samples
    before it). The process RNGs are seeded per micro-step from (seed, epoch, rank, step), so the step's dropout,
    drop path and mixup draws do not depend on where the run started. ``guard`` (a PreemptionGuard): when any
    rank has received a stop signal, every rank stops after the same optimizer step and the stats carry
    ``stopped_at`` (the next micro-step), ``stop_signal`` and ``meters`` (every rank's count and total of every meter
    so far), which the resumed epoch passes back as ``start_meters`` so its averages are the whole epoch's.

    ``on_nonfinite(epoch, step)`` is called on every rank (it saves state, rank-aware) before raising
    NonFiniteLossError. Returns averaged meters plus ``n_new_bad_files`` (distinct unreadable files first seen
    this epoch, all ranks). ``bad_files`` keeps the run's set and enforces --max_bad_samples on it.
    """
    model = backend.model
    model.train(True)
    device = torch.device(args.device)
    update_freq = int(args.update_freq)
    if num_training_steps_per_epoch is None:
        num_training_steps_per_epoch = len(data_loader) // update_freq
    n_iters = num_training_steps_per_epoch * update_freq
    if bad_files is None:
        bad_files = BadFileTracker(getattr(args, "max_bad_samples", 10))
    backend.optimizer.zero_grad(set_to_none=True)
    _start_at(data_loader, start_iter, update_freq)
    rank = get_rank()
    stop_requested, stopped_at = False, None
    metric_logger, n_new_bad = _meters(start_meters, rank)
    data_iter = iter(data_loader)
    for data_iter_step in metric_logger.log_every(range(start_iter, n_iters), print_freq, f"Epoch: [{epoch}]",
                                                  total=n_iters, first=start_iter):
        batch = as_batch(next(data_iter), "train")
        seed_everything(seed_for(args.seed, epoch, rank, STEP, data_iter_step))
        local_bad = set(batch.bad_files) - bad_files.files
        it = start_steps + data_iter_step // update_freq
        if data_iter_step % update_freq == 0:
            _set_lr_wd(backend.optimizer, lr_schedule, wd_schedule, it)
        samples = batch.clips.to(device, non_blocking=True)
        targets = batch.targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            samples, targets = mixup_fn(samples, targets)
        with backend.autocast():
            if step is not None:
                output, loss = None, step(model, cast_input(samples, model), targets).float()
            else:
                output, loss = model(cast_input(samples, model)), None
            aux = None
            if isinstance(output, (tuple, list)):  # (logits, auxiliary loss), e.g. the distillation wrapper
                output, aux = output
            if loss is None:
                loss = criterion(output.float(), targets)
            if aux is not None:
                loss = loss + aux.float()
        loss_value = float(loss.item())
        stop, new_bad = _agree(loss_value, local_bad, guard, bad_files, epoch, data_iter_step, it, on_nonfinite)
        stop_requested = stop_requested or stop
        n_new_bad += new_bad
        update = (data_iter_step + 1) % update_freq == 0
        grad_norm = backend.backward_step(loss, update)
        if update and model_ema is not None:
            model_ema.update(backend.model_without_ddp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        _log_step(metric_logger, log_writer, backend, loss_value, grad_norm, it, update,
                  output if mixup_fn is None and targets.ndim == 1 else None, targets)
        if stop_requested and update and data_iter_step + 1 < n_iters:
            stopped_at = data_iter_step + 1  # every rank agreed at the same step (the all-reduce in _agree)
            break
    if stopped_at is not None:
        local = {k: [m.count, m.total] for k, m in metric_logger.meters.items()}
        stopped_meters = {"ranks": all_gather_object(local, name="train meters at the stop"),
                          "n_new_bad_files": n_new_bad}
    metric_logger.synchronize_between_processes()
    print("Averaged stats:", metric_logger)
    stats = {k: m.global_avg for k, m in metric_logger.meters.items()}
    stats["n_new_bad_files"] = n_new_bad
    if stopped_at is not None:
        stats.update(stopped_at=stopped_at, meters=stopped_meters,
                     stop_signal=getattr(guard, "name", "") or "a signal on another rank")
    return stats


def _start_at(data_loader, start_iter: int, update_freq: int) -> None:
    if start_iter % update_freq:
        raise ValueError(f"start_iter {start_iter} is not an optimizer-step boundary (update_freq {update_freq})")
    if start_iter and hasattr(data_loader.sampler, "start_at"):
        data_loader.sampler.start_at(start_iter * data_loader.batch_size)


def _meters(start_meters, rank: int):
    """The epoch's meters, with the interrupted part of this epoch (``start_meters``: this rank's own sums, added
    to in the same order) restored. Returns (metric logger, new unreadable files already met this epoch)."""
    metric_logger = MetricLogger(delimiter="  ")
    metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    metric_logger.add_meter("min_lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    if not start_meters:
        return metric_logger, 0
    mine = start_meters["ranks"][rank]
    for name in start_meters["ranks"][0]:  # every rank creates the meters in one order (for the all-reduce)
        metric_logger.meters[name].count, metric_logger.meters[name].total = mine.get(name, (0, 0.0))
    return metric_logger, int(start_meters.get("n_new_bad_files", 0))


def _set_lr_wd(optimizer, lr_schedule, wd_schedule, it: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = float(lr_schedule[it]) * group.get("lr_scale", 1.0)
        if wd_schedule is not None and group["weight_decay"] > 0:
            group["weight_decay"] = float(wd_schedule[it])


def _agree(loss_value, local_bad, guard, bad_files, epoch, data_iter_step, it, on_nonfinite) -> tuple[bool, int]:
    """One all-reduce per step (a CPU tensor: gloo carries it beside NCCL): any rank non-finite stops all ranks;
    when any rank met new unreadable files, the names are gathered and the run's cap checked. Returns (a stop
    signal was seen on some rank, new unreadable files)."""
    stop_here = 1.0 if guard is not None and guard.requested else 0.0
    flags = all_reduce_sum(torch.tensor([0.0 if math.isfinite(loss_value) else 1.0, float(len(local_bad)),
                                         stop_here], dtype=torch.float64), name="train step flags")
    n_new = bad_files.update(local_bad, epoch) if flags[1].item() > 0 else 0
    if flags[0].item() > 0:
        msg = (f"non-finite loss ({loss_value} on rank {get_rank()}) at epoch {epoch}, step {data_iter_step} "
               f"(optimizer step {it}); stopping all ranks")
        if on_nonfinite is not None:
            on_nonfinite(epoch, data_iter_step)
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
        raise NonFiniteLossError(msg)
    return flags[2].item() > 0, n_new


def _log_step(metric_logger, log_writer, backend, loss_value, grad_norm, it, update, output, targets) -> None:
    """The step's meters (``output`` only when hard labels give a class accuracy) and TensorBoard scalars."""
    lrs = [g["lr"] for g in backend.optimizer.param_groups]
    wd = max((g["weight_decay"] for g in backend.optimizer.param_groups), default=0.0)
    metric_logger.update(loss=loss_value, lr=max(lrs), min_lr=min(lrs), weight_decay=wd)
    if grad_norm is not None:
        metric_logger.update(grad_norm=grad_norm)
    if output is not None:
        metric_logger.update(class_acc=(output.argmax(-1) == targets).float().mean().item())
    scale = backend.loss_scale()
    if scale is not None:
        metric_logger.update(loss_scale=scale)
    if log_writer is not None and update:
        log_writer.update(head="loss", step=it, loss=loss_value)
        log_writer.update(head="opt", step=it, lr=max(lrs), min_lr=min(lrs), weight_decay=wd,
                          grad_norm=grad_norm, loss_scale=scale)


def fit(args, loaders, backend, criterion, mixup_fn, model_ema, log_writer, start: ResumeState, n_parameters: int,
        log=print, step=None) -> dict:
    """The epoch loop of a run, then its final test: each epoch trains, saves the training state, validates and
    logs (log.txt, summary.csv, TensorBoard). Returns the run's result (best val top-1, final test figures).
    ``step``: the micro-batch loss when it is not the criterion's (``train_one_epoch``; masked pretraining)."""
    if start.path is not None and is_main_process():
        dropped = drop_epochs_from(args.output_dir, start.epoch)
        if dropped:
            log(f"log.txt: {dropped} lines of epochs >= {start.epoch} (from a run past this checkpoint) moved to "
                f"log.txt.superseded; they are trained again")
    steps_per_epoch = len(loaders["train"]) // args.update_freq
    lr_schedule = cosine_scheduler(args.lr, args.min_lr, args.epochs, steps_per_epoch, args.warmup_epochs,
                                   args.warmup_lr, args.warmup_steps)
    wd_end = args.weight_decay if args.weight_decay_end is None else args.weight_decay_end
    wd_schedule = cosine_scheduler(args.weight_decay, wd_end, args.epochs, steps_per_epoch)
    start_iter = check_resume_iter(args, start.ckpt, start.epoch, start.iter, steps_per_epoch, log)
    start_meters = (start.ckpt or {}).get("epoch_meters") if start_iter else None
    first_step = start.epoch * steps_per_epoch + start_iter // args.update_freq
    log(f"training: {args.epochs} epochs x {steps_per_epoch} optimizer steps, start epoch {start.epoch}"
        f"{f' at step {start_iter // args.update_freq}' if start_iter else ''}, "
        f"first lr {lr_schedule[min(first_step, len(lr_schedule) - 1)]:.3e}")
    run = _Run(args, backend, model_ema, start.best, steps_per_epoch,
               BadFileTracker(args.max_bad_samples, start.bad_files, _train_list_name(args)), step)
    t0 = time.time()
    stats = {}
    guard = PreemptionGuard()
    guard.__enter__()  # SIGTERM / SIGUSR1: finish the step, save, exit PREEMPTED_EXIT (restored when run() ends)
    args._preemption_guard = guard
    for epoch in range(start.epoch, args.epochs):
        if epoch > start.epoch:
            _stop_if_asked(args, guard, epoch, log)  # a signal during validation / the save: the epoch is saved
        seed_epoch(args, loaders["train"], epoch, get_rank())
        if log_writer is not None:
            log_writer.set_step(epoch * steps_per_epoch)
        first = epoch == start.epoch
        train_stats = run.train(criterion, loaders["train"], epoch, lr_schedule, wd_schedule, mixup_fn, log_writer,
                                start_iter if first else 0, guard, start_meters if first else None)
        if train_stats.get("stopped_at") is not None:
            run.save_preempted(epoch, train_stats, log)
        # the epoch's training state is saved before validation, so a failing validation loses nothing
        run.save_epoch(epoch)
        val_stats, ema_stats = _validate(args, loaders, backend, model_ema, log_writer, epoch, log)
        run.update_best(epoch, val_stats, log)
        stats = {**{f"train_{k}": v for k, v in train_stats.items()}, **{f"val_{k}": v for k, v in val_stats.items()},
                 **{f"val_ema_{k}": v for k, v in ema_stats.items()}, "epoch": epoch, "n_parameters": n_parameters}
        append_json_log(args.output_dir, stats)
        update_summary(args.output_dir, {"epoch": epoch, "train_loss": train_stats.get("loss"),
                                         "val_acc1": val_stats.get("acc1"), "val_acc5": val_stats.get("acc5")})
        if log_writer is not None:
            log_writer.flush()
    log(f"training time {datetime.timedelta(seconds=int(time.time() - t0))}")
    return _test_at_end(args, loaders, backend, run.best, stats, log)


class _Run:
    """What the epoch loop saves and updates: the best val top-1 so far and the run's unreadable files."""

    def __init__(self, args, backend, model_ema, best: dict, steps_per_epoch: int, bad_files: BadFileTracker,
                 step=None):
        self.args, self.backend, self.model_ema, self.best = args, backend, model_ema, best
        self.steps_per_epoch, self.bad_files, self.step = steps_per_epoch, bad_files, step

    def state(self, epoch=None, resume_iter=None, steps=True) -> dict:
        return client_state(self.args, self.model_ema, self.best, self.bad_files,
                            self.steps_per_epoch if steps else None, epoch, resume_iter)

    def train(self, criterion, loader, epoch, lr_schedule, wd_schedule, mixup_fn, log_writer, start_iter, guard,
              start_meters) -> dict:
        args, backend, best = self.args, self.backend, self.best

        def on_nonfinite(ep, step):  # this epoch's values
            backend.save(args.output_dir, ep, client_state(args, self.model_ema, best, self.bad_files),
                         ["checkpoint-nonfinite.pth"], tag=False) if args.output_dir else None
            if is_main_process() and args.output_dir:
                print(f"state before the failing step saved to {args.output_dir}/checkpoint-nonfinite.pth")

        try:
            return train_one_epoch(backend, criterion, loader, epoch, args, lr_schedule, wd_schedule,
                                   start_steps=epoch * self.steps_per_epoch,
                                   num_training_steps_per_epoch=self.steps_per_epoch, mixup_fn=mixup_fn,
                                   model_ema=self.model_ema, log_writer=log_writer, on_nonfinite=on_nonfinite,
                                   bad_files=self.bad_files, print_freq=args.print_freq, start_iter=start_iter,
                                   guard=guard, start_meters=start_meters, step=self.step)
        except NonFiniteLossError as e:
            print(f"stopping: {e}")
            dist_utils.cleanup()
            sys.exit(1)

    def save_epoch(self, epoch: int) -> None:
        args = self.args
        if args.output_dir and args.save_ckpt:
            names = ["checkpoint-latest.pth"]
            if (epoch + 1) % args.save_ckpt_freq == 0 or epoch + 1 == args.epochs:
                names.append(f"checkpoint-{epoch}.pth")
            self.backend.save(args.output_dir, epoch, self.state(epoch), names)
            dist_utils.barrier("checkpoint save")

    def update_best(self, epoch: int, val_stats: dict, log) -> None:
        args = self.args
        is_best = not val_stats or val_stats["acc1"] > self.best["acc1"]
        if val_stats and is_best:
            self.best = {"acc1": val_stats["acc1"], "epoch": epoch}
        if args.output_dir and args.save_ckpt and is_best:
            self.backend.save(args.output_dir, epoch, self.state(epoch), ["checkpoint-best.pth"], tag=False)
            dist_utils.barrier("best checkpoint save")
        if val_stats:
            log(f"accuracy on {val_stats['n']} val items: {val_stats['acc1']:.2f}% (best {self.best['acc1']:.2f}% "
                f"at epoch {self.best['epoch']})")

    def save_preempted(self, epoch: int, train_stats: dict, log) -> None:
        """Every rank stopped after the same optimizer step: save a resumable mid-epoch checkpoint, say so, exit."""
        args, steps_per_epoch = self.args, self.steps_per_epoch
        it = int(train_stats["stopped_at"])
        step = it // args.update_freq
        saved = "nothing saved (no --output_dir or --no_save_ckpt)"
        if args.output_dir and args.save_ckpt:
            st = self.state(epoch, resume_iter=it)
            st["epoch_meters"] = train_stats["meters"]  # so the resumed epoch's log line averages the whole epoch
            self.backend.save(args.output_dir, epoch, st, ["checkpoint-latest.pth"])
            dist_utils.barrier("preemption checkpoint save")
            saved = f"saved {os.path.join(args.output_dir, 'checkpoint-latest.pth')}"
        log(f"stopped by {train_stats.get('stop_signal')} at epoch {epoch}, optimizer step {step}/{steps_per_epoch}: "
            f"{saved}; rerun the same command with --auto_resume to continue from step {step} "
            f"(exit {PREEMPTED_EXIT})")
        dist_utils.cleanup()
        sys.exit(PREEMPTED_EXIT)


def _validate(args, loaders, backend, model_ema, log_writer, epoch: int, log) -> tuple[dict, dict]:
    val_stats, ema_stats = {}, {}
    if "val" in loaders:
        val_stats = evaluate(loaders["val"], backend.model_without_ddp, backend.autocast, distributed=args.dist_eval,
                             log=log)
        if model_ema is not None:
            ema_stats = evaluate(loaders["val"], model_ema.module, backend.autocast, header="Val (EMA):",
                                 distributed=args.dist_eval, log=log)
        if log_writer is not None:
            log_writer.update(head="perf", step=epoch, val_acc1=val_stats["acc1"], val_acc5=val_stats["acc5"],
                              val_loss=val_stats["loss"], ema_val_acc1=ema_stats.get("acc1"))
    return val_stats, ema_stats


def _test_at_end(args, loaders, backend, best: dict, stats: dict, log) -> dict:
    """The multi-view test after training (with checkpoint-best.pth under --test_best), else the last val; a run
    without either (masked pretraining) reports its last training loss."""
    if "test" not in loaders and "val" not in loaders:
        return {"train_loss": stats.get("train_loss"), "last_epoch": stats.get("epoch")}
    result = {"best_val_acc1": best["acc1"], "best_epoch": best["epoch"]}
    if "test" in loaders and args.test_at_end:
        path = os.path.join(args.output_dir, "checkpoint-best.pth") if args.output_dir else ""
        if args.test_best and path and os.path.isfile(path):
            ckpt = load_checkpoint(path, args.trust_checkpoint)
            backend.model_without_ddp.load_state_dict(ckpt["model"])
            log(f"final test with the best checkpoint {path} (epoch {ckpt.get('epoch')})")
        result.update(final_test_and_merge(args, loaders["test"], backend, backend.autocast, log))
    elif "val" in loaders:
        result.update({"Final top-1": stats.get("val_acc1"), "Final Top-5": stats.get("val_acc5")})
        append_json_log(args.output_dir, {"Final top-1": stats.get("val_acc1"), "Final Top-5": stats.get("val_acc5")})
    return result


def _stop_if_asked(args, guard, epoch, log) -> None:
    """Between epochs (the previous epoch is saved): exit PREEMPTED_EXIT if any rank received a stop signal."""
    asked = all_reduce_sum(torch.tensor([1.0 if guard.requested else 0.0], dtype=torch.float64),
                           name="stop signal check")
    if asked.item() > 0:
        where = f"checkpoint-latest.pth in {args.output_dir}" if args.output_dir and args.save_ckpt else "nothing"
        log(f"stopped by {guard.name or 'a signal on another rank'} before epoch {epoch}: epoch {epoch - 1} is "
            f"saved ({where}); rerun the same command with --auto_resume to continue (exit {PREEMPTED_EXIT})")
        dist_utils.cleanup()
        sys.exit(PREEMPTED_EXIT)


def _train_list_name(args) -> str:
    return args.train_list or (os.path.join(args.data_path, "train.csv") if args.data_path else "")
