"""TimeSformer with divided space-time attention (Bertasius et al., 2021), timm-registered baseline.

Layout (timm style): ``DividedSpaceTimeBlock`` -> ``TimeSformer`` -> ``checkpoint_filter_fn`` -> ``_cfg`` /
``default_cfgs`` -> ``_create_timesformer`` -> ``@register_model`` entries ``timesformer_{tiny,small,base}``
(d = 192 / 384 / 768, 12 blocks, 3 / 6 / 12 heads; ViT-Ti/S/B widths), plus ``timesformer_{test,demo}``.

A clip ``(B, 3, T, H, W)`` is cut into per-frame 16x16 patches (``Conv3d`` with tubelet 1 by default, so a
ViT's 2-D kernel loads as is), one cls token; a spatial position embedding ``pos_embed`` (ViT's, shared by
the frames) and a temporal one ``temporal_pos_embedding`` (per frame). Each block, on the patch tokens
kept as ``(B, T', N, d)``:

    x_t = x + temporal_fc(attn over the T' frames at each patch location (temporal_norm1(x)))
    y   = attn over [cls, the N patches of each frame] (norm1([cls, x_t]))     # cls copied per frame
    x   = [cls, x_t] + [mean over frames of y's cls, y's patches]
    x   = x + mlp(norm2(x))

then a LayerNorm and a linear head on the cls token. With ImageNet ViT weights, as in the paper's code,
the temporal attention and its norm start as copies of the block's spatial ones, ``temporal_fc`` and the
temporal embedding start at zero, so at initialisation the network is the image ViT applied to every frame
(cls token averaged over frames). ``temporal_fc`` is zero in every block (the original leaves the first
block's random, which breaks that identity).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import Attention  # timm.layers.Attention in timm >= 1.0.16, re-exported here

from ._common import VIT_WEIGHTS, BaselineMixin, PatchEmbed, _cfg, build_baseline, linear_dpr, size_args, small_cfgs
from .checkpoint import fill_from_model, prepare_state_dict, video_surgery

__all__ = ["TimeSformer", "DividedSpaceTimeBlock", "checkpoint_filter_fn", "TIMESFORMER_SIZES"]

# name -> (embed_dim, depth, num_heads)
TIMESFORMER_SIZES = {"test": (32, 2, 2), "demo": (96, 6, 3), "tiny": (192, 12, 3), "small": (384, 12, 6),
                     "base": (768, 12, 12)}


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention (per patch location) -> spatial attention (per frame, with the cls token) -> MLP.

    ``forward(cls, x)``: ``cls (B, 1, d)``, ``x (B, T, N, d)`` patch tokens; returns the same two."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, attn_drop=0.0, proj_drop=0.0,
                 norm_eps=1e-6):
        super().__init__()
        self.temporal_norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, cls, x):
        B, T, N, _ = x.shape
        # temporal attention: the T frames at each of the N patch locations
        xt = rearrange(x, "b t n d -> (b n) t d")
        xt = self.temporal_fc(self.temporal_attn(self.temporal_norm1(xt)))
        x = x + rearrange(self.drop_path(xt), "(b n) t d -> b t n d", b=B)
        # spatial attention within each frame, the cls token copied into every frame
        xs = torch.cat([cls.unsqueeze(1).expand(B, T, 1, -1), x], dim=2)
        xs = self.attn(self.norm1(rearrange(xs, "b t n d -> (b t) n d")))
        xs = rearrange(xs, "(b t) n d -> b t n d", b=B)
        cls = cls + self.drop_path(xs[:, :, :1].mean(dim=1))
        x = x + self.drop_path(xs[:, :, 1:])
        # MLP on every token
        cls = cls + self.drop_path(self.mlp(self.norm2(cls)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return cls, x


class TimeSformer(BaselineMixin, nn.Module):
    """TimeSformer (divided space-time attention). Input ``(B, 3, T, H, W)``, ``T = num_frames``.

    ``use_checkpoint``: activation checkpointing of the first ``checkpoint_num`` blocks (all when <= 0).
    ``tubelet_size`` > 1 patches ``tubelet`` frames together (the paper uses 1)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=400, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, num_frames=8, tubelet_size=1, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, fc_drop_rate=0.0, use_checkpoint=False, checkpoint_num=0,
                 norm_eps=1e-6, scan_backend=None):
        super().__init__()
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not a multiple of tubelet_size={tubelet_size}")
        self._init_interface(num_classes, embed_dim, use_checkpoint, checkpoint_num, scan_backend)
        self.depth = depth
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, tubelet_size)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames // tubelet_size, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        dpr = linear_dpr(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            DividedSpaceTimeBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], attn_drop_rate, drop_rate, norm_eps)
            for i in range(depth)
        ])
        self._init_head(embed_dim, num_classes, fc_drop_rate, norm_eps)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_linear_norm)
        for blk in self.blocks:  # the temporal branch starts as a no-op (see the module docstring)
            nn.init.zeros_(blk.temporal_fc.weight)
            nn.init.zeros_(blk.temporal_fc.bias)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "temporal_pos_embedding"}

    def embed(self, x):
        """Patch tokens ``(B, T', N, d)`` with both position embeddings, and the cls token ``(B, 1, d)``."""
        x = self.patch_embed(x)
        B, _, T = x.shape[:3]
        self._check_frames(T)
        x = rearrange(x, "b d t h w -> b t (h w) d")
        x = x + self.pos_embed[:, None, 1:] + self.temporal_pos_embedding[:, :, None]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1).to(x.dtype)
        return self.pos_drop(cls), self.pos_drop(x)

    def forward_features(self, x):
        """Normalised tokens ``(B, 1 + T'N, d)``: the cls token, then the patches frame-major."""
        cls, x = self._run_blocks(self.blocks, self.embed(x))
        return self.norm(torch.cat([cls, rearrange(x, "b t n d -> b (t n) d")], dim=1))


