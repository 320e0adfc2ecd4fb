"""Mixup / CutMix for video clips and images, built on timm.data.Mixup.

A 5-D batch (B, C, T, H, W) is viewed as (B, C*T, H, W) so a CutMix box is shared by all frames, mixed by
timm, and viewed back. Targets are soft (B, num_classes) rows summing to 1 (label smoothing included).
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.data import Mixup


class VideoMixup:
    def __init__(self, mixup: Mixup):
        self.mixup = mixup

    def __getattr__(self, name):  # mixup_enabled, mixup_alpha, ... of the wrapped timm Mixup
        if name == "mixup":
            raise AttributeError(name)
        return getattr(self.mixup, name)

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        if len(x) % 2 != 0:
            raise ValueError(f"mixup/cutmix needs an even batch size, got {len(x)} (use drop_last=True for "
                             f"training loaders)")
        if x.dim() == 5:
            b, c, t, h, w = x.shape
            y = x.reshape(b, c * t, h, w)
            y, soft = self.mixup(y, target)
            return y.reshape(b, c, t, h, w), soft
        if x.dim() == 4:
            return self.mixup(x, target)
        raise ValueError(f"mixup expects (B, C, T, H, W) clips or (B, C, H, W) images, got shape {tuple(x.shape)}")


def build_mixup_fn(args, num_classes: int) -> Optional[VideoMixup]:
    """VideoMixup from args.mixup/cutmix/cutmix_minmax/mixup_prob/mixup_switch_prob/mixup_mode/smoothing, or
    None when mixup and cutmix are off (smoothing alone is then left to the engine's
    LabelSmoothingCrossEntropy; with all three 0, hard labels)."""
    mixup = float(getattr(args, "mixup", 0.8) or 0.0)
    cutmix = float(getattr(args, "cutmix", 1.0) or 0.0)
    minmax = getattr(args, "cutmix_minmax", None)
    if mixup <= 0 and cutmix <= 0 and minmax is None:
        return None
    return VideoMixup(Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, cutmix_minmax=minmax,
                            prob=float(getattr(args, "mixup_prob", 1.0)),
                            switch_prob=float(getattr(args, "mixup_switch_prob", 0.5)),
                            mode=getattr(args, "mixup_mode", "batch"),
                            label_smoothing=float(getattr(args, "smoothing", 0.1) or 0.0),
                            num_classes=num_classes))
