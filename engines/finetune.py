"""Fine-tuning loops: train_one_epoch, evaluate (single view), final_test (multi-view files) and merge.

Batches follow the datasets contract: train (clip, label, index, bad), val (clip, label, id, ok),
test (clip, label, id, chunk_nb, split_nb, ok); ImageNet batches are (img, label). ``bad`` is, per item,
the unreadable files that item replaced, newline-joined ('' when none).

Every model call goes through ``engines.backends.cast_input`` (device and dtype follow the model).
Unreadable items: training caps the number of distinct unreadable files of the run (all workers and
ranks) at --max_bad_samples; validation and the multi-view test report unreadable videos by name and
count them as misses, the same way (``report_unreadable``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections import defaultdict

import numpy as np
import torch

from utils.distributed import all_gather_object, all_reduce_sum, get_rank, is_main_process
from utils.errors import TooManyBadSamplesError
from utils.logger import MetricLogger, SmoothedValue
from utils.seeding import STEP, seed_everything, seed_for

from .backends import cast_input


class NonFiniteLossError(RuntimeError):
    """Raised on every rank when any rank saw a non-finite loss (after the state was saved)."""


def bad_files_of(batch) -> list[str]:
    """The unreadable files named in a train batch's 4th element (per-item newline-joined strings)."""
    if len(batch) < 4:
        return []
    field = batch[3]
    if isinstance(field, str):
        field = [field]
    out = []
    for item in field:
        if isinstance(item, str) and item:
            out.extend(p for p in item.split("\n") if p)
    return out


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