def checkpoint_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center"):
    """TimeSformer weights, or a timm / original ViT image checkpoint, for ``model``.

    Our own and the original TimeSformer's key names (``time_embed`` -> ``temporal_pos_embedding``, ``model.``
    prefix) load directly. From a ViT (no ``temporal_attn`` keys) each block's ``temporal_attn`` /
    ``temporal_norm1`` are copied from its ``attn`` / ``norm1`` (the paper's initialisation) and the keys an
    image model cannot have — ``temporal_fc`` (zero) and ``temporal_pos_embedding`` (zero) — keep the
    model's initialisation; they are named in ``report['initialised']``. Everything else (patch kernel
    inflation, ``pos_embed`` / temporal resizing, a head of the wrong size) is the shared VideoMamba surgery.
    """
    report = report if report is not None else {}
    state_dict, note = prepare_state_dict(state_dict, report, log, extra_prefixes=("model.",))
    if "time_embed" in state_dict and "temporal_pos_embedding" not in state_dict:  # facebookresearch/TimeSformer
        state_dict["temporal_pos_embedding"] = state_dict.pop("time_embed")
        note("renamed time_embed -> temporal_pos_embedding")
    is_image = not any(".temporal_attn." in k for k in state_dict) and any(k.startswith("blocks.") for k in state_dict)
    if is_image:
        copied = 0
        for k in list(state_dict):
            if k.startswith("blocks.") and (".attn." in k or ".norm1." in k):
                new = k.replace(".attn.", ".temporal_attn.").replace(".norm1.", ".temporal_norm1.")
                state_dict[new] = state_dict[k].clone()
                copied += 1
        note(f"image checkpoint: temporal attention / norm of every block copied from its spatial ones ({copied} "
             "tensors)")
    out = video_surgery(state_dict, model, report, note, orig_t_size=orig_t_size, log=log, inflate=inflate)
    if is_image:
        fill_from_model(out, model, lambda k: ".temporal_fc." in k, "temporal_fc (zero: the temporal branch starts "
                        "as a no-op)", report, note)
    return out


# Pretrained tags (the default tag of each size): timm's ImageNet-21k -> 1k ViT weights, inflated by
# checkpoint_filter_fn (the paper initialises from ViT-B/16 ImageNet-21k).
# ``timm.create_model('timesformer_base', pretrained=True, num_classes=400)`` downloads them from the Hugging
# Face Hub; without num_classes the head is the ViT's 1000-way one. (Those weights were trained with mean =
# std = 0.5; the data pipeline normalises with ImageNet's mean / std, as for every model here.)
default_cfgs = generate_default_cfgs({
    **{f"timesformer_{s}.augreg_in21k_ft_in1k": _cfg(hf_hub_id=f"timm/{v}.augreg_in21k_ft_in1k", num_classes=1000)
       for s, v in VIT_WEIGHTS.items()},
    **small_cfgs("timesformer"),
})


def _create_timesformer(variant, pretrained=False, model_args=None, **kwargs):
    return build_baseline(TimeSformer, variant, pretrained, model_args, checkpoint_filter_fn, **kwargs)


def _args(size):
    return size_args(TIMESFORMER_SIZES, ("embed_dim", "depth", "num_heads"), size)


@register_model
def timesformer_tiny(pretrained=False, **kwargs):
    model_args = _args("tiny")
    return _create_timesformer("timesformer_tiny", pretrained, model_args, **kwargs)


@register_model
def timesformer_small(pretrained=False, **kwargs):
    model_args = _args("small")
    return _create_timesformer("timesformer_small", pretrained, model_args, **kwargs)


@register_model
def timesformer_base(pretrained=False, **kwargs):
    model_args = _args("base")
    return _create_timesformer("timesformer_base", pretrained, model_args, **kwargs)


@register_model
def timesformer_demo(pretrained=False, **kwargs):
    model_args = _args("demo")
    return _create_timesformer("timesformer_demo", pretrained, model_args, **kwargs)


@register_model
def timesformer_test(pretrained=False, **kwargs):
    model_args = _args("test")
    return _create_timesformer("timesformer_test", pretrained, model_args, **kwargs)
