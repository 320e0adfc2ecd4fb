"""Checkpoint reading and the loading contract for VideoMambaPro / VideoMamba weights.

``load_checkpoint_file(path, trust_checkpoint=False) -> dict``: a file or DeepSpeed folder read through the
project's one safe reader (``utils.checkpoint_io.safe_load``), with clear errors for missing, truncated/corrupt
and code-carrying files.

``load_pretrained(model, path_or_state_dict, ...) -> report``: unwrap ``model``/``module``/``state_dict``
(DeepSpeed ``mp_rank_00_model_states.pt`` included), strip ``module.``/``backbone.``/``encoder.``/
``_orig_mod.`` prefixes, inflate an image (2-D) patch kernel for a video model, resize ``pos_embed``
(bicubic) and ``temporal_pos_embedding`` (linear), drop a mismatched head with a message, load, and
assert that the missing keys are exactly the expected ones (STYLE.md item 10).

The tensor surgery helpers below are model-agnostic; ``models.videomambapro.checkpoint_filter_fn``
applies them for a given model (and is also timm's ``pretrained_filter_fn``).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from utils.checkpoint_io import (
    DEEPSPEED_MODEL_FILE,
    CheckpointError,
    safe_load,
    state_dict_depth,
    state_dict_width,
)

__all__ = [
    "load_checkpoint_file", "load_pretrained", "unwrap_state_dict", "strip_prefixes", "inflate_patch_kernel",
    "resize_pos_embed", "resize_temporal_embedding", "filter_fn_for", "PREFIXES", "DEEPSPEED_MODEL_FILE",
]

PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")


def _resolve_path(path: str) -> str:
    """A file, or a DeepSpeed checkpoint folder (``latest`` tag file or a tag folder) -> the model file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        cands = [os.path.join(path, DEEPSPEED_MODEL_FILE)]
        latest = os.path.join(path, "latest")
        if os.path.isfile(latest):
            with open(latest) as f:
                cands.insert(0, os.path.join(path, f.read().strip(), DEEPSPEED_MODEL_FILE))
        for c in cands:
            if os.path.isfile(c):
                return c
        raise FileNotFoundError(f"{path} is a folder without a DeepSpeed {DEEPSPEED_MODEL_FILE} (looked at {cands})")
    return path


def load_checkpoint_file(path, trust_checkpoint: bool = False) -> dict:
    """Resolve a file or DeepSpeed folder to its model file and read it with the project's one safe reader
    (``utils.checkpoint_io.safe_load``: weights only unless ``trust_checkpoint``; errors name the file)."""
    path = _resolve_path(path)
    ckpt = safe_load(path, trust_checkpoint=trust_checkpoint)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict (state dict or "
                              f"wrapper)")
    return ckpt


def unwrap_state_dict(ckpt: dict, model_key: str = "model|module", log=print):
    """Return ``(state_dict, key_used)``: the first of ``model_key.split('|')`` (then ``state_dict``)
    holding a dict; a bare state dict (tensor values) is returned as is with key ``None``."""
    keys = [k for k in model_key.split("|") if k] + ["state_dict"]
    for k in keys:
        if k in ckpt and isinstance(ckpt[k], dict):
            if log:
                log(f"load checkpoint: using the '{k}' entry")
            return ckpt[k], k
    if ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, None
    raise KeyError(f"no state dict under {keys} and not a bare state dict; top-level keys: {sorted(ckpt)[:20]}")


def strip_prefixes(state_dict: dict, prefixes=PREFIXES):
    """Strip wrapper prefixes (repeatedly, e.g. ``module._orig_mod.``). Returns ``(new_dict, stripped)``."""
    stripped = set()
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
                    stripped.add(p)
        out[k] = v
    return out, sorted(stripped)