def correct_topk(output: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[int]:
    """Number of items whose label is among the top-k predictions (k capped at the number of classes)."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, 1, True, True)[1]
    hit = pred.eq(target.reshape(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(1).sum().item()) for k in topk]


def _logits(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _to_list(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return list(x)


def train_one_epoch(backend, criterion, data_loader, epoch: int, args, lr_schedule, wd_schedule=None,
                    start_steps: int = 0, num_training_steps_per_epoch: int | None = None, mixup_fn=None,
                    model_ema=None, log_writer=None, on_nonfinite=None, bad_files: BadFileTracker | None = None,
                    print_freq: int = 10, max_steps: int | None = None, start_iter: int = 0,
                    guard=None, start_meters: dict | None = None) -> dict:
    """One epoch; lr/wd set per optimizer step from the schedules (index = global optimizer step).

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
    if max_steps is not None:
        n_iters = min(n_iters, max_steps * update_freq)
    metric_logger = MetricLogger(delimiter="  ")
    metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    metric_logger.add_meter("min_lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    header = f"Epoch: [{epoch}]"
    if bad_files is None:
        bad_files = BadFileTracker(getattr(args, "max_bad_samples", 10))
    backend.optimizer.zero_grad(set_to_none=True)
    if start_iter % update_freq:
        raise ValueError(f"start_iter {start_iter} is not an optimizer-step boundary (update_freq {update_freq})")
    if start_iter and hasattr(data_loader.sampler, "start_at"):
        data_loader.sampler.start_at(start_iter * data_loader.batch_size)
    rank = get_rank()
    stop_requested, stopped_at = False, None
    n_new_bad = 0
    if start_meters:  # the interrupted part of this epoch: this rank's own sums, added to in the same order
        mine = start_meters["ranks"][rank]
        for name in start_meters["ranks"][0]:  # every rank creates the meters in one order (for the all-reduce)
            metric_logger.meters[name].count, metric_logger.meters[name].total = mine.get(name, (0, 0.0))
        n_new_bad = int(start_meters.get("n_new_bad_files", 0))
    data_iter = iter(data_loader)
    for data_iter_step in metric_logger.log_every(range(start_iter, n_iters), print_freq, header, total=n_iters,
                                                  first=start_iter):
        batch = next(data_iter)
        seed_everything(seed_for(args.seed, epoch, rank, STEP, data_iter_step))
        samples, targets = batch[0], batch[1]
        local_bad = set(bad_files_of(batch)) - bad_files.files
        step = data_iter_step // update_freq
        it = start_steps + step
        if data_iter_step % update_freq == 0:
            for group in backend.optimizer.param_groups:
                group["lr"] = float(lr_schedule[it]) * group.get("lr_scale", 1.0)
                if wd_schedule is not None and group["weight_decay"] > 0:
                    group["weight_decay"] = float(wd_schedule[it])
        samples = samples.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            samples, targets = mixup_fn(samples, targets)
        with backend.autocast():
            output = model(cast_input(samples, model))
            aux = None
            if isinstance(output, (tuple, list)):  # (logits, auxiliary loss), e.g. the distillation wrapper
                output, aux = output
            loss = criterion(output.float(), targets)
            if aux is not None:
                loss = loss + aux.float()
        loss_value = float(loss.item())
        # one all-reduce per step (a CPU tensor: gloo carries it beside NCCL): any rank non-finite stops all
        # ranks; when any rank met new unreadable files, the names are gathered and the run's cap checked.
        stop_here = 1.0 if guard is not None and guard.requested else 0.0
        flags = all_reduce_sum(torch.tensor([0.0 if math.isfinite(loss_value) else 1.0, float(len(local_bad)),
                                             stop_here], dtype=torch.float64), name="train step flags")
        stop_requested = stop_requested or flags[2].item() > 0
        if flags[1].item() > 0:
            n_new_bad += bad_files.update(local_bad, epoch)
        if flags[0].item() > 0:
            msg = (f"non-finite loss ({loss_value} on rank {get_rank()}) at epoch {epoch}, step {data_iter_step} "
                   f"(optimizer step {it}); stopping all ranks")
            if on_nonfinite is not None:
                on_nonfinite(epoch, data_iter_step)
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
            raise NonFiniteLossError(msg)
        update = (data_iter_step + 1) % update_freq == 0
        grad_norm = backend.backward_step(loss, update)
        if update and model_ema is not None:
            model_ema.update(backend.model_without_ddp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        lrs = [g["lr"] for g in backend.optimizer.param_groups]
        wd = max((g["weight_decay"] for g in backend.optimizer.param_groups), default=0.0)
        metric_logger.update(loss=loss_value, lr=max(lrs), min_lr=min(lrs), weight_decay=wd)
        if grad_norm is not None:
            metric_logger.update(grad_norm=grad_norm)
        if mixup_fn is None and targets.ndim == 1:
            metric_logger.update(class_acc=(output.argmax(-1) == targets).float().mean().item())
        scale = backend.loss_scale()
        if scale is not None:
            metric_logger.update(loss_scale=scale)
        if log_writer is not None and update:
            log_writer.update(head="loss", step=it, loss=loss_value)
            log_writer.update(head="opt", step=it, lr=max(lrs), min_lr=min(lrs), weight_decay=wd,
                              grad_norm=grad_norm, loss_scale=scale)
        if stop_requested and update and data_iter_step + 1 < n_iters:
            stopped_at = data_iter_step + 1  # every rank agreed at the same step (the all-reduce above)
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
        stats.update(stopped_at=stopped_at, meters=stopped_meters, stop_signal=getattr(guard, "name", "") or "a signal on another rank")
    return stats


def report_unreadable(what: str, names, top1: float, top1_readable: float, log=print) -> None:
    """The one report of unreadable evaluation videos (validation and multi-view test alike)."""
    names = sorted(names)
    if not names:
        return
    log(f"{what}: {len(names)} videos could not be read and count as misses: {', '.join(names[:20])}"
        f"{' ...' if len(names) > 20 else ''} (top-1 {top1:.3f} over all, {top1_readable:.3f} over readable "
        f"videos only)")


@torch.no_grad()
def evaluate(data_loader, model, autocast=None, header: str = "Val:", print_freq: int = 10,
             distributed: bool = True, log=print) -> dict:
    """Single-view evaluation: loss, top-1, top-5.

    Unreadable items (ok=False, which the datasets return only with --skip_bad_test) count as misses and are
    reported by name, as in the multi-view test; ``acc1_readable`` is top-1 over the readable ones, ``loss``
    is over readable items. ``distributed``: the loader holds this rank's shard and totals are summed over
    ranks; False: every rank evaluated the whole set and nothing is summed (the count stays the list length).
    """
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    metric_logger = MetricLogger(delimiter="  ")
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64)  # n_readable, loss_sum, correct1, correct5, n_unreadable
    bad_ids: list[str] = []
    for batch in metric_logger.log_every(data_loader, print_freq, header):
        images, target = batch[0], batch[1]
        ok = torch.as_tensor(batch[3], dtype=torch.bool) if len(batch) >= 4 else torch.ones(len(target), dtype=torch.bool)
        if not ok.all():
            ids = _to_list(batch[2])
            bad_ids.extend(str(ids[i]) for i in range(len(ids)) if not bool(ok[i]))
        totals[4] += float((~ok).sum().item())
        if not ok.any():
            continue
        images = cast_input(images[ok], model)
        target = target[ok].to(images.device, non_blocking=True)
        with autocast() if autocast is not None else contextlib.nullcontext():
            output = model(images)
        output = _logits(output).float()
        c1, c5 = correct_topk(output, target, topk=(1, 5))
        n = target.shape[0]
        totals[0] += n
        totals[1] += float(criterion(output, target).item())
        totals[2] += c1
        totals[3] += c5
        metric_logger.update(acc1=100.0 * c1 / n, acc5=100.0 * c5 / n)
    if distributed:
        all_reduce_sum(totals, name=f"{header} totals")
        if totals[4].item() > 0:
            bad_ids = [i for ids in all_gather_object(bad_ids, name=f"{header} unreadable ids") for i in ids]
    n_read, n_bad = totals[0].item(), totals[4].item()
    n_all = max(n_read + n_bad, 1.0)
    stats = {"loss": totals[1].item() / max(n_read, 1.0), "acc1": 100.0 * totals[2].item() / n_all,
             "acc5": 100.0 * totals[3].item() / n_all, "n": int(n_read + n_bad), "n_unreadable": int(n_bad),
             "acc1_readable": 100.0 * totals[2].item() / max(n_read, 1.0)}
    print(f"* {header} Acc@1 {stats['acc1']:.3f} Acc@5 {stats['acc5']:.3f} loss {stats['loss']:.4f} "
          f"on {stats['n']} items")
    if is_main_process():
        report_unreadable(header.rstrip(":"), bad_ids, stats["acc1"], stats["acc1_readable"], log)
    return stats


@torch.no_grad()
def final_test(data_loader, model, file: str, autocast=None, print_freq: int = 10) -> dict:
    """Multi-view test: writes ``id [logits] label chunk split`` lines (one per view) to ``file``.

    Unreadable views (ok=False) go to ``file`` + '.bad' as ``id label chunk split`` lines so the merge
    can report them by name and count them.
    """
    model.eval()
    metric_logger = MetricLogger(delimiter="  ")
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    n_views = n_bad = 0
    tmp, tmp_bad = f"{file}.{os.getpid()}.tmp", f"{file}.bad.{os.getpid()}.tmp"  # unique per run and rank
    with open(tmp, "w") as f, open(tmp_bad, "w") as fbad:
        for batch in metric_logger.log_every(data_loader, print_freq, "Test:"):
            images, target, ids, chunk_nb, split_nb = batch[:5]
            ok = torch.as_tensor(batch[5], dtype=torch.bool) if len(batch) >= 6 else torch.ones(len(target),
                                                                                              dtype=torch.bool)
            ids, chunk_nb, split_nb, labels = _to_list(ids), _to_list(chunk_nb), _to_list(split_nb), _to_list(target)
            if ok.any():
                with autocast() if autocast is not None else contextlib.nullcontext():
                    out = model(cast_input(images[ok], model))
                out = _logits(out).float().cpu()
            j = 0
            for i in range(len(ids)):
                if bool(ok[i]):
                    f.write(f"{ids[i]} {json.dumps(out[j].tolist())} {int(labels[i])} {int(chunk_nb[i])} "
                            f"{int(split_nb[i])}\n")
                    j += 1
                    n_views += 1
                else:
                    fbad.write(f"{ids[i]} {int(labels[i])} {int(chunk_nb[i])} {int(split_nb[i])}\n")
                    n_bad += 1
    os.replace(tmp, file)
    os.replace(tmp_bad, file + ".bad")
    return {"n_views": n_views, "n_bad_views": n_bad}


# The accuracy line upstream's final_test writes before its per-view lines: "{acc1}, {acc5}" of the last batch
# (timm's accuracy: 0-d tensors, e.g. "tensor(75., device='cuda:0'), tensor(100., device='cuda:0')", or numbers).
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_UPSTREAM_HEADER = re.compile(rf"\s*(?:tensor\([^()\[\]]*\)|{_NUM})\s*,\s*(?:tensor\([^()\[\]]*\)|{_NUM})\s*")


def _parse_pred_line(line: str, path: str, lineno: int):
    """``id [logits] label chunk split``, as ours and upstream's final_test write it: the id is everything before
    the '[' (upstream keys a video by its file stem, ours by its list path; either is read as written)."""
    try:
        lb, rb = line.index("["), line.index("]")
        vid = line[:lb].strip()
        inner = line[lb + 1: rb].strip()
        logits = np.asarray([float(x) for x in inner.split(",")] if inner else [], dtype=np.float64)
        label, chunk, split = line[rb + 1:].split()
        if not vid or logits.size == 0:
            raise ValueError("no id or no logits")
        return vid, logits, int(label), int(chunk), int(split)
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: malformed prediction line {line.strip()!r} "
                         f"(expected 'id [logits] label chunk split')") from e


def merge(eval_path: str, num_tasks: int, log=print) -> dict:
    """Softmax-average all views of each video from ``{rank}.txt`` files -> top-1 / top-5 (percent).

    Reads our files and upstream-written ones alike: the accuracy line upstream's final_test writes first is
    recognised and skipped (only on line 1; any other malformed line is an error naming file and line), ids are
    taken as written (our list paths, upstream's file stems). Views duplicated by a padding sampler (same id,
    chunk, split) count once. Videos whose every view was unreadable are reported by name and counted as misses in
    the headline figures. Logs and returns how many files, views and videos were merged.
    """
    views: dict[str, dict] = defaultdict(dict)
    labels: dict[str, int] = {}
    bad: dict[str, set] = defaultdict(set)
    n_lines = n_headers = 0
    for r in range(num_tasks):
        path = os.path.join(eval_path, f"{r}.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"merge: {path} is missing (rank {r} of {num_tasks} wrote no predictions)")
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if lineno == 1 and "[" not in line and _UPSTREAM_HEADER.fullmatch(line.strip()):
                    n_headers += 1
                    continue
                vid, logits, label, chunk, split = _parse_pred_line(line, path, lineno)
                if vid in labels and labels[vid] != label:
                    raise ValueError(f"{path}:{lineno}: video {vid} has label {label} but {labels[vid]} elsewhere")
                labels[vid] = label
                views[vid][(chunk, split)] = logits
                n_lines += 1
        bad_path = path + ".bad"
        if os.path.isfile(bad_path):
            with open(bad_path) as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            vid, label, chunk, split = line.split()
                            bad[vid].add((int(chunk), int(split)))
                        except ValueError as e:
                            raise ValueError(f"{bad_path}:{lineno}: malformed line {line.strip()!r} "
                                             f"(expected 'id label chunk split')") from e
                        labels.setdefault(vid, int(label))
    unreadable = sorted(v for v in bad if v not in views)
    correct1 = correct5 = 0
    view_counts = []
    for vid, per_view in views.items():
        probs = np.stack([_softmax(v) for _, v in sorted(per_view.items())]).mean(0)
        order = np.argsort(-probs, kind="stable")
        correct1 += int(order[0] == labels[vid])
        correct5 += int(labels[vid] in order[:5])
        view_counts.append(len(per_view))
    n_scored = len(views)
    n_total = n_scored + len(unreadable)
    n_views = sum(view_counts)
    partial = sorted(v for v in bad if v in views)
    res = {"top1": 100.0 * correct1 / max(n_total, 1), "top5": 100.0 * correct5 / max(n_total, 1),
           "n_videos": n_scored, "n_unreadable": len(unreadable), "unreadable": unreadable,
           "n_partial": len(partial), "n_views": n_views, "n_duplicate_views": n_lines - n_views,
           "n_files": num_tasks, "n_upstream_headers": n_headers,
           "views_per_video": (min(view_counts) if view_counts else 0, max(view_counts) if view_counts else 0),
           "top1_readable": 100.0 * correct1 / max(n_scored, 1), "top5_readable": 100.0 * correct5 / max(n_scored, 1)}
    vmin, vmax = res["views_per_video"]
    vpv = f"{vmin}" if vmin == vmax else f"{vmin}-{vmax}"
    extra = [f"{n_lines - n_views} duplicate views counted once"] if n_lines > n_views else []
    if n_headers:
        extra.append(f"{n_headers} upstream accuracy header line{'s' if n_headers > 1 else ''} skipped")
    log(f"merge: {n_views} views of {n_scored} videos from {num_tasks} file{'s' if num_tasks > 1 else ''}"
        f"{' (' + '; '.join(extra) + ')' if extra else ''}, {vpv} views per video (softmax-averaged); "
        f"top-1 {res['top1']:.3f} top-5 {res['top5']:.3f}")
    report_unreadable("merge", unreadable, res["top1"], res["top1_readable"], log)
    if partial:
        log(f"merge: {len(partial)} videos had some unreadable views; scored on the rest: {', '.join(partial[:20])}")
    return res


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
