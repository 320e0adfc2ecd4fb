"""Checkpoint reading and the loading contract for VideoMambaPro / VideoMamba weights.

``load_checkpoint_file(path, trust_checkpoint=False) -> dict``: a file or DeepSpeed folder read through the
project's one safe reader (``utils.checkpoint_io.safe_load``), with clear errors for missing, truncated/corrupt
and code-carrying files.

``load_pretrained(model, path_or_state_dict, ...) -> report``: unwrap ``model``/``module``/``state_dict``
(DeepSpeed ``mp_rank_00_model_states.pt`` included), strip ``module.``/``backbone.``/``encoder.``/
``_orig_mod.`` prefixes, inflate an image (2-D) patch kernel for a video model, resize ``pos_embed``
(bicubic) and ``temporal_pos_embedding`` (linear), drop a mismatched head with a message, load, and
assert that the missing keys are exactly the expected ones (STYLE.md item 10).

The tensor surgery below is model-agnostic: ``prepare_state_dict`` (the one unwrapper of a filter) and
``video_surgery`` (patch kernel, embeddings, foreign and mismatched heads) serve every architecture file's
``checkpoint_filter_fn`` (timm's ``pretrained_filter_fn``); ``video_filter_fn`` is the two together, the filter
of VideoMamba / VideoMambaPro weights. This module imports no architecture file.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from utils.checkpoint_io import (
    DEEPSPEED_MODEL_FILE,
    CheckpointError,
    safe_load,
    state_dict_depth,
    state_dict_width,
)

__all__ = [
    "load_checkpoint_file", "load_pretrained", "unwrap_state_dict", "strip_prefixes", "inflate_patch_kernel",
    "resize_pos_embed", "resize_temporal_embedding", "filter_fn_for", "prepare_state_dict", "video_surgery",
    "video_filter_fn", "fill_from_model", "PREFIXES", "DEEPSPEED_MODEL_FILE",
]

PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")
# the wrapper entries a checkpoint filter unwraps (one level), in order
WRAPPER_KEYS = ("model", "module", "state_dict", "model_state")
# Heads of VideoMamba's training set-ups that the classifier does not have: dropped on load.
_FOREIGN_HEADS = {"distill_head": "the self-distillation head of VideoMamba's ImageNet student",
                  "clip_decoder": "the CLIP-alignment decoder of VideoMamba's masked pretraining"}

_FOREIGN_HEADS.update(mask_token="the mask token of MaskFeat pretraining (models/maskfeat.py)",
                      maskfeat_head="the HOG prediction head of MaskFeat pretraining (models/maskfeat.py)")


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


def _wrapper_key(ckpt: dict, keys):
    """The first of ``keys`` whose entry in ``ckpt`` is a dict (a wrapped state dict), else None."""
    return next((k for k in keys if k in ckpt and isinstance(ckpt[k], dict)), None)


def unwrap_state_dict(ckpt: dict, model_key: str = "model|module", log=print):
    """Return ``(state_dict, key_used)``: the first of ``model_key.split('|')`` (then ``state_dict``)
    holding a dict; a bare state dict (tensor values) is returned as is with key ``None``."""
    keys = [k for k in model_key.split("|") if k] + ["state_dict"]
    k = _wrapper_key(ckpt, keys)
    if k is not None:
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


def prepare_state_dict(state_dict, report, log=print, extra_prefixes=(), keys=WRAPPER_KEYS):
    """The first step of every ``checkpoint_filter_fn``: unwrap one level of ``keys`` (``model`` / ``module`` /
    ``state_dict`` / ``model_state``), strip the wrapper ``PREFIXES`` (and ``extra_prefixes`` when every key has one), keep only the
    ``student.*`` of a distillation wrapper. Returns ``(state_dict, note)``; ``note(msg)`` logs and appends
    ``msg`` to ``report['actions']`` (``report['prefixes_stripped']`` and ``report['head_dropped']`` are set)."""
    log = log or (lambda *a, **k: None)
    actions = report.setdefault("actions", [])
    report.setdefault("head_dropped", False)

    def note(msg):
        actions.append(msg)
        log("load checkpoint: " + msg)

    key = _wrapper_key(state_dict, keys)
    if key is not None:
        state_dict = state_dict[key]
        note(f"unwrapped '{key}'")
    state_dict, stripped = strip_prefixes(state_dict)
    extra = [p for p in extra_prefixes if state_dict and all(k.startswith(p) for k in state_dict)]
    for p in extra:
        state_dict = {k[len(p):]: v for k, v in state_dict.items()}
    stripped += extra
    report["prefixes_stripped"] = stripped
    if stripped:
        note(f"stripped prefixes {stripped}")
    if extra:  # what an extra prefix hid (``model.module.``) is stripped too, noted but not in the report's list
        state_dict, hidden = strip_prefixes(state_dict)
        if hidden:
            note(f"stripped prefixes {hidden}")
    if any(k.startswith("student.") for k in state_dict):
        state_dict = {k[len("student."):]: v for k, v in state_dict.items() if k.startswith("student.")}
        note("kept the student of a distillation checkpoint")
    return dict(state_dict), note


FINAL_NORMS = ("drop", "rename")  # what a classifier does with a masked-pretraining encoder's final 'norm.weight'


def video_surgery(state_dict, model, report, note, orig_t_size=None, log=print, inflate="center",
                  final_norm="drop"):
    """The shared steps of the filters on an unwrapped dict, for a model with the VideoMamba embedding layout
    (``patch_embed.proj``, ``pos_embed`` with one cls position, ``temporal_pos_embedding``, ``head``): inflate a
    2-D patch kernel (``inflate='center'`` as VideoMamba's ``inflate_weight``, or ``'average'``); drop VideoMamba's
    foreign heads (a masked-pretraining checkpoint's missing head keeps the model's initialisation, named in
    ``report['initialised']``); rename the pretraining encoder's ``norm``; resize ``pos_embed`` (bicubic) and
    ``temporal_pos_embedding`` (linear); zero-fill a missing temporal embedding (image checkpoint); drop a head
    whose shape does not fit (``report['head_dropped']``)."""
    log = log or (lambda *a, **k: None)
    own = model.state_dict()
    out = dict(state_dict)

    w = out.get("patch_embed.proj.weight")
    if w is not None and "patch_embed.proj.weight" in own:
        target = own["patch_embed.proj.weight"]
        if w.dim() == 4 and target.dim() == 5:
            out["patch_embed.proj.weight"] = inflate_patch_kernel(w, target.shape[2], inflate)
            note(f"inflated 2-D patch kernel {tuple(w.shape)} -> {tuple(target.shape)} ({inflate})")
        elif w.dim() == 5 and target.dim() == 5 and w.shape[2] != target.shape[2] and w.shape[2] == 1:
            out["patch_embed.proj.weight"] = inflate_patch_kernel(w[:, :, 0], target.shape[2], inflate)
            note(f"inflated tubelet-1 patch kernel to tubelet {target.shape[2]} ({inflate})")
        elif w.dim() == 5 and target.dim() == 4 and w.shape[2] == 1:
            out["patch_embed.proj.weight"] = w[:, :, 0]
            note("squeezed a tubelet-1 video patch kernel for the image model")

    dropped = sorted({k.split(".")[0] for k in out if k.split(".")[0] in _FOREIGN_HEADS and k not in own})
    for prefix in dropped:
        for k in [k for k in out if k.split(".")[0] == prefix]:
            del out[k]
            report.setdefault("dropped", []).append(k)
        note(f"dropped {prefix}.* ({_FOREIGN_HEADS[prefix]})")
    if dropped and not any(k.startswith("head.") for k in out):  # a pretraining checkpoint: no classifier head
        fill_from_model(out, model, lambda k: k.startswith("head."), "the classifier head (a pretraining checkpoint "
                        "has none)", report, note)
    if "norm.weight" in out and "norm.weight" not in own and "norm_f.weight" in own and "norm_f.weight" not in out:
        # VideoMamba's masked-pretraining encoder names its final norm 'norm'; upstream's fine-tuning loads it
        # non-strictly into a model whose final norm is 'norm_f', so the weight is dropped and norm_f starts fresh
        if final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {final_norm!r}")
        if final_norm == "rename":
            out["norm_f.weight"] = out.pop("norm.weight")
            note("renamed the pretraining encoder's final norm.weight -> norm_f.weight (--finetune_final_norm rename)")
        else:
            del out["norm.weight"]
            report.setdefault("dropped", []).append("norm.weight")
            fill_from_model(out, model, lambda k: k == "norm_f.weight", "norm_f.weight (the pretraining encoder's "
                            "final norm.weight is dropped, as VideoMamba's fine-tuning does; --finetune_final_norm "
                            "rename loads it instead)", report, note)

    pos = out.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape and pos.shape[-1] == own["pos_embed"].shape[-1]:
        out["pos_embed"] = resample_abs_pos_embed(pos, list(model.patch_embed.grid_size), num_prefix_tokens=1,
                                                  interpolation="bicubic", antialias=False)
        note(f"resized pos_embed {tuple(pos.shape)} -> {tuple(out['pos_embed'].shape)} (bicubic)")

    temb = out.get("temporal_pos_embedding")
    if "temporal_pos_embedding" in own:
        t_new = own["temporal_pos_embedding"].shape[1]
        if temb is None:
            out["temporal_pos_embedding"] = torch.zeros_like(own["temporal_pos_embedding"])
            note("no temporal_pos_embedding in the checkpoint (image weights): initialised to zeros")
        else:
            if orig_t_size is not None and temb.shape[1] not in (orig_t_size, orig_t_size // model.tubelet_size):
                log(f"load checkpoint: warning: orig_t_size={orig_t_size} but the checkpoint's temporal embedding "
                    f"has {temb.shape[1]} positions; using the checkpoint's")
            if temb.shape[1] != t_new and temb.shape[-1] == own["temporal_pos_embedding"].shape[-1]:
                out["temporal_pos_embedding"] = resize_temporal_embedding(temb, t_new)
                note(f"resized temporal_pos_embedding {temb.shape[1]} -> {t_new} (linear)")
    elif temb is not None:
        del out["temporal_pos_embedding"]
        note("dropped temporal_pos_embedding (image model)")

    head_keys = [k for k in out if k.startswith("head.")]
    if head_keys and any(k not in own or out[k].shape != own[k].shape for k in head_keys):
        shapes = {k: tuple(out[k].shape) for k in head_keys}
        for k in head_keys:
            del out[k]
        report["head_dropped"] = True
        note(f"dropped the checkpoint's head {shapes}: it does not fit the model's "
             f"{model.num_classes} classes (the head stays freshly initialised)")
    return out


def video_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center", final_norm="drop"):
    """A VideoMamba / VideoMambaPro state dict (any known wrapping) for ``model``: ``prepare_state_dict`` then
    ``video_surgery``; actions are logged and appended to ``report['actions']``."""
    report = report if report is not None else {}
    state_dict, note = prepare_state_dict(state_dict, report, log)
    return video_surgery(state_dict, model, report, note, orig_t_size=orig_t_size, log=log, inflate=inflate,
                         final_norm=final_norm)


def fill_from_model(out, model, predicate, what, report, note):
    """Keys of ``model`` selected by ``predicate`` and absent from ``out`` keep the model's own initialisation
    (recorded in ``report['initialised']``): the named keys an image checkpoint cannot provide. Any other
    missing key stays missing, so ``load_pretrained``'s missing-key check still catches it."""
    own = model.state_dict()
    keys = sorted(k for k in own if predicate(k) and k not in out)
    for k in keys:
        out[k] = own[k].detach().clone()
    if keys:
        report.setdefault("initialised", []).extend(keys)
        note(f"not in the checkpoint, kept the model's initialisation: {what} ({len(keys)} tensors)")
    return keys


def filter_fn_for(model):
    """The ``checkpoint_filter_fn`` of the file that defines ``model``'s class (each architecture file in
    models/ has one: TimeSformer, ViViT, VideoMambaOut...); ``video_filter_fn`` (VideoMamba's) for any other."""
    import sys

    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None) or video_filter_fn


