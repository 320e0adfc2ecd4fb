"""VideoMambaOut: the isotropic VideoMamba network with its Mamba mixer replaced by MambaOut's gated CNN block
(Yu & Wang, "MambaOut: Do We Really Need Mamba for Vision?", 2024), timm-registered baseline.

Layout (timm style): ``GatedCNNBlock`` -> ``VideoMambaOut`` -> ``checkpoint_filter_fn`` -> ``_cfg`` /
``default_cfgs`` -> ``_create_videomambaout`` -> ``@register_model`` entries ``videomambaout_{tiny,small,middle}``
(VideoMamba Ti / S / M widths and depths: d = 192 / 384 / 576, 24 / 24 / 32 blocks), ``*_image`` variants for
ImageNet pre-training, and ``videomambaout_{test,demo}``. "VideoMambaPro vs the same network without any
SSM" is ``--model videomambapro_tiny`` vs ``--model videomambaout_tiny`` on the same data.

Same embedding as VideoMamba (``Conv3d`` patches, spatial ``pos_embed`` + per-frame ``temporal_pos_embedding``,
tokens frame-major), then ``depth`` blocks of

    x = x + fc2( GELU(g) * [i, dwconv(c)] ),   [g, i, c] = fc1( LayerNorm(x) )

with hidden width ``8/3 d`` (MambaOut's expansion) and the depthwise convolution over the ``(T', h, w)``
token grid (3 x 7 x 7; 7 x 7 for images) on the ``c`` channels (all ``d`` of them, MambaOut's conv_ratio 1),
then LayerNorm. A convolution cannot carry a cls token (it has no place in the grid and would never see the
other tokens), so there is none: the head reads the mean of the tokens, as MambaOut's does.

2-D -> 3-D: an image checkpoint (``videomambaout_*_image``, e.g. from run_pretrain_imagenet.py) loads into the
video model with its 7 x 7 depthwise kernels inflated to 3 x 7 x 7 (``inflate='center'``: the 2-D kernel in
the middle frame, so at initialisation each frame sees the image network), the patch kernel likewise. timm's
MambaOut ImageNet weights are hierarchical (4 stages with downsampling) and do not map onto this isotropic
network, so there is no pretrained tag.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model

from ._common import MODEL_SIZES, BaselineMixin, PatchEmbed, _cfg, build_baseline, linear_dpr, size_args, small_cfgs
from .checkpoint import inflate_patch_kernel, prepare_state_dict, resize_pos_embed, video_surgery

__all__ = ["VideoMambaOut", "GatedCNNBlock", "checkpoint_filter_fn", "MAMBAOUT_SIZES"]

# name -> (embed_dim, depth): VideoMamba's
MAMBAOUT_SIZES = dict(MODEL_SIZES)


def _triple(v, image):
    if image:
        return tuple(v[-2:]) if isinstance(v, (tuple, list)) else (int(v), int(v))
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v), int(v))


class GatedCNNBlock(nn.Module):
    """MambaOut's gated CNN block on a token sequence ``(B, L, d)`` laid out on ``grid`` (``(T', h, w)``, or
    ``(h, w)`` for images); the depthwise convolution runs on that grid with zero padding."""

    def __init__(self, dim, expansion_ratio=8 / 3, kernel_size=(3, 7, 7), conv_ratio=1.0, drop_path=0.0,
                 norm_eps=1e-6, image=False):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.act = nn.GELU()
        k = _triple(kernel_size, image)
        conv = nn.Conv2d if image else nn.Conv3d
        self.conv = conv(conv_channels, conv_channels, k, padding=tuple(s // 2 for s in k), groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.image = image

    def forward(self, x, grid):
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        # channels-first and contiguous for the convolution: cuDNN's depthwise 3-D kernels on the channels-last
        # view of ``c`` ran 6x slower (bf16, 64 frames, H200)
        if self.image:
            c = rearrange(c, "b (h w) c -> b c h w", h=grid[0]).contiguous()
            c = rearrange(self.conv(c), "b c h w -> b (h w) c")
        else:
            c = rearrange(c, "b (t h w) c -> b c t h w", t=grid[0], h=grid[1]).contiguous()
            c = rearrange(self.conv(c), "b c t h w -> b (t h w) c")
        return x + self.drop_path(self.fc2(self.act(g) * torch.cat([i, c], dim=-1)))


class VideoMambaOut(BaselineMixin, nn.Module):
    """VideoMamba's layout with gated CNN blocks. Video ``(B, 3, T, H, W)``, or ``(B, 3, H, W)`` with ``image``.

    ``use_checkpoint``: activation checkpointing of the first ``checkpoint_num`` blocks (all when <= 0)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=400, embed_dim=192, depth=24,
                 num_frames=16, tubelet_size=1, image=False, expansion_ratio=8 / 3, kernel_size=(3, 7, 7),
                 conv_ratio=1.0, drop_path_rate=0.0, fc_drop_rate=0.0, use_checkpoint=False, checkpoint_num=0,
                 norm_eps=1e-6, scan_backend=None):
        super().__init__()
        if not image and num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not a multiple of tubelet_size={tubelet_size}")
        self._init_interface(num_classes, embed_dim, use_checkpoint, checkpoint_num, scan_backend)
        self.depth = depth
        self.image, self.num_frames, self.tubelet_size = image, (1 if image else num_frames), tubelet_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, tubelet_size, image)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        if not image:
            self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames // tubelet_size, embed_dim))
        dpr = linear_dpr(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            GatedCNNBlock(embed_dim, expansion_ratio, kernel_size, conv_ratio, dpr[i], norm_eps, image)
            for i in range(depth)
        ])
        self._init_head(embed_dim, num_classes, fc_drop_rate, norm_eps)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_linear_norm)

    def no_weight_decay(self):
        return {"pos_embed", "temporal_pos_embedding"}

    def embed(self, x):
        """Tokens ``(B, T'hw, d)`` frame-major (``(B, hw, d)`` for images) and their grid."""
        x = self.patch_embed(x)
        if self.image:
            grid = tuple(x.shape[2:])
            return rearrange(x, "b d h w -> b (h w) d") + self.pos_embed, grid
        self._check_frames(x.shape[2])
        grid = tuple(x.shape[2:])
        x = rearrange(x, "b d t h w -> b t (h w) d") + self.pos_embed[:, None] + self.temporal_pos_embedding[:, :, None]
        return x.flatten(1, 2), grid

    def forward_features(self, x):
        """Normalised tokens ``(B, L, d)`` (no cls token)."""
        x, grid = self.embed(x)
        return self.norm(self._run_blocks(self.blocks, x, extra=(grid,)))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.head_drop(x.mean(dim=1))
        return x if pre_logits else self.head(x)


