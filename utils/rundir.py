"""One run per output folder: a lock file naming the run that owns the folder.

Two runs writing one ``--output_dir`` would log the same epochs twice into one ``log.txt``, overwrite each other's
checkpoints and delete each other's predictions. The first run's rank 0 creates ``.run.lock`` (host, pid, start
time, SLURM job id) with ``O_EXCL``; a second run stops with one line naming the first. A lock whose process is
gone (same host, dead pid) or that a requeued SLURM job left behind (same job id) is taken over with a message.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile

LOCK_NAME = ".run.lock"


class RunDirBusyError(RuntimeError):
    """Another live run owns the output folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(info: dict) -> str:
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return f"host {info.get('host')}, pid {info.get('pid')}{job}, started {info.get('start')}"


class RunLock:
    """``RunLock.acquire(folder)`` or raise RunDirBusyError; ``release()`` removes the file if it is still ours."""

    def __init__(self, path: str, info: dict):
        self.path, self.info = path, info

    @classmethod
    def acquire(cls, folder: str, log=print) -> "RunLock":
        path = os.path.join(folder, LOCK_NAME)
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "start": datetime.datetime.now().isoformat(timespec="seconds"),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = cls._read(path)
                why = cls._stale(other, info)
                if why is None:
                    raise RunDirBusyError(
                        f"--output_dir {folder} is in use by another run ({_describe(other)}; lock file {path}): "
                        f"wait for it, choose another --output_dir, or delete the lock file if that run is gone"
                    ) from None
                log(f"taking over the lock of a run that is gone ({_describe(other)}): {why}")
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            return cls(path, info)
        raise RunDirBusyError(f"--output_dir {folder}: could not take the lock file {path} (another run raced for it)")

    @staticmethod
    def _read(path: str) -> dict:
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}  # unreadable / half-written: treated as stale below

    @staticmethod
    def _stale(other: dict, me: dict) -> str | None:
        if not other or "pid" not in other:
            return "the lock file is unreadable"
        if other.get("slurm_job_id") and other.get("slurm_job_id") == me.get("slurm_job_id"):
            return "the same SLURM job, requeued"
        if other.get("host") == me["host"] and not _pid_alive(int(other["pid"])):
            return f"pid {other['pid']} is not running on this host"
        return None

    def release(self) -> None:
        held = self._read(self.path)
        if (held.get("pid"), held.get("start")) == (self.info["pid"], self.info["start"]):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


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

