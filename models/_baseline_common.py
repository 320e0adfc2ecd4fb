"""What the baseline video models (TimeSformer, ViViT, VideoMambaOut) share: the training-engine interface
(``get_num_layers``, grad checkpointing, classifier reset, cls-token head), the block loop with activation
checkpointing, and the first and last steps of their ``checkpoint_filter_fn``s (unwrapping, then the shared
VideoMamba surgery, then filling the keys an image checkpoint cannot have from the model's own init)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.utils.checkpoint as torch_checkpoint
from timm.layers import trunc_normal_

from .checkpoint import strip_prefixes

# Options of videomambapro_* / videomamba_* only (init_mode: VideoMamba's from-scratch initialisation of the SSM,
# --init); run_class_finetuning passes them only when given.
PRO_ONLY_OPTIONS = ("bwd_mask", "residual_start", "mask_drops_D", "gate", "divide_out", "d_state", "d_conv", "expand",
                    "init_mode")

# (img_size, num_frames) of the CPU variants, as videomambapro's ``_SMALL_INPUT``
_SMALL_INPUT = {"test": (32, 4), "demo": (64, 8)}


def small_input_defaults(size=None):
    """``{size: (img, frames)}`` of the CPU variants, or the create-kwargs defaults of one size (empty for others)."""
    if size is None:
        return dict(_SMALL_INPUT)
    if size in _SMALL_INPUT:
        img, frames = _SMALL_INPUT[size]
        return {"img_size": img, "num_frames": frames}
    return {}


# timm's ImageNet-21k -> 1k ViT weights per size: the pretrained tags of the ViT-based baselines
VIT_WEIGHTS = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}


def with_defaults(kwargs: dict, defaults: dict) -> dict:
    """create-model kwargs: each of ``defaults`` fills a kwarg that is missing or None; Nones are then dropped."""
    merged = {**kwargs, **{k: v for k, v in defaults.items() if kwargs.get(k) is None}}
    return {k: v for k, v in merged.items() if v is not None}


def reject_pro_options(variant, kwargs):
    """A VideoMambaPro flag given to a model without an SSM is an error, not silently dropped."""
    bad = sorted(k for k in PRO_ONLY_OPTIONS if kwargs.get(k) is not None)
    if bad:
        raise ValueError(f"{variant} has no selective scan: the VideoMambaPro options {bad} apply to "
                         "videomambapro_* / videomamba_* only")


def run_blocks(model, blocks, state, offset=0, extra=()):
    """Apply ``blocks`` to ``state`` (a tensor or a tuple of tensors; a block returns the same kind).

    Activation checkpointing (``model.use_checkpoint``) of the first ``model.checkpoint_num`` blocks of the
    model's flat block numbering (all blocks when ``checkpoint_num <= 0``, so the flag is never a silent
    no-op); ``offset`` is the flat index of ``blocks[0]``; ``extra`` are non-tensor arguments of every call."""
    n_ckpt = model.get_num_layers() if model.checkpoint_num <= 0 else model.checkpoint_num
    single = torch.is_tensor(state)
    for i, blk in enumerate(blocks):
        args = ((state,) if single else tuple(state)) + tuple(extra)
        if model.use_checkpoint and offset + i < n_ckpt and torch.is_grad_enabled():
            state = torch_checkpoint.checkpoint(blk, *args, use_reentrant=False)
        else:
            state = blk(*args)
    return state


class BaselineMixin:
    """timm / training-engine interface of the baselines (the same methods as ``VideoMambaPro``)."""

    head: nn.Module

    @staticmethod
    @torch.no_grad()
    def _init_linear_norm(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _check_frames(self, t):
        want = self.num_frames // self.tubelet_size
        if t != want:
            raise ValueError(f"clip has {t * self.tubelet_size} frames; the model was built for "
                             f"num_frames={self.num_frames} (tubelet {self.tubelet_size})")

    def get_num_layers(self):
        return len(self.blocks)

    def set_grad_checkpointing(self, enable=True):
        self.use_checkpoint = enable

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def prepare_state_dict(state_dict, report, log=print, extra_prefixes=()):
    """Unwrap ``model``/``module``/``state_dict``/``model_state``, strip wrapper prefixes (and ``extra_prefixes``
    when every key has one). Returns ``(state_dict, note)``; ``note(msg)`` logs and records an action."""
    log = log or (lambda *a, **k: None)
    actions = report.setdefault("actions", [])
    report.setdefault("head_dropped", False)

    def note(msg):
        actions.append(msg)
        log("load checkpoint: " + msg)

    for key in ("model", "module", "state_dict", "model_state"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            note(f"unwrapped '{key}'")
            break
    state_dict, stripped = strip_prefixes(state_dict)
    for p in extra_prefixes:
        if state_dict and all(k.startswith(p) for k in state_dict):
            state_dict = {k[len(p):]: v for k, v in state_dict.items()}
            stripped.append(p)
    report["prefixes_stripped"] = stripped
    if stripped:
        note(f"stripped prefixes {stripped}")
    if any(k.startswith("student.") for k in state_dict):
        state_dict = {k[len("student."):]: v for k, v in state_dict.items() if k.startswith("student.")}
        note("kept the student of a distillation checkpoint")
    return dict(state_dict), note


def shared_surgery(filter_fn, state_dict, model, report, **kw):
    """The VideoMamba filter's generic steps (patch kernel inflation, ``pos_embed`` / temporal resizing, head
    drop) on an already unwrapped dict, keeping ``report['prefixes_stripped']`` from the unwrapping."""
    stripped = report.get("prefixes_stripped", [])
    out = filter_fn(state_dict, model, report=report, **kw)
    report["prefixes_stripped"] = stripped
    return out


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
