"""ViViT, factorised encoder (Arnab et al., 2021, "Model 2"), timm-registered baseline.

Layout (timm style): ``ViViT`` -> ``checkpoint_filter_fn`` -> ``_cfg`` / ``default_cfgs`` -> ``_create_vivit`` ->
``@register_model`` entries ``vivit_{tiny,small,base}`` (d = 192 / 384 / 768, heads 3 / 6 / 12, a 12-layer
spatial and a 4-layer temporal transformer: the paper's ViViT-B FE), plus ``vivit_{test,demo}``.

A clip ``(B, 3, T, H, W)`` is cut into tubelets (``Conv3d``, ``tubelet_size`` x 16 x 16; the paper's FE uses
2 x 16 x 16, the default here is 2). Each temporal index is one "frame" for the spatial transformer: its N
tokens after a cls token, plus ``pos_embed`` (ViT's), through the spatial blocks and ``spatial_norm``; its cls
output is the frame's token. The T' frame tokens, after a ``temporal_cls_token`` and plus
``temporal_pos_embed``, go through the temporal blocks and ``norm``; the head reads the temporal cls token.

Both stacks are one ``ModuleList`` ``blocks`` (spatial ``blocks.0 .. depth-1``, temporal ``blocks.depth ..``),
timm's ViT ``Block``: so a ViT checkpoint's ``blocks.{i}`` are the spatial blocks with no renaming, and
layer-wise lr decay (``get_num_layers() = depth + temporal_depth``) numbers the temporal blocks above the
spatial ones. ImageNet initialisation as in the paper's code: the spatial transformer, ``pos_embed`` and
the patch kernel (2-D -> 3-D, central frame) from the ViT; the temporal transformer from scratch.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import Block

from ._common import VIT_WEIGHTS, BaselineMixin, PatchEmbed, _cfg, build_baseline, linear_dpr, size_args, small_cfgs
from .checkpoint import fill_from_model, prepare_state_dict, resize_temporal_embedding, video_surgery

__all__ = ["ViViT", "checkpoint_filter_fn", "VIVIT_SIZES"]

# name -> (embed_dim, spatial depth, temporal depth, num_heads)
VIVIT_SIZES = {"test": (32, 2, 1, 2), "demo": (96, 4, 2, 3), "tiny": (192, 12, 4, 3), "small": (384, 12, 4, 6),
               "base": (768, 12, 4, 12)}


class ViViT(BaselineMixin, nn.Module):
    """ViViT factorised encoder. Input ``(B, 3, T, H, W)``, ``T = num_frames`` (a multiple of ``tubelet_size``).

    ``use_checkpoint``: activation checkpointing of the first ``checkpoint_num`` blocks of the flat numbering
    (spatial, then temporal; all when <= 0)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=400, embed_dim=768, depth=12,
                 temporal_depth=4, num_heads=12, mlp_ratio=4.0, qkv_bias=True, num_frames=32, tubelet_size=2,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, fc_drop_rate=0.0, use_checkpoint=False,
                 checkpoint_num=0, norm_eps=1e-6, scan_backend=None):
        super().__init__()
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not a multiple of tubelet_size={tubelet_size}")
        self._init_interface(num_classes, embed_dim, use_checkpoint, checkpoint_num, scan_backend)
        self.depth, self.temporal_depth = depth, temporal_depth
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, tubelet_size)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.temporal_cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.temporal_pos_embed = nn.Parameter(torch.zeros(1, num_frames // tubelet_size, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        total = depth + temporal_depth
        dpr = linear_dpr(drop_path_rate, total)
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate, attn_drop=attn_drop_rate,
                  drop_path=dpr[i], norm_layer=norm)
            for i in range(total)
        ])
        self.spatial_norm = norm(embed_dim)
        self._init_head(embed_dim, num_classes, fc_drop_rate, norm_eps)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        for p in (self.pos_embed, self.cls_token, self.temporal_pos_embed, self.temporal_cls_token):
            trunc_normal_(p, std=0.02)
        self.apply(self._init_linear_norm)

    @property
    def spatial_blocks(self):
        return self.blocks[:self.depth]

    @property
    def temporal_blocks(self):
        return self.blocks[self.depth:]

    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "temporal_pos_embed", "temporal_cls_token"}

    def forward_spatial(self, x):
        """Per-frame tokens ``(B, T', d)``: the spatial transformer's cls output for every temporal index."""
        x = self.patch_embed(x)
        B, _, T = x.shape[:3]
        self._check_frames(T)
        x = rearrange(x, "b d t h w -> (b t) (h w) d")
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1).to(x.dtype)
        x = self.pos_drop(torch.cat([cls, x + self.pos_embed[:, 1:]], dim=1))
        x = self._run_blocks(self.spatial_blocks, x)
        return rearrange(self.spatial_norm(x)[:, 0], "(b t) d -> b t d", b=B)

    def forward_features(self, x):
        """Normalised temporal tokens ``(B, 1 + T', d)`` (token 0 is the temporal cls token)."""
        x = self.forward_spatial(x)
        cls = self.temporal_cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = self.pos_drop(torch.cat([cls, x + self.temporal_pos_embed], dim=1))
        x = self._run_blocks(self.temporal_blocks, x, offset=self.depth)
        return self.norm(x)


