"""Evaluation: evaluate (single view), final_test (multi-view prediction files), merge (softmax-average the views
of each video), and the multi-view test of a run across ranks (``final_test_and_merge``).

Batches are read by name (utils.batch.Batch: clips, targets, ids, ok; chunk and split for the test).
Every model call goes through ``engines.backends.cast_input`` (device and dtype follow the model). Unreadable
videos are reported by name and counted as misses, the same way for validation and the multi-view test
(``report_unreadable``).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from collections import defaultdict

import numpy as np
import torch
from timm.utils import accuracy

from utils import distributed as dist_utils
from utils.batch import as_batch
from utils.checkpoint_io import to_plain
from utils.distributed import all_gather_object, all_reduce_sum, is_main_process
from utils.logger import MetricLogger, append_json_log

from .backends import cast_input


def _correct(output: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    """Items whose label is in the top-1 / top-5 (k capped at the number of classes): timm's accuracy (percent of
    the batch) turned back into counts, so that sums over batches and ranks stay exact."""
    n = target.shape[0]
    return tuple(int(round(float(a) * n / 100.0)) for a in accuracy(output, target, topk=(1, 5)))


def _logits(output):
    return output[0] if isinstance(output, (tuple, list)) else output


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
        batch = as_batch(batch, "val")
        images, target, ok = batch.clips, batch.targets, batch.readable()
        if not ok.all():
            bad_ids.extend(str(batch.ids[i]) for i in range(len(batch.ids)) if not bool(ok[i]))
        totals[4] += float((~ok).sum().item())
        if not ok.any():
            continue
        images = cast_input(images[ok], model)
        target = target[ok].to(images.device, non_blocking=True)
        with autocast() if autocast is not None else contextlib.nullcontext():
            output = model(images)
        output = _logits(output).float()
        c1, c5 = _correct(output, target)
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
            batch = as_batch(batch, "test")
            ok, ids, chunk_nb, split_nb = batch.readable(), batch.ids, batch.chunk, batch.split
            labels = batch.targets.tolist() if isinstance(batch.targets, torch.Tensor) else list(batch.targets)
            if ok.any():
                with autocast() if autocast is not None else contextlib.nullcontext():
                    out = model(cast_input(batch.clips[ok], model))
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
        logits = torch.from_numpy(np.stack([v for _, v in sorted(per_view.items())]))
        probs = torch.softmax(logits, dim=1).mean(0).numpy()
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


def final_test_and_merge(args, test_loader, backend, autocast, log=print) -> dict:
    """The multi-view test of a run: every rank writes predictions/{rank}.txt, rank 0 merges them."""
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


def run_eval(args, loaders, backend, autocast, log=print) -> dict:
    """--eval: the multi-view test (or single-view val where there is no test split), logged and summarised."""
    if "test" in loaders:
        res = final_test_and_merge(args, loaders["test"], backend, autocast, log)
    else:
        st = evaluate(loaders["val"], backend.model_without_ddp, autocast, log=log)
        res = {"Final top-1": st["acc1"], "Final Top-5": st["acc5"], "n": st["n"], "n_unreadable": st["n_unreadable"]}
        append_json_log(args.output_dir, res)
    log(f"summary: {json.dumps(to_plain(res))}")
    dist_utils.cleanup()
    return res
