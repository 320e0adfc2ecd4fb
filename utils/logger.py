"""Rank-0 logging: MetricLogger progress lines (ETA, lr, loss, grad norm, time, memory), JSON-lines
log.txt, TensorBoard scalars and a CSV summary. Cf. MAE util/misc.py and timm utils/summary.py."""
from __future__ import annotations

import csv
import datetime
import json
import os
import time
from collections import defaultdict, deque

import torch

from .distributed import all_reduce_sum, is_main_process


class SmoothedValue:
    def __init__(self, window_size: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})"):
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value, n: int = 1):
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self):
        t = all_reduce_sum(torch.tensor([self.count, self.total], dtype=torch.float64), name="metric meters")
        self.count, self.total = int(t[0].item()), float(t[1].item())

    @property
    def median(self):
        return float(torch.tensor(list(self.deque)).median().item()) if self.deque else 0.0

    @property
    def avg(self):
        return float(torch.tensor(list(self.deque), dtype=torch.float64).mean().item()) if self.deque else 0.0

    @property
    def global_avg(self):
        return self.total / max(self.count, 1)

    @property
    def max(self):
        return max(self.deque) if self.deque else 0.0

    @property
    def value(self):
        return self.deque[-1] if self.deque else 0.0

    def __str__(self):
        return self.fmt.format(median=self.median, avg=self.avg, global_avg=self.global_avg, max=self.max,
                               value=self.value)


class MetricLogger:
    def __init__(self, delimiter: str = "  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for k, v in kwargs.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                v = v.item()
            self.meters[k].update(float(v))

    def add_meter(self, name, meter):
        self.meters[name] = meter

    def __getattr__(self, attr):
        if attr in self.__dict__.get("meters", {}):
            return self.meters[attr]
        raise AttributeError(attr)

    def __str__(self):
        return self.delimiter.join(f"{k}: {m}" for k, m in self.meters.items())

    def synchronize_between_processes(self):
        for m in self.meters.values():
            m.synchronize_between_processes()

    def log_every(self, iterable, print_freq: int, header: str = "", total: int | None = None, first: int = 0):
        """Yield items; every print_freq steps print ETA, meters, data/step time and max memory. ``first``: the
        step number of the first item (an epoch resumed part-way prints [first/total] onwards)."""
        total = len(iterable) + first if total is None else total
        start = end = time.time()
        iter_time, data_time = SmoothedValue(fmt="{avg:.4f}"), SmoothedValue(fmt="{avg:.4f}")
        width = len(str(total))
        for i, obj in enumerate(iterable, first):
            data_time.update(time.time() - end)
            yield obj
            iter_time.update(time.time() - end)
            if i % print_freq == 0 or i == total - 1:
                eta = datetime.timedelta(seconds=int(iter_time.global_avg * (total - i - 1)))
                mem = ""
                if torch.cuda.is_available():
                    mem = f"  max mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}MB"
                print(f"{header} [{i:>{width}}/{total}]  eta: {eta}  {self}  time: {iter_time}  data: {data_time}{mem}",
                      flush=True)
            end = time.time()
        total_time = time.time() - start
        print(f"{header} Total time: {datetime.timedelta(seconds=int(total_time))} "
              f"({total_time / max(total - first, 1):.4f} s / it)", flush=True)


class TensorboardLogger:
    """SummaryWriter on rank 0 only; a no-op elsewhere or without --log_dir."""

    def __init__(self, log_dir: str | None):
        self.writer = None
        self.step = 0
        if log_dir and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log_dir)

    def set_step(self, step: int | None = None):
        self.step = self.step + 1 if step is None else int(step)

    def update(self, head: str = "scalar", step: int | None = None, **kwargs):
        if self.writer is None:
            return
        for k, v in kwargs.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                v = v.item()
            self.writer.add_scalar(f"{head}/{k}", float(v), self.step if step is None else step)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def append_json_log(output_dir: str | None, stats: dict) -> None:
    """One JSON line in output_dir/log.txt (rank 0)."""
    if not output_dir or not is_main_process():
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "log.txt"), "a") as f:
        f.write(json.dumps(stats) + "\n")


def drop_epochs_from(output_dir: str | None, start_epoch: int) -> int:
    """Before a resumed run trains epoch ``start_epoch`` again: move the log.txt lines of epochs >= start_epoch
    (and any result lines after them) to log.txt.superseded, and the same summary.csv rows to
    summary.csv.superseded, so that no epoch is logged twice and nothing is lost. Returns the lines moved."""
    if not output_dir or not is_main_process():
        return 0
    moved = 0
    for name, epoch_of in (("log.txt", _json_epoch), ("summary.csv", _csv_epoch)):
        path = os.path.join(output_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            lines = f.readlines()
        keep, drop, dropping = [], [], False
        for i, line in enumerate(lines):
            ep = epoch_of(line, i)
            dropping = dropping or (ep is not None and ep >= start_epoch)
            (drop if dropping else keep).append(line)
        if not drop:
            continue
        with open(path + ".superseded", "a") as f:
            f.writelines(drop)
        with open(path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(path + ".tmp", path)
        moved += len(drop) if name == "log.txt" else 0
    return moved


def _json_epoch(line: str, _i: int):
    try:
        ep = json.loads(line).get("epoch")
    except (ValueError, AttributeError):
        return None
    return int(ep) if isinstance(ep, int) else None


def _csv_epoch(line: str, i: int):
    if i == 0:
        return None  # header
    head = line.split(",", 1)[0]
    return int(head) if head.strip().isdigit() else None


def update_summary(output_dir: str | None, row: dict, filename: str = "summary.csv") -> None:
    """Append one row to output_dir/summary.csv (header written on creation), rank 0 only.

    Not timm.utils.update_summary: it prefixes every column with ``train_`` / ``eval_``, so our ``val_acc1`` /
    ``val_acc5`` columns (read by users' scripts, and matched with log.txt's ``val_*`` keys) would be renamed."""
    if not output_dir or not is_main_process():
        return
    path = os.path.join(output_dir, filename)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row.keys()))
        if new:
            w.writeheader()
        w.writerow(row)
