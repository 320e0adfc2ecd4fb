"""Checkpoint I/O: the project's one checkpoint reader, atomic writes, and finding what to resume from.

Checkpoints are data, not code. ``safe_load`` is the only place that reads a checkpoint file: every ``.pth``,
every file of a DeepSpeed tag folder (DeepSpeed's own reads are routed here, see ``deepspeed_loader``), EMA and
optimizer states, ``--finetune`` weights. It uses ``torch.load(weights_only=True)``; a file that needs full
unpickling (it could run code) is refused with a message naming ``--trust_checkpoint`` unless that is given.
Everything we store (args, model cfg, RNG states) is converted to plain Python / tensors so that rule holds.
"""
from __future__ import annotations

import argparse
import errno
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile

import numpy as np
import torch


class CheckpointError(RuntimeError):
    pass


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (disk full, I/O error, quota); the message names the path and the OS error."""


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save wraps a failed write (ENOSPC, EIO) in a RuntimeError
            raise CheckpointSaveError(f"could not save checkpoint {path}: {_os_reason(e, d)}; "
                                      f"the file previously there (if any) is unchanged") from None
        raise


def _os_reason(e: BaseException, folder: str) -> str:
    """The OS error behind a failed save (searched through the exception chain), else the free space left."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return f"{errno.errorcode.get(seen.errno, seen.errno)} ({seen.strerror})"
        seen = seen.__cause__ or seen.__context__
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{first}" + (f" ({free / 2**20:.1f} MiB free in {folder})" if free is not None else "")


# Plain-data classes DeepSpeed pickles into its tag files (loss-scaler settings, ZeRO stage, fragment
# addresses); allowed for DeepSpeed's files only. Any other class in a file is still refused.
DEEPSPEED_SAFE_GLOBALS = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)


def _resolve_globals(names) -> list:
    import importlib

    out = []
    for module, name in names:
        try:
            out.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue  # another DeepSpeed version: that class cannot be in its files either
    return out


def safe_load(path: str, trust_checkpoint: bool = False, map_location="cpu", mmap: bool = False,
              allowed_globals=()):
    """Read one checkpoint file as data. Raises CheckpointError naming the file when it is missing,
    truncated/corrupt, or needs full unpickling (then suggesting --trust_checkpoint for a trusted source).
    ``allowed_globals``: plain-data classes this kind of file may hold besides tensors and builtins."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"could not read checkpoint {path} ({os.path.getsize(path)} bytes): truncated or "
                              f"corrupt (not a complete torch zip archive, e.g. an interrupted copy or save)")
    try:
        # argparse.Namespace: VideoMAE-style trainers (VideoMamba's among them) store their args as one; it is an
        # attribute bag, so it is data like a dict
        with torch.serialization.safe_globals([argparse.Namespace, *allowed_globals]):
            return torch.load(path, map_location=map_location, weights_only=not trust_checkpoint, mmap=mmap)
    except pickle.UnpicklingError as e:
        if not trust_checkpoint:
            raise CheckpointError(
                f"checkpoint {path} contains objects that need full unpickling, which can run code, and was "
                f"refused; if you trust its source, re-run with --trust_checkpoint. Detail: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from e
        raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"could not read checkpoint {path} ({os.path.getsize(path)} bytes): truncated or "
                              f"corrupt. Detail: {type(e).__name__}: {detail}") from e


def load_checkpoint(path: str, trust_checkpoint: bool = False, mmap: bool = False) -> dict:
    """``safe_load`` for a training checkpoint: the result must be a dict."""
    ckpt = safe_load(path, trust_checkpoint, mmap=mmap)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def deepspeed_loader(trust_checkpoint: bool = False):
    """A drop-in for DeepSpeed's ``checkpoint_engine.load(path, map_location=None)`` that reads through
    ``safe_load`` (DeepSpeed itself would unpickle everything)."""

    allowed = _resolve_globals(DEEPSPEED_SAFE_GLOBALS)

    def load(path, map_location=None):
        return safe_load(path, trust_checkpoint, map_location="cpu" if map_location is None else map_location,
                         allowed_globals=allowed)

    return load


def is_complete_checkpoint(path: str) -> bool:
    """Cheap completeness check: a readable zip whose central directory lists a data.pkl."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            return any(n.endswith("data.pkl") for n in names) and z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


_CKPT_RE = re.compile(r"^checkpoint-(\d+|latest|best)\.pth$")
_TAG_RE = re.compile(r"^checkpoint-(\d+)$")
DEEPSPEED_MODEL_FILE = "mp_rank_00_model_states.pt"


def list_checkpoints(output_dir: str) -> list[str]:
    if not output_dir or not os.path.isdir(output_dir):
        return []
    return sorted(os.path.join(output_dir, f) for f in os.listdir(output_dir) if _CKPT_RE.match(f))