def inflate_patch_kernel(w: torch.Tensor, t: int, mode: str = "center") -> torch.Tensor:
    """Image patch kernel ``(d, c, kh, kw)`` -> video ``(d, c, t, kh, kw)``.

    ``center`` (VideoMamba's ``inflate_weight`` default): the 2-D kernel in frame ``t // 2``, zeros
    elsewhere, so a static clip gives the image features. ``average``: the kernel / t in every frame.
    """
    if w.dim() != 4:
        raise ValueError(f"expected a 4-D image patch kernel, got {tuple(w.shape)}")
    if mode == "center":
        out = w.new_zeros(w.shape[0], w.shape[1], t, *w.shape[2:])
        out[:, :, t // 2] = w
        return out
    if mode == "average":
        return w.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    raise ValueError(f"inflate mode must be 'center' or 'average', got {mode!r}")


def resize_pos_embed(pos: torch.Tensor, new_grid, num_prefix: int = 1) -> torch.Tensor:
    """``(1, num_prefix + h*w, d)`` -> ``(1, num_prefix + H*W, d)`` (bicubic, as VideoMamba); the old grid must be
    square. timm's ``resample_abs_pos_embed`` does the work."""
    from timm.layers import resample_abs_pos_embed

    n = pos.shape[1] - num_prefix
    s = int(round(math.sqrt(n)))
    if s * s != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid; cannot resize")
    return resample_abs_pos_embed(pos, list(new_grid), old_size=[s, s], num_prefix_tokens=num_prefix,
                                  interpolation="bicubic", antialias=False)


def resize_temporal_embedding(temb: torch.Tensor, new_t: int) -> torch.Tensor:
    """``(1, t, d)`` -> ``(1, new_t, d)`` by linear interpolation along time."""
    x = temb.permute(0, 2, 1).float()
    x = F.interpolate(x, size=new_t, mode="linear", align_corners=False)
    return x.permute(0, 2, 1).to(temb.dtype).contiguous()


def filter_fn_for(model):
    """The ``checkpoint_filter_fn`` of the file that defines ``model``'s class (each architecture file in
    models/ has one: TimeSformer, ViViT, VideoMambaOut...); VideoMambaPro's for any other model."""
    import sys

    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        from .videomambapro import checkpoint_filter_fn as fn  # lazy: videomambapro imports this module
    return fn


def _depths(unexpected, own: dict, ckpt: dict) -> str:
    """' (the checkpoint has 32 blocks, the model 24: a depth mismatch)' when block keys are among the unexpected."""
    if not state_dict_depth(unexpected):
        return ""
    return f" (the checkpoint has {state_dict_depth(ckpt)} blocks, the model {state_dict_depth(own)}: a depth mismatch)"


def load_pretrained(model, path_or_state_dict, model_key: str = "model|module", orig_t_size=None,
                    expected_missing=None, trust_checkpoint: bool = False, log=print) -> dict:
    """Load weights into ``model`` following the contract above. Returns a report dict with keys
    ``source, model_key, prefixes_stripped, actions, head_dropped, missing, unexpected, loaded``.

    ``expected_missing``: extra keys the caller expects to stay missing (besides a dropped head).
    Raises RuntimeError if the missing-key set differs from the expected one, or on a shape mismatch
    that cannot be converted.
    """
    checkpoint_filter_fn = filter_fn_for(model)

    log = log or (lambda *a, **k: None)
    if isinstance(path_or_state_dict, dict):
        source, ckpt = "<state dict>", path_or_state_dict
    else:
        source = _resolve_path(path_or_state_dict)
        ckpt = load_checkpoint_file(source, trust_checkpoint=trust_checkpoint)
    state_dict, key_used = unwrap_state_dict(ckpt, model_key, log)
    report = {"source": source, "model_key": key_used, "actions": [], "head_dropped": False}
    own = model.state_dict()
    have, want = state_dict_width(strip_prefixes(state_dict)[0]), state_dict_width(own)
    if have is not None and want is not None and have != want:
        raise RuntimeError(f"checkpoint {source} is a model of width {have} (embedding dim), but "
                           f"{type(model).__name__} here has width {want}: another model size (e.g. Ti=192, S=384, "
                           f"M=576); pick the --model that matches the checkpoint")
    state_dict = checkpoint_filter_fn(state_dict, model, orig_t_size=orig_t_size, log=log, report=report)

    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise RuntimeError(f"checkpoint {source} does not fit the model (architecture mismatch?):\n  " + "\n  ".join(bad))
    result = model.load_state_dict(state_dict, strict=False)
    missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
    expected = set(expected_missing or ())
    if report["head_dropped"]:
        expected |= {k for k in own if k.startswith("head.")}
    report.update(missing=missing, unexpected=unexpected, loaded=len(state_dict) - len(unexpected))
    if unexpected:
        blocks = _depths(unexpected, own, state_dict)
        raise RuntimeError(
            f"loading {source}: {len(unexpected)} checkpoint keys have no place in the model{blocks}: "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}. Only the head and the keys the loading "
            f"contract converts may be dropped; pick the --model that matches the checkpoint")
    if set(missing) != expected:
        raise RuntimeError(
            f"loading {source}: missing keys {sorted(set(missing) - expected)} were not expected"
            + (f"; expected-missing keys {sorted(expected - set(missing))} were present" if expected - set(missing) else "")
            + " (pass expected_missing=... if this is intended)"
        )
    log(f"load checkpoint: loaded {report['loaded']} tensors from {source}; missing {missing or 'none'}")
    return report
