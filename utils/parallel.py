"""A process-parallel map with a progress bar and ETA, for the data tools (scripts/build_lists.py,
scripts/prepare_videos.py).

    results = parallel_map(probe_one, jobs, workers=16, desc="probe train")   # results in the order of jobs

``fn`` must be picklable (a module-level function) and should return its failures as values: an exception
raised in a worker stops the map. ``workers <= 1`` runs in this process (no pool). The bar goes to stderr:
done / total, rate, elapsed and ETA, redrawn at most every ``interval`` seconds (one line per update when
stderr is not a terminal, so logs stay readable).
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, List, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """``done / total`` with rate and ETA on one line of ``stream`` (default stderr)."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", stream=None, interval: float = 0.5):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self) -> str:
        el = time.monotonic() - self.t0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        width = 24
        fill = int(width * self.done / self.total) if self.total else width
        bar = "#" * fill + "." * (width - fill)
        eta_s = _fmt_time(eta) if eta == eta else "--:--"
        return (f"{self.desc}: [{bar}] {self.done}/{self.total} {pct:5.1f}% {rate:.1f} {self.unit}/s "
                f"elapsed {_fmt_time(el)} ETA {eta_s}")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= self.interval:
            self._last = now
            self.stream.write(("\r" + self.line()) if self._tty else (self.line() + "\n"))
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 0, desc: str = "", unit: str = "file",
                 initializer: Optional[Callable[[], None]] = None, chunksize: int = 0, stream=None) -> List[R]:
    """``[fn(x) for x in items]`` over ``workers`` processes (0: all CPUs) with a progress bar; order kept."""
    items = list(items)
    workers = default_workers() if workers <= 0 else workers
    bar = Progress(len(items), desc, unit, stream=stream)
    out: List[R] = []
    if not items:
        return out
    if workers <= 1 or len(items) == 1:
        if initializer is not None:
            initializer()
        for x in items:
            out.append(fn(x))
            bar.update()
        bar.close()
        return out
    chunk = chunksize or max(1, min(16, len(items) // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=initializer) as pool:
        for r in pool.map(fn, items, chunksize=chunk):
            out.append(r)
            bar.update()
    bar.close()
    return out