def checkpoint_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center"):
    """ViViT weights, or a timm ViT image checkpoint, for ``model``.

    From a ViT (no ``temporal_cls_token``): its ``norm`` is the spatial transformer's ``spatial_norm``, its
    ``blocks.{i}`` the spatial blocks; the temporal transformer (``blocks.{depth..}``, ``temporal_cls_token``,
    ``temporal_pos_embed``, the final ``norm``) keeps the model's initialisation, named in
    ``report['initialised']``; a ViT with more blocks than ``depth`` is an error. The 2-D patch kernel is
    inflated (``inflate='center'``: the paper's central-frame initialisation), ``pos_embed`` resized, a head
    of the wrong size dropped (the shared VideoMamba surgery); ``temporal_pos_embed`` is resized linearly
    for another frame count.
    """
    report = report if report is not None else {}
    state_dict, note = prepare_state_dict(state_dict, report, log)
    is_image = "temporal_cls_token" not in state_dict and any(k.startswith("blocks.") for k in state_dict)
    if is_image:
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
        if n_blocks > model.depth:
            raise RuntimeError(f"the image checkpoint has {n_blocks} blocks, the spatial transformer {model.depth}")
        for k in [k for k in state_dict if k.startswith("norm.")]:
            state_dict["spatial_" + k] = state_dict.pop(k)
        note(f"image checkpoint: its {n_blocks} blocks and norm are the spatial transformer")
    temb = state_dict.get("temporal_pos_embed")
    t_new = model.temporal_pos_embed.shape[1]
    if temb is not None and temb.shape[1] != t_new:
        state_dict["temporal_pos_embed"] = resize_temporal_embedding(temb, t_new)
        note(f"resized temporal_pos_embed {temb.shape[1]} -> {t_new} (linear)")
    out = video_surgery(state_dict, model, report, note, orig_t_size=orig_t_size, log=log, inflate=inflate)
    if is_image:
        temporal = tuple(f"blocks.{i}." for i in range(model.depth, len(model.blocks)))
        fill_from_model(out, model, lambda k: k.startswith(temporal) or k.startswith("norm.")
                        or k in ("temporal_cls_token", "temporal_pos_embed"),
                        "the temporal transformer (trained from scratch, as in the paper)", report, note)
    return out


# Pretrained tags (the default tag of each size): timm's ImageNet-21k -> 1k ViT weights for the spatial
# transformer (the paper's ViViT-B starts from ViT-B/16 ImageNet-21k); see timesformer.py.
default_cfgs = generate_default_cfgs({
    **{f"vivit_{s}.augreg_in21k_ft_in1k": _cfg(hf_hub_id=f"timm/{v}.augreg_in21k_ft_in1k", num_classes=1000)
       for s, v in VIT_WEIGHTS.items()},
    **small_cfgs("vivit"),
})


def _create_vivit(variant, pretrained=False, model_args=None, **kwargs):
    return build_baseline(ViViT, variant, pretrained, model_args, checkpoint_filter_fn, **kwargs)


def _args(size):
    return size_args(VIVIT_SIZES, ("embed_dim", "depth", "temporal_depth", "num_heads"), size)


@register_model
def vivit_tiny(pretrained=False, **kwargs):
    model_args = _args("tiny")
    return _create_vivit("vivit_tiny", pretrained, model_args, **kwargs)


@register_model
def vivit_small(pretrained=False, **kwargs):
    model_args = _args("small")
    return _create_vivit("vivit_small", pretrained, model_args, **kwargs)


@register_model
def vivit_base(pretrained=False, **kwargs):
    model_args = _args("base")
    return _create_vivit("vivit_base", pretrained, model_args, **kwargs)


@register_model
def vivit_demo(pretrained=False, **kwargs):
    model_args = _args("demo")
    return _create_vivit("vivit_demo", pretrained, model_args, **kwargs)


@register_model
def vivit_test(pretrained=False, **kwargs):
    model_args = _args("test")
    return _create_vivit("vivit_test", pretrained, model_args, **kwargs)