def checkpoint_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center"):
    """VideoMambaOut weights (video or image) for ``model``: unwrap / strip prefixes, resize ``pos_embed``
    (bicubic, no cls position), inflate 2-D depthwise kernels to 3-D (``inflate``: 'center' or 'average'),
    then the shared surgery (patch kernel, temporal embedding zero-filled from an image checkpoint or resized,
    a head of the wrong size dropped)."""
    report = report if report is not None else {}
    state_dict, note = prepare_state_dict(state_dict, report, log)
    own = model.state_dict()
    pos = state_dict.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape and pos.shape[-1] == own["pos_embed"].shape[-1]:
        state_dict["pos_embed"] = resize_pos_embed(pos, model.patch_embed.grid_size, num_prefix=0)
        note(f"resized pos_embed {tuple(pos.shape)} -> {tuple(own['pos_embed'].shape)} (bicubic)")
    inflated = squeezed = 0
    for k, w in list(state_dict.items()):
        if not (k.startswith("blocks.") and k.endswith(".conv.weight")) or k not in own:
            continue
        target = own[k]
        if w.dim() == 4 and target.dim() == 5:
            state_dict[k] = inflate_patch_kernel(w, target.shape[2], inflate)
            inflated += 1
        elif w.dim() == 5 and target.dim() == 4:
            state_dict[k] = w[:, :, w.shape[2] // 2]
            squeezed += 1
    if inflated:
        note(f"inflated {inflated} 2-D depthwise kernels to 3-D ({inflate})")
    if squeezed:
        note(f"took the centre frame of {squeezed} 3-D depthwise kernels for the image model")
    return video_surgery(state_dict, model, report, note, orig_t_size=orig_t_size, log=log, inflate=inflate)


default_cfgs = generate_default_cfgs({
    **{f"videomambaout_{s}": _cfg() for s in ("tiny", "small", "middle")},
    **{f"videomambaout_{s}_image": _cfg(num_classes=1000) for s in ("tiny", "small", "middle")},
    **small_cfgs("videomambaout"),
    "videomambaout_test_image": _cfg(num_classes=10, input_size=(3, 32, 32)),
})


def _create_videomambaout(variant, pretrained=False, model_args=None, **kwargs):
    return build_baseline(VideoMambaOut, variant, pretrained, model_args, checkpoint_filter_fn, **kwargs)


def _args(size, **kw):
    return size_args(MAMBAOUT_SIZES, ("embed_dim", "depth"), size, **kw)


@register_model
def videomambaout_tiny(pretrained=False, **kwargs):
    model_args = _args("tiny")
    return _create_videomambaout("videomambaout_tiny", pretrained, model_args, **kwargs)


@register_model
def videomambaout_small(pretrained=False, **kwargs):
    model_args = _args("small")
    return _create_videomambaout("videomambaout_small", pretrained, model_args, **kwargs)


@register_model
def videomambaout_middle(pretrained=False, **kwargs):
    model_args = _args("middle")
    return _create_videomambaout("videomambaout_middle", pretrained, model_args, **kwargs)


@register_model
def videomambaout_tiny_image(pretrained=False, **kwargs):
    model_args = _args("tiny", image=True)
    return _create_videomambaout("videomambaout_tiny_image", pretrained, model_args, **kwargs)


@register_model
def videomambaout_small_image(pretrained=False, **kwargs):
    model_args = _args("small", image=True)
    return _create_videomambaout("videomambaout_small_image", pretrained, model_args, **kwargs)


@register_model
def videomambaout_middle_image(pretrained=False, **kwargs):
    model_args = _args("middle", image=True)
    return _create_videomambaout("videomambaout_middle_image", pretrained, model_args, **kwargs)


@register_model
def videomambaout_demo(pretrained=False, **kwargs):
    model_args = _args("demo")
    return _create_videomambaout("videomambaout_demo", pretrained, model_args, **kwargs)


@register_model
def videomambaout_test(pretrained=False, **kwargs):
    model_args = _args("test")
    return _create_videomambaout("videomambaout_test", pretrained, model_args, **kwargs)


@register_model
def videomambaout_test_image(pretrained=False, **kwargs):
    model_args = _args("test", image=True)
    return _create_videomambaout("videomambaout_test_image", pretrained, model_args, **kwargs)