def _depths(unexpected, own: dict, ckpt: dict) -> str:
    """' (the checkpoint has 32 blocks, the model 24: a depth mismatch)' when block keys are among the unexpected."""
    if not state_dict_depth(unexpected):
        return ""
    return f" (the checkpoint has {state_dict_depth(ckpt)} blocks, the model {state_dict_depth(own)}: a depth mismatch)"


def load_pretrained(model, path_or_state_dict, model_key: str = "model|module", orig_t_size=None,
                    expected_missing=None, trust_checkpoint: bool = False, log=print, final_norm=None) -> dict:
    """Load weights into ``model`` following the contract above. Returns a report dict with keys
    ``source, model_key, prefixes_stripped, actions, head_dropped, missing, unexpected, loaded``.

    ``expected_missing``: extra keys the caller expects to stay missing (besides a dropped head).
    ``final_norm``: ``FINAL_NORMS``, what a classifier does with a masked-pretraining encoder's ``norm.weight``
    (default: the filter's own, ``drop`` = VideoMamba's fine-tuning); passed to filters that take it.
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
    extra = {}
    if final_norm is not None:
        import inspect

        if final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {final_norm!r}")
        if "final_norm" in inspect.signature(checkpoint_filter_fn).parameters:
            extra["final_norm"] = final_norm
    state_dict = checkpoint_filter_fn(state_dict, model, orig_t_size=orig_t_size, log=log, report=report, **extra)

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
