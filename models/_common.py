"""What the architecture files of models/ share (timm's ``_features`` / ``_manipulate`` role, for this package):
the option and size tables, the patch embedding, the pretrained-cfg template, the block loop with activation
checkpointing, the create-kwargs helpers, and the training-engine interface of the baselines (TimeSformer, ViViT,
VideoMambaOut). It imports no architecture file, so each of them (videomambapro.py included) can import it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.utils.checkpoint as torch_checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg

from mamba.ops.backend import validate_backend

__all__ = ["PRO_OPTIONS", "VIDEOMAMBA_OPTIONS", "PRO_ONLY_OPTIONS", "MODEL_SIZES", "SMALL_INPUT", "VIT_WEIGHTS",
           "PatchEmbed", "ClassifierMixin", "BaselineMixin", "run_blocks", "embed_group_matcher", "small_input_defaults",
           "with_defaults", "reject_pro_options", "size_args", "build_baseline", "small_cfgs", "linear_dpr"]

# The VideoMambaPro options (METHOD.md section 3) and their defaults: THE table of their names
# (``models.videomambapro.PRO_OPTIONS`` re-exports it). ``videomamba_*`` is the same network with both changes off.
PRO_OPTIONS = dict(bwd_mask=True, residual_start="both", mask_drops_D=False, gate=True, divide_out=False)
VIDEOMAMBA_OPTIONS = dict(PRO_OPTIONS, bwd_mask=False, residual_start="none")
# Options of videomambapro_* / videomamba_* only (init_mode: VideoMamba's from-scratch initialisation of the SSM,
# --init); run_class_finetuning passes them only when given; a model without an SSM rejects them.
PRO_ONLY_OPTIONS = (*PRO_OPTIONS, "d_state", "d_conv", "expand", "init_mode")

# VideoMamba's sizes, name -> (embed_dim, depth) (VideoMambaOut uses the same)
MODEL_SIZES = {"test": (32, 2), "demo": (96, 6), "tiny": (192, 24), "small": (384, 24), "middle": (576, 32)}
# (img_size, num_frames) defaults of the small CPU variants; timm's PretrainedCfg has no frame count field.
SMALL_INPUT = {"test": (32, 4), "demo": (64, 8)}
# timm's ImageNet-21k -> 1k ViT weights per size: the pretrained tags of the ViT-based baselines
VIT_WEIGHTS = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}

# the embedding parameters (layer id 0 of the layer-wise lr decay, timm's ``stem`` group)
_STEM = r"^(?:cls_token|pos_embed|temporal_pos_embedding|patch_embed)(?:\.|$)"


def _cfg(url="", **kwargs):
    """The pretrained cfg of every model here (400 classes, 224, ImageNet mean / std) with ``kwargs`` on top."""
    return {
        "url": url, "num_classes": 400, "input_size": (3, 224, 224), "pool_size": None,
        "crop_pct": 1.0, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "apache-2.0", **kwargs,
    }


def small_cfgs(*archs) -> dict:
    """The pretrained cfgs of the small CPU variants ``{arch}_test`` / ``{arch}_demo`` (4 classes, SMALL_INPUT's size)."""
    return {f"{a}_{s}": _cfg(num_classes=4, input_size=(3, img, img)) for a in archs for s, (img, _) in SMALL_INPUT.items()}


def linear_dpr(rate: float, n: int) -> list:
    """Stochastic depth of ``n`` blocks: linear from 0 to ``rate``."""
    return [rate * i / max(n - 1, 1) for i in range(n)]


def small_input_defaults(size=None):
    """``{size: (img, frames)}`` of the CPU variants, or the create-kwargs defaults of one size (empty for others)."""
    if size is None:
        return dict(SMALL_INPUT)
    if size in SMALL_INPUT:
        img, frames = SMALL_INPUT[size]
        return {"img_size": img, "num_frames": frames}
    return {}


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


def embed_group_matcher(blocks: str = "blocks"):
    """timm's ``group_matcher`` dict: the embeddings (``stem``), then block ``{blocks}.{i}`` in order; everything
    else (final norm, head, the extra tokens of a second stack) is the last group, as timm maps unmatched names."""
    return dict(stem=_STEM, blocks=rf"^{blocks}\.(\d+)")


class PatchEmbed(nn.Module):
    """Non-overlapping patches: ``Conv3d`` with kernel = stride = (tubelet, p, p) for video,
    ``Conv2d`` (p, p) for images. Returns ``(B, d, T', h, w)`` or ``(B, d, h, w)``."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=192, tubelet_size=1, image=False):
        super().__init__()
        self.img_size, self.patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.tubelet_size, self.image = tubelet_size, image
        if image:
            self.proj = nn.Conv2d(in_chans, embed_dim, self.patch_size, stride=self.patch_size)
        else:
            k = (tubelet_size, *self.patch_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, k, stride=k)

    def forward(self, x):
        want = 4 if self.image else 5
        if x.dim() != want:
            kind = "(B, C, H, W) images" if self.image else "(B, C, T, H, W) clips"
            raise ValueError(f"expected {kind}, got a tensor of shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's img_size {self.img_size}")
        return self.proj(x)


def run_blocks(model, blocks, state, offset=0, extra=()):
    """Apply ``blocks`` to ``state`` (a tensor or a tuple of tensors; a block returns the same kind): the one
    block loop of every model here.

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


class ClassifierMixin:
    """timm's classifier interface on a cls-token model (every model here; VideoMambaOut pools instead):
    ``forward_features`` (the subclass's) -> ``forward_head(x, pre_logits=False)``, plus the engines' hooks."""

    head: nn.Module

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


class BaselineMixin(ClassifierMixin):
    """timm / training-engine interface of the baselines (the same methods as ``VideoMambaPro``)."""

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

    def _init_interface(self, num_classes, embed_dim, use_checkpoint, checkpoint_num, scan_backend):
        """The attributes the engines read; ``scan_backend`` is validated and kept though a baseline has no scan
        (every model takes the kwarg)."""
        self.num_classes, self.embed_dim, self.num_features = num_classes, embed_dim, embed_dim
        self.use_checkpoint, self.checkpoint_num = use_checkpoint, checkpoint_num
        self.scan_backend = validate_backend(scan_backend)

    def _init_head(self, embed_dim, num_classes, fc_drop_rate, norm_eps):
        """The final LayerNorm ``norm``, the head dropout and the linear ``head`` (registered in this order)."""
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(fc_drop_rate) if fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return embed_group_matcher("blocks")

    def _run_blocks(self, blocks, state, offset=0, extra=()):
        return run_blocks(self, blocks, state, offset, extra)

    def get_num_layers(self):
        return len(self.blocks)


def size_args(table: dict, fields: tuple, size: str, **kw) -> dict:
    """The ``model_args`` of one size of a size table (``fields`` name its columns), plus the small variants'
    input size and frames, plus ``kw``."""
    return dict(zip(fields, table[size]), **small_input_defaults(size), **kw)


def build_baseline(cls, variant, pretrained, model_args, filter_fn, **kwargs):
    """``build_model_with_cfg`` for a model without an SSM: the VideoMambaPro options are rejected, each of
    ``model_args`` fills a kwarg that is missing or None, an image model takes no frame count."""
    reject_pro_options(variant, kwargs)
    kwargs = with_defaults(kwargs, model_args)
    if model_args.get("image"):
        kwargs.pop("num_frames", None)
    return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=filter_fn, **kwargs)