def list_deepspeed_tags(output_dir: str) -> list[str]:
    """``checkpoint-{epoch}`` tag folders, oldest first."""
    if not output_dir or not os.path.isdir(output_dir):
        return []
    tags = [f for f in os.listdir(output_dir) if _TAG_RE.match(f) and os.path.isdir(os.path.join(output_dir, f))]
    return [os.path.join(output_dir, t) for t in sorted(tags, key=lambda t: int(_TAG_RE.match(t).group(1)))]


def check_deepspeed_tag(folder: str) -> str | None:
    """None when the tag folder holds a model-states file and every ``.pt`` file in it is a complete archive;
    otherwise what is wrong, naming the file."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(".pt"))
    if DEEPSPEED_MODEL_FILE not in files:
        return f"{folder} has no {DEEPSPEED_MODEL_FILE} (an incomplete DeepSpeed save)"
    for f in files:
        if not is_complete_checkpoint(os.path.join(folder, f)):
            return f"{os.path.join(folder, f)} is truncated or corrupt"
    return None


def _candidate_key(path: str, ckpt: dict, deepspeed: bool):
    is_tag = os.path.isdir(path)
    epoch = ckpt.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) else -1
    name = os.path.basename(path)
    kind = 2 if is_tag else (0 if name == "checkpoint-best.pth" else 1)  # best: only when nothing newer
    # DeepSpeed runs prefer a tag (with its optimizer state) over a weights-only export of any epoch
    return (int(is_tag) if deepspeed else 0, epoch, kind, os.path.getmtime(path))


def find_resume_checkpoint(output_dir: str, log=print, trust_checkpoint: bool = False,
                           deepspeed: bool = False) -> tuple[str | None, dict | None]:
    """The newest complete checkpoint of any kind in ``output_dir``: ``checkpoint-latest/best/N.pth`` and, for a
    DeepSpeed run, ``checkpoint-N/`` tag folders (whose model-states file supplies the returned dict).

    Broken candidates are skipped with a message naming the file. Returns ``(None, None)`` when there is no
    checkpoint at all; raises CheckpointError naming every candidate when all of them are broken (a run that
    has checkpoints must never silently start over).
    """
    paths = list_checkpoints(output_dir) + (list_deepspeed_tags(output_dir) if deepspeed else [])
    good, broken = [], []
    for path in paths:
        if os.path.isdir(path):
            problem = check_deepspeed_tag(path)
            file = os.path.join(path, DEEPSPEED_MODEL_FILE)
        else:
            problem = None if is_complete_checkpoint(path) else f"{path} is truncated or corrupt"
            file = path
        if problem is None:
            try:
                ckpt = load_checkpoint(file, trust_checkpoint, mmap=True)
            except CheckpointError as e:
                problem = str(e)
        if problem is not None:
            log(f"auto-resume: skipping {os.path.basename(path)}: {problem}")
            broken.append(problem)
            continue
        good.append((_candidate_key(path, ckpt, deepspeed), path, ckpt))
    if not good:
        if broken:
            raise CheckpointError(f"auto-resume: every checkpoint in {output_dir} is unusable, refusing to start "
                                  f"over and overwrite them:\n  " + "\n  ".join(broken) +
                                  "\nrepair or move them, or pass --no_auto_resume (or a new --output_dir)")
        return None, None
    _, path, ckpt = max(good, key=lambda g: g[0])
    return path, ckpt


def best_record(output_dir: str, log=print) -> dict | None:
    """The ``best`` record ({'acc1', 'epoch'}) stored in ``checkpoint-best.pth`` (tensors are not read)."""
    path = os.path.join(output_dir or "", "checkpoint-best.pth")
    if not os.path.isfile(path):
        return None
    try:
        rec = load_checkpoint(path, mmap=True).get("best")
    except CheckpointError as e:
        log(f"warning: cannot read the best record of {path}: {e}")
        return None
    return dict(rec) if isinstance(rec, dict) else None


_BLOCK_RE = re.compile(r"^(?:layers|blocks)\.(\d+)\.")


def state_dict_width(sd: dict) -> int | None:
    """The embedding width of a model state dict (patch kernel, cls token or position embedding), if it has one."""
    for k in ("patch_embed.proj.weight", "cls_token", "pos_embed"):
        v = sd.get(k)
        if hasattr(v, "shape") and len(v.shape) >= 2:
            return int(v.shape[0] if k.endswith("weight") else v.shape[-1])
    return None


def state_dict_depth(keys) -> int:
    """Number of ``layers.{i}`` / ``blocks.{i}`` blocks named in ``keys`` (0 when none)."""
    idx = {int(m.group(1)) for k in keys for m in [_BLOCK_RE.match(k)] if m}
    return max(idx) + 1 if idx else 0


def describe_state_dict(sd: dict) -> str:
    """'width 192, 24 blocks, 400 classes' from a model state dict (the parts that exist)."""
    parts = []
    width, depth = state_dict_width(sd), state_dict_depth(sd)
    if width is not None:
        parts.append(f"width {width}")
    if depth:
        parts.append(f"{depth} blocks")
    if "head.weight" in sd and hasattr(sd["head.weight"], "shape"):
        parts.append(f"{sd['head.weight'].shape[0]} classes")
    return ", ".join(parts) or f"{len(sd)} tensors"
