"""Checkpoint I/O: atomic writes, weights_only loading, and finding the newest complete checkpoint.

Checkpoints are data, not code: everything we store (args, model cfg, RNG states) is converted to
plain Python / tensors so ``torch.load(weights_only=True)`` reads it. A file that needs full
unpickling is refused unless ``trust_checkpoint=True``.

Note: models/checkpoint.py (models engineer) exports ``load_checkpoint_file`` with the same contract;
``load_checkpoint`` here prefers it and only falls back to the local loader when models/ lacks it.
"""
from __future__ import annotations

import argparse
import os
import pickle
import random
import re
import tempfile
import zipfile

import numpy as np
import torch


class CheckpointError(RuntimeError):
    pass


def to_plain(obj):
    """Namespace/dict/list/tuple/numpy/path -> plain types that weights_only unpickling accepts."""
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    return str(obj)


def rng_state() -> dict:
    """Torch, numpy, python and cuda RNG states as tensors / plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path: str) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace (never a half-written file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _local_load(path: str, trust_checkpoint: bool = False):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt (not a complete torch zip archive)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path} needs full unpickling (it stores Python objects, which can run "
                              f"code); re-run with --trust_checkpoint if you trust its source. Detail: {e}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {e}") from e


def load_checkpoint(path: str, trust_checkpoint: bool = False) -> dict:
    """Load a checkpoint dict; uses models.checkpoint.load_checkpoint_file when it exists."""
    try:
        from models.checkpoint import load_checkpoint_file  # entry points wire models; this is a soft use
    except ImportError:
        load_checkpoint_file = None
    if load_checkpoint_file is not None:
        try:
            return load_checkpoint_file(path, trust_checkpoint=trust_checkpoint)
        except CheckpointError:
            raise
        except Exception as e:  # re-raise under our type so callers can skip broken files
            raise CheckpointError(str(e)) from e
    return _local_load(path, trust_checkpoint)


def is_complete_checkpoint(path: str) -> bool:
    """Cheap completeness check: a readable zip whose central directory lists a data.pkl."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            return any(n.endswith("data.pkl") for n in names) and z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


_CKPT_RE = re.compile(r"^checkpoint-(\d+|latest|best)\.pth$")


def list_checkpoints(output_dir: str) -> list[str]:
    if not output_dir or not os.path.isdir(output_dir):
        return []
    return [os.path.join(output_dir, f) for f in os.listdir(output_dir) if _CKPT_RE.match(f)]


def find_resume_checkpoint(output_dir: str, log=print, trust_checkpoint: bool = False) -> tuple[str | None, dict | None]:
    """Newest complete checkpoint (by stored epoch, then mtime) in output_dir; broken files skipped with a message.

    checkpoint-best.pth is never a resume source (it may be older than latest).
    """
    candidates = []
    for path in list_checkpoints(output_dir):
        if os.path.basename(path) == "checkpoint-best.pth":
            continue
        if not is_complete_checkpoint(path):
            log(f"auto-resume: skipping {path}: truncated or corrupt checkpoint")
            continue
        try:
            ckpt = load_checkpoint(path, trust_checkpoint)
        except CheckpointError as e:
            log(f"auto-resume: skipping {path}: {e}")
            continue
        epoch = ckpt.get("epoch", -1) if isinstance(ckpt, dict) else -1
        candidates.append((int(epoch) if epoch is not None else -1, os.path.getmtime(path), path, ckpt))
    if not candidates:
        return None, None
    candidates.sort(key=lambda c: (c[0], c[1]))
    _, _, path, ckpt = candidates[-1]
    return path, ckpt


def find_deepspeed_tag(output_dir: str) -> str | None:
    """Newest complete DeepSpeed tag folder (``checkpoint-{epoch}`` with a ``latest`` file written last)."""
    if not output_dir or not os.path.isdir(output_dir):
        return None
    latest = os.path.join(output_dir, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            tag = f.read().strip()
        if os.path.isdir(os.path.join(output_dir, tag)):
            return tag
    return None
