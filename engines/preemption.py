"""Stop on a scheduler's signal and continue exactly where the run stopped.

SLURM (and most schedulers) send SIGTERM on preemption or at the time limit, and ``srun --signal=USR1@T`` sends
SIGUSR1 T seconds before it. ``PreemptionGuard`` turns either into a request: every rank finishes its current
optimizer step, the ranks agree (the request rides on the one all-reduce each training step already does), the
state is saved as a resumable mid-epoch checkpoint and the run exits with ``PREEMPTED_EXIT`` (75, EX_TEMPFAIL:
"try again"); ``--auto_resume`` then continues from the next step.

Continuing *exactly* needs the randomness of a step not to depend on what ran before it in the process:

- ``PositionSampler`` wraps the train sampler and yields ``(item seed, index)`` keys: the seed is the one seed rule
  ``seed_for(seed, epoch, rank, ITEM, position)``, and it can start an epoch at a position (the samples already seen are
  skipped, none is seen twice);
- ``SeededItems`` wraps the train dataset and seeds torch / numpy / python from that key before each item, so an
  item's augmentation is the same whichever worker loads it and whether or not the run was interrupted (and the
  same for any --num_workers);
- the training loop seeds the process's own RNGs (dropout, drop path, mixup) per step with ``seed_for(seed, epoch,
  rank, STEP, step)``.
"""
from __future__ import annotations

import signal
import sys

from torch.utils.data import Dataset, Sampler

from utils.seeding import ITEM, seed_everything, seed_for

PREEMPTED_EXIT = 75  # sysexits.h EX_TEMPFAIL: the run stopped on request and resumes with --auto_resume
SIGNALS = ("SIGTERM", "SIGUSR1")


class PreemptionGuard:
    """Records SIGTERM / SIGUSR1 instead of dying; a second signal of the same kind stops the process at once.

    Used as a context manager around the training loop on every rank's main process (signal handlers can only be
    installed from the main thread; elsewhere it records nothing and the default behaviour stays)."""

    def __init__(self, log=None):
        self.signum: int | None = None
        self._old: dict = {}
        self._log = log

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum, frame):
        if self.signum == signum:  # asked twice: the user (or scheduler) means it
            self.restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        sys.stderr.write(f"received {signal.Signals(signum).name}: finishing the current step, then saving a "
                         f"resumable checkpoint (send it again to stop at once)\n")
        sys.stderr.flush()

    def __enter__(self):
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self.restore()
        return False


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a scheduler's SIGTERM / SIGUSR1 to the whole process group leaves the workers
    running, so the main process can finish its step and save; the DataLoader's own shutdown (SIGTERM from the
    parent process) still ends a worker at once. SIGTERM is blocked and read by a thread that knows the sender."""
    import os
    import threading

    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not POSIX: keep the default behaviour
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait_for_parent():
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:  # the DataLoader stopping us, or an orphan
                os._exit(0)

    threading.Thread(target=wait_for_parent, name="sigterm-from-parent", daemon=True).start()


class PositionSampler(Sampler):
    """Wraps a train sampler (``set_epoch`` forwarded); yields ``(item_seed, index)`` for ``SeededItems``.

    ``start_at(n)`` makes the next iteration skip the first ``n`` positions of the epoch's order (one-shot), for
    a run resumed mid-epoch. ``len()`` stays the whole epoch's, so steps per epoch and schedules do not change."""

    def __init__(self, sampler, seed: int, rank: int):
        self.sampler, self.seed, self.rank = sampler, int(seed), int(rank)
        self.epoch, self._start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def start_at(self, position: int) -> None:
        self._start = int(position)

    def __iter__(self):
        start, self._start = self._start, 0
        for pos, idx in enumerate(self.sampler):
            if pos >= start:
                yield seed_for(self.seed, self.epoch, self.rank, ITEM, pos), idx

    def __len__(self):
        return len(self.sampler)


class SeededItems(Dataset):
    """Wraps a map-style dataset: ``ds[(item_seed, index)]`` seeds torch, numpy and python with ``item_seed`` and
    returns ``dataset[index]``; a plain index passes through. Other attributes are the wrapped dataset's."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            item_seed, key = key
            seed_everything(item_seed)
        return self.dataset[key]

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
