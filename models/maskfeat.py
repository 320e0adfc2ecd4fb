"""MaskFeat (Wei et al., 2022) masked-feature pretraining for VideoMambaPro / VideoMamba and TimeSformer.

The encoder sees ALL tokens; the patch embedding of each masked token is replaced by a learned ``mask_token``
(after the patch embedding, before the position embeddings are added, as pySlowFast's ``_maskfeat_forward``),
and a linear ``maskfeat_head`` (embed_dim -> D) on the final normalised tokens predicts the HOG
(``models.hog.HOGTarget``) of every masked patch; the loss is the mean squared error over the masked tokens.

    model = timm.create_model('videomambapro_test_maskfeat')
    pred = model(video, mask)                  # (B, M, D): predictions at the masked tokens, in token order
    loss = model.loss(pred, video, mask)       # mean MSE against the HOG of the masked patches

``mask``: bool ``(B, T'N)`` (frame-major patch tokens, cls excluded, True = masked), the same count M per clip
(``datasets.masking`` guarantees it). The classes subclass the encoders (``VideoMambaPro``, ``TimeSformer``)
without a classifier head (``num_classes=0``), so the state dict is the encoder's keys plus ``mask_token`` and
``maskfeat_head.*``: ``--finetune`` of such a checkpoint into ``videomambapro_*`` / ``timesformer_*`` drops those
two (named in the load report) and leaves the classifier head freshly initialised.
Registered: ``videomambapro_{tiny,small,middle,test,demo}_maskfeat``, ``videomamba_{...}_maskfeat``,
``timesformer_{tiny,small,base,test,demo}_maskfeat``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import timesformer as tsf
from . import videomambapro as vmp
from ._common import PRO_OPTIONS, VIDEOMAMBA_OPTIONS, _cfg, build_baseline, size_args, small_cfgs
from .checkpoint import video_filter_fn
from .hog import HOGTarget

__all__ = ["MaskFeatMixin", "VideoMambaProMaskFeat", "TimeSformerMaskFeat", "checkpoint_filter_fn"]

# layer id 0 of the layer-wise lr decay: the encoders' embeddings and the mask token
_STEM = r"^(?:cls_token|pos_embed|temporal_pos_embedding|patch_embed|mask_token)(?:\.|$)"


class MaskFeatMixin:
    """MaskFeat on an encoder with ``patch_embed`` (output ``(B, d, T', h, w)``), ``forward_features`` (normalised
    tokens, cls first) and ``tubelet_size``. ``_init_maskfeat`` adds ``mask_token``, ``maskfeat_head`` and the
    parameter-free ``hog`` target; the mask token enters through a forward hook on ``patch_embed`` (the encoder's
    embedding code is reused unchanged)."""

    def _init_maskfeat(self):
        d, p = self.embed_dim, self.patch_embed.patch_size[0]
        self.hog = HOGTarget(p, self.tubelet_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.maskfeat_head = nn.Linear(d, self.hog.feature_dim)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.maskfeat_head.weight, std=0.02)
        nn.init.zeros_(self.maskfeat_head.bias)
        self._embed_mask = None
        self.patch_embed.register_forward_hook(self._replace_masked)

    def _replace_masked(self, module, args, out):
        """Patch embedding ``(B, d, T', h, w)``: the masked tokens' embeddings become ``mask_token``."""
        mask = self._embed_mask
        if mask is None:
            return out
        B, d, T, h, w = out.shape
        m = mask.view(B, 1, T, h, w)
        return torch.where(m, self.mask_token.view(1, d, 1, 1, 1).to(out.dtype), out)

    def _check_mask(self, mask, x):
        mask = torch.as_tensor(mask, device=x.device).bool()
        L = (x.shape[2] // self.tubelet_size) * self.patch_embed.num_patches
        if mask.dim() != 2 or mask.shape != (x.shape[0], L):
            raise ValueError(f"mask must be bool (B, T'N) = {(x.shape[0], L)}, got {tuple(mask.shape)}")
        counts = mask.sum(1)
        if (counts != counts[0]).any():
            raise ValueError(f"every clip must mask the same number of tokens, got {counts.tolist()}")
        return mask

    def forward_masked_features(self, x, mask, checked=False):
        """Final normalised tokens ``(B, 1 + T'N, d)`` with the masked tokens' embeddings replaced."""
        self._embed_mask = mask if checked else self._check_mask(mask, x)
        try:
            return self.forward_features(x)
        finally:
            self._embed_mask = None

    def forward(self, x, mask):
        """``x (B, 3, T, H, W)``, ``mask (B, T'N)`` bool (tensor or array) -> HOG predictions ``(B, M, D)`` at the
        masked tokens, in token order."""
        mask = self._check_mask(mask, x)
        tokens = self.forward_masked_features(x, mask, checked=True)[:, 1:]
        B, _, d = tokens.shape
        return self.maskfeat_head(tokens[mask].reshape(B, -1, d))

    def target(self, video, mask):
        """The HOG of the masked patches ``(B, M, D)`` float32 (no gradient)."""
        mask = self._check_mask(mask, video)
        hog = self.hog(video)
        return hog[mask].reshape(hog.shape[0], -1, hog.shape[-1])

    def loss(self, pred, video, mask):
        """Mean squared error of ``pred (B, M, D)`` against the HOG target of the masked patches."""
        return F.mse_loss(pred.float(), self.target(video, mask))

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return dict(stem=_STEM, blocks=rf"^{self._blocks_name}\.(\d+)")

    def no_weight_decay(self):
        return super().no_weight_decay() | {"mask_token"}


class VideoMambaProMaskFeat(MaskFeatMixin, vmp.VideoMambaPro):
    """``VideoMambaPro`` (video, no head) + MaskFeat. Takes ``VideoMambaPro``'s kwargs."""

    _blocks_name = "layers"

    def __init__(self, num_classes=0, **kwargs):
        if kwargs.get("image"):
            raise ValueError("MaskFeat pretraining here is for video models (image=False)")
        super().__init__(num_classes=num_classes, **kwargs)
        self._init_maskfeat()


class TimeSformerMaskFeat(MaskFeatMixin, tsf.TimeSformer):
    """``TimeSformer`` (no head) + MaskFeat. Takes ``TimeSformer``'s kwargs."""

    _blocks_name = "blocks"

    def __init__(self, num_classes=0, **kwargs):
        super().__init__(num_classes=num_classes, **kwargs)
        self._init_maskfeat()


def checkpoint_filter_fn(state_dict, model, orig_t_size=None, log=print, report=None, inflate="center"):
    """Weights for a MaskFeat model: the encoder's own filter (TimeSformer's, else VideoMamba's)."""
    fn = tsf.checkpoint_filter_fn if isinstance(model, tsf.TimeSformer) else video_filter_fn
    return fn(state_dict, model, orig_t_size=orig_t_size, log=log, report=report, inflate=inflate)


_SIZES = {"videomambapro": ("tiny", "small", "middle"), "videomamba": ("tiny", "small", "middle"),
          "timesformer": ("tiny", "small", "base")}
default_cfgs = generate_default_cfgs({
    **{f"{a}_{s}_maskfeat": _cfg(num_classes=0) for a, sizes in _SIZES.items() for s in sizes},
    **{f"{k}_maskfeat": dict(v, num_classes=0) for k, v in small_cfgs(*_SIZES).items()},
})


def _create_mamba(variant, size, pretrained, options, **kwargs):
    model_args = {**PRO_OPTIONS, **options, **vmp._args(size)}
    for k, v in model_args.items():
        if kwargs.get(k) is None:
            kwargs[k] = v
    return build_model_with_cfg(VideoMambaProMaskFeat, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                **kwargs)


def _create_tsf(variant, size, pretrained, **kwargs):
    model_args = size_args(tsf.TIMESFORMER_SIZES, ("embed_dim", "depth", "num_heads"), size)
    return build_baseline(TimeSformerMaskFeat, variant, pretrained, model_args, checkpoint_filter_fn, **kwargs)


@register_model
def videomambapro_tiny_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomambapro_tiny_maskfeat", "tiny", pretrained, {}, **kwargs)


@register_model
def videomambapro_small_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomambapro_small_maskfeat", "small", pretrained, {}, **kwargs)


@register_model
def videomambapro_middle_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomambapro_middle_maskfeat", "middle", pretrained, {}, **kwargs)


@register_model
def videomambapro_test_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomambapro_test_maskfeat", "test", pretrained, {}, **kwargs)


@register_model
def videomambapro_demo_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomambapro_demo_maskfeat", "demo", pretrained, {}, **kwargs)


@register_model
def videomamba_tiny_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomamba_tiny_maskfeat", "tiny", pretrained, VIDEOMAMBA_OPTIONS, **kwargs)


@register_model
def videomamba_small_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomamba_small_maskfeat", "small", pretrained, VIDEOMAMBA_OPTIONS, **kwargs)


@register_model
def videomamba_middle_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomamba_middle_maskfeat", "middle", pretrained, VIDEOMAMBA_OPTIONS, **kwargs)


@register_model
def videomamba_test_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomamba_test_maskfeat", "test", pretrained, VIDEOMAMBA_OPTIONS, **kwargs)


@register_model
def videomamba_demo_maskfeat(pretrained=False, **kwargs):
    return _create_mamba("videomamba_demo_maskfeat", "demo", pretrained, VIDEOMAMBA_OPTIONS, **kwargs)


@register_model
def timesformer_tiny_maskfeat(pretrained=False, **kwargs):
    return _create_tsf("timesformer_tiny_maskfeat", "tiny", pretrained, **kwargs)


@register_model
def timesformer_small_maskfeat(pretrained=False, **kwargs):
    return _create_tsf("timesformer_small_maskfeat", "small", pretrained, **kwargs)


@register_model
def timesformer_base_maskfeat(pretrained=False, **kwargs):
    return _create_tsf("timesformer_base_maskfeat", "base", pretrained, **kwargs)


@register_model
def timesformer_test_maskfeat(pretrained=False, **kwargs):
    return _create_tsf("timesformer_test_maskfeat", "test", pretrained, **kwargs)


@register_model
def timesformer_demo_maskfeat(pretrained=False, **kwargs):
    return _create_tsf("timesformer_demo_maskfeat", "demo", pretrained, **kwargs)
