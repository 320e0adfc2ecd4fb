"""Optimizer parameter groups: no weight decay for 1-D/bias/embedding params, layer-wise lr decay.

Layer ids (``layer_decay_mode='block'``): cls_token / pos_embed / temporal_pos_embedding / patch_embed -> 0;
``layers.{i}`` -> i + 1; everything else (norm_f, head, ...) -> num_layers + 1. Group lr scale =
decay ** (num_layers + 1 - id). A model with timm's ``group_matcher`` (every model in models/) gets its ids from
it through ``timm.models.group_parameters`` (the grouping ``timm.optim.param_groups_layer_decay`` uses, so both
give the same scales); ``get_layer_id`` (the same rule on names, wrapper prefixes allowed) serves any other model.

``layer_decay_mode='videomamba'`` reproduces what VideoMamba's video fine-tuning effectively does: its per-block
branch is commented out upstream, so only ``patch_embed.*``, ``cls_token``, ``pos_embed`` (and ``mask_token``)
get id 0 (scale decay ** (num_layers + 1)) and every other parameter, blocks and ``temporal_pos_embedding``
included, trains at the full lr.

``decay_ssm=True`` gives ``A_log`` / ``A_b_log`` weight decay as upstream does (its grouping only skips 1-D
params, biases and the model's ``no_weight_decay`` names, and ``A_log`` is 2-D); ``D`` stays 1-D, undecayed.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
from timm.models import group_parameters

NO_WD_NAMES = ("pos_embed", "cls_token", "temporal_pos_embedding")
_EMBED_PREFIXES = ("cls_token", "pos_embed", "temporal_pos_embedding", "patch_embed", "dist_token", "mask_token")
_EMBED_RE = re.compile(r"(?:^|\.)(?:" + "|".join(_EMBED_PREFIXES) + r")(?:\.|$)")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)\.")
LAYER_DECAY_MODES = ("block", "videomamba")
_UPSTREAM_EMBED_RE = re.compile(r"^(?:cls_token|mask_token|pos_embed)$|^patch_embed\.")
SSM_DECAY_NAMES = ("A_log", "A_b_log")


def get_layer_id(name: str, num_layers: int, mode: str = "block") -> int:
    if mode == "videomamba":
        return 0 if _UPSTREAM_EMBED_RE.search(name) else num_layers + 1
    if mode != "block":
        raise ValueError(f"layer decay mode must be one of {LAYER_DECAY_MODES}, got {mode!r}")
    if _EMBED_RE.search(name):
        return 0
    m = _LAYER_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def layer_ids(model: nn.Module, num_layers: int, mode: str = "block") -> dict:
    """``{parameter name: layer id}``: from the model's ``group_matcher`` (timm's ordinal grouping: stem 0, block
    i at i + 1, the rest last) when it has one and ``num_layers`` is its own count, else ``get_layer_id``; the
    ``videomamba`` mode is always our own rule (VideoMamba's quirk, see the module docstring)."""
    names = [n for n, _ in model.named_parameters()]
    matcher = getattr(model, "group_matcher", None)
    own = getattr(model, "get_num_layers", None)
    if mode == "block" and callable(matcher) and callable(own) and own() == num_layers:
        return group_parameters(model, matcher(coarse=False), reverse=True)
    return {n: get_layer_id(n, num_layers, mode) for n in names}


def _model_no_weight_decay(model: nn.Module) -> set:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def skip_weight_decay(name: str, param: torch.Tensor, skip_list: set, decay_ssm: bool = False) -> bool:
    base = name.split(".")[-1]
    if decay_ssm and base in SSM_DECAY_NAMES and param.ndim > 1:
        return False
    return (param.ndim <= 1 or name.endswith(".bias") or base in NO_WD_NAMES or name in skip_list
            or base in skip_list or bool(getattr(param, "_no_weight_decay", False)))


def param_groups_layer_decay(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                             num_layers: int | None = None, skip_list=(), mode: str = "block",
                             decay_ssm: bool = False) -> list[dict]:
    """Groups keyed by (layer id, decay/no-decay), each with ``lr_scale`` and ``weight_decay``.

    Every group also carries ``param_names`` (for tests and logs; strip before handing to DeepSpeed
    if it objects). ``layer_decay`` = 1 gives two groups' worth of behaviour (all scales 1).
    """
    if num_layers is None:
        fn = getattr(model, "get_num_layers", None)
        num_layers = fn() if callable(fn) else len(getattr(model, "layers", []))
    skip = set(skip_list) | _model_no_weight_decay(model)
    if decay_ssm:
        skip = {n for n in skip if n.split(".")[-1] not in SSM_DECAY_NAMES}
    ids = layer_ids(model, num_layers, mode) if layer_decay < 1.0 else {}
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = skip_weight_decay(name, p, skip, decay_ssm)
        lid = ids[name] if layer_decay < 1.0 else 0
        scale = layer_decay ** (num_layers + 1 - lid) if layer_decay < 1.0 else 1.0
        key = f"layer_{lid}_{'no_decay' if no_wd else 'decay'}"
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_scale": scale, "layer_id": lid, "group_name": key}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def param_groups_from_args(model: nn.Module, args, num_layers: int | None = None) -> list[dict]:
    """``param_groups_layer_decay`` with every grouping flag read from ``args`` (``weight_decay``, ``layer_decay``,
    ``layer_decay_mode``, ``weight_decay_ssm``); the one call the training driver makes."""
    return param_groups_layer_decay(model, args.weight_decay, getattr(args, "layer_decay", 1.0) or 1.0, num_layers,
                                    mode=getattr(args, "layer_decay_mode", None) or "block",
                                    decay_ssm=bool(getattr(args, "weight_decay_ssm", False)))


def create_optimizer(args, model: nn.Module, param_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over layer-decayed groups; every optimizer flag is honoured or rejected."""
    if param_groups is None:
        param_groups = param_groups_from_args(model, args)
    groups = [{k: v for k, v in g.items() if k != "param_names"} for g in param_groups]
    opt = args.opt.lower()
    kw = {"lr": args.lr}
    if opt in ("adamw", "adam"):
        if args.opt_eps is not None:
            kw["eps"] = args.opt_eps
        if args.opt_betas is not None:
            kw["betas"] = tuple(args.opt_betas)
        cls = torch.optim.AdamW if opt == "adamw" else torch.optim.Adam
        return cls(groups, weight_decay=args.weight_decay, **kw)
    if opt in ("sgd", "momentum"):
        return torch.optim.SGD(groups, momentum=args.momentum, nesterov=True, weight_decay=args.weight_decay, **kw)
    raise ValueError(f"--opt {args.opt!r} is not supported here; choose adamw, adam or sgd")
